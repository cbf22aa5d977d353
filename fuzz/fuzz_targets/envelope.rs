//! Fuzzes the wire decoder the relay runs on every request body (and the agent on every answer).
//!
//! Two shapes of input per run: the bytes as they are (an attacker's body: bad magic, lengths,
//! CRCs), and the bytes as a payload inside a well-formed envelope with the right CRC, so the
//! fuzzer reaches the postcard decoding of `Batch`, `Ack` and `AgentStatus` behind the checksum.
//! Whatever decodes must encode again, and decode from those bytes to a message that encodes to
//! the very same bytes (compared as bytes: a NaN quantity is a legal f64 on the wire and is not
//! equal to itself; the relay's mapping refuses non-finite quantities).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanbridge_protocol::envelope::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use scanbridge_protocol::{decode, encode, Ack, AgentStatus, Batch, Kind, Message};

fn wrap(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn round_trip<M: Message>(bytes: &[u8]) {
    if let Ok(msg) = decode::<M>(bytes) {
        let again = encode(&msg).expect("a decoded message encodes");
        let back: M = decode(&again).expect("an encoded message decodes");
        assert_eq!(encode(&back).expect("encodes"), again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Batch>(data);
    round_trip::<Ack>(data);
    round_trip::<AgentStatus>(data);
    round_trip::<Batch>(&wrap(Kind::Batch, data));
    round_trip::<Ack>(&wrap(Kind::Ack, data));
    round_trip::<AgentStatus>(&wrap(Kind::Status, data));
});
