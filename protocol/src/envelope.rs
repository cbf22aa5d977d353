//! The versioned envelope around every postcard message on the wire.
//!
//! Layout (all integers little-endian), 16 header bytes then the payload:
//!
//! | offset | size | field                                              |
//! |--------|------|----------------------------------------------------|
//! | 0      | 4    | magic `SBRG`                                       |
//! | 4      | 2    | format version ([`FORMAT_VERSION`])                |
//! | 6      | 1    | message kind ([`Kind`])                            |
//! | 7      | 1    | reserved, must be 0                                |
//! | 8      | 4    | payload length in bytes                            |
//! | 12     | 4    | CRC-32C (Castagnoli) of the payload                |
//! | 16     | n    | postcard payload                                   |
//!
//! Decoding never panics: every malformed input is a [`DecodeError`] naming what was wrong.

use serde::{de::DeserializeOwned, Serialize};

use crate::model::{Ack, AgentStatus, Batch};

/// The four magic bytes at the start of every message.
pub const MAGIC: [u8; 4] = *b"SBRG";
/// The wire format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the envelope header.
pub const HEADER_LEN: usize = 16;
/// Largest payload accepted by [`decode`] (16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Which message a payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Batch = 1,
    Ack = 2,
    Status = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Batch),
            2 => Some(Kind::Ack),
            3 => Some(Kind::Status),
            _ => None,
        }
    }
}

/// A wire type that can travel in an envelope.
pub trait Message: Serialize + DeserializeOwned {
    const KIND: Kind;
}

impl Message for Batch {
    const KIND: Kind = Kind::Batch;
}
impl Message for Ack {
    const KIND: Kind = Kind::Ack;
}
impl Message for AgentStatus {
    const KIND: Kind = Kind::Status;
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message too short: {0} bytes, the envelope header alone is 16")]
    TooShort(usize),
    #[error("not a Scanbridge message (bad magic bytes)")]
    BadMagic,
    #[error("unsupported wire format version {found} (this build speaks version {supported}); upgrade the older side")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("unexpected message kind {found} (expected {expected:?})")]
    WrongKind { found: u8, expected: Kind },
    #[error("reserved header byte is {0}, expected 0")]
    Reserved(u8),
    #[error("declared payload length {declared} exceeds the limit of {limit} bytes")]
    TooLarge { declared: usize, limit: usize },
    #[error("declared payload length {declared} but {actual} bytes follow the header")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("checksum mismatch: payload corrupted in transit (crc32c {computed:#010x}, header says {declared:#010x})")]
    Checksum { declared: u32, computed: u32 },
    #[error("payload does not decode as {kind:?}: {detail}")]
    Payload { kind: Kind, detail: String },
    #[error("{0} trailing bytes after the {1:?} payload")]
    Trailing(usize, Kind),
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("postcard serialisation failed: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("encoded payload of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes")]
    TooLarge(usize),
}

/// Encodes `msg` into an enveloped byte vector.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, EncodeError> {
    let payload = postcard::to_allocvec(msg)?;
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(EncodeError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(M::KIND as u8);
    out.push(0);
    // Cannot truncate: payload.len() <= MAX_MESSAGE_BYTES < u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes an enveloped message of type `M`, checking every header field and the checksum.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    let payload = open::<M>(bytes)?;
    match postcard::take_from_bytes::<M>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(DecodeError::Trailing(rest.len(), M::KIND)),
        Err(e) => Err(DecodeError::Payload {
            kind: M::KIND,
            detail: e.to_string(),
        }),
    }
}

/// Checks the envelope header and returns the payload slice.
fn open<M: Message>(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::TooShort(bytes.len()))?;
    if header[0..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    match Kind::from_byte(header[6]) {
        Some(k) if k == M::KIND => {}
        _ => {
            return Err(DecodeError::WrongKind {
                found: header[6],
                expected: M::KIND,
            })
        }
    }
    if header[7] != 0 {
        return Err(DecodeError::Reserved(header[7]));
    }
    let declared = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if declared > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            declared,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != declared {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: payload.len(),
        });
    }
    let declared_crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    let computed = crc32c::crc32c(payload);
    if computed != declared_crc {
        return Err(DecodeError::Checksum {
            declared: declared_crc,
            computed,
        });
    }
    Ok(payload)
}
