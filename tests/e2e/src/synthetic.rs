//! Synthetic traffic for the bench: agent-shaped [`Batch`]es built with the protocol crate (the
//! same event shape the agent stores for a canonical JSON count scan, and a status with every
//! batch, as the agent sends it), an mTLS HTTPS client holding a site's certificate, and the
//! per-process CPU time from `/proc` that the relay-fleet figure divides by.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scanbridge_protocol::{
    AgentStatus, Batch, Event, EventBody, Operation, Scan, Source, SourceHealth, SourceKind,
    Symbology,
};

use crate::error::{HarnessError, Result};
use crate::relay::SiteBundle;

/// One count event as the agent stores it for `{"code":..,"device":"SC-01","op":"count",..}`.
pub fn count_event(seq: u64, code: &str, location: &str, qty: f64, now_us: i64) -> Event {
    Event {
        seq,
        captured_at: now_us,
        received_at: now_us,
        source: Source::Mqtt {
            broker: "site".into(),
            topic: "scanbridge/SC-01/scan".into(),
        },
        device: "SC-01".into(),
        body: EventBody::Scan(Scan {
            code: code.to_string(),
            symbology: Symbology::Ean13,
            gs1: None,
            op: Some(Operation::Count),
            qty: Some(qty),
            location: Some(location.to_string()),
            reference: None,
        }),
    }
}

/// A status like the agent's (one MQTT source, a backlog of `backlog` events).
pub fn agent_status(backlog: u64, now_us: i64) -> AgentStatus {
    AgentStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        backlog_events: backlog,
        backlog_bytes: backlog * 120,
        oldest_pending_age_ms: Some(1_000),
        disk_used_bytes: backlog * 160,
        disk_cap_bytes: 1 << 30,
        quarantine_count: 0,
        ingest_paused: false,
        sources: vec![SourceHealth {
            name: "site".into(),
            kind: SourceKind::Mqtt,
            up: true,
            detail: "connected".into(),
        }],
        cert_not_after: Some(now_us + 365 * 86_400 * 1_000_000),
        clock: now_us,
    }
}

/// `count` enveloped batches of `per_batch` events for `site`, seqs from `first_seq` on, each
/// carrying a status; the codes cycle through `codes`.
pub fn encoded_batches(
    site: &str,
    first_seq: u64,
    count: usize,
    per_batch: usize,
    codes: &[String],
) -> Result<Vec<Vec<u8>>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000;
    let total = (count * per_batch) as u64;
    let mut out = Vec::with_capacity(count);
    for b in 0..count {
        let start = first_seq + (b * per_batch) as u64;
        let events = (0..per_batch as u64)
            .map(|i| {
                let seq = start + i;
                let code = &codes[(seq as usize) % codes.len().max(1)];
                let loc = format!("WH-STOCK-A{:02}", seq % 5 + 1);
                count_event(seq, code, &loc, (seq / 1000 + 1) as f64, now)
            })
            .collect();
        let batch = Batch {
            site: site.to_string(),
            agent: format!("gw-{}", site.to_lowercase()),
            first_seq: start,
            events,
            status: Some(agent_status(total - (start - first_seq), now)),
        };
        out.push(
            scanbridge_protocol::encode(&batch)
                .map_err(|e| HarnessError::Setup(format!("encode a synthetic batch: {e}")))?,
        );
    }
    Ok(out)
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| HarnessError::io("read", path, e))
}

/// An HTTPS client presenting `bundle`'s site certificate (TLS 1.3, trusting the bundle's CA),
/// as the agent's forwarder is built.
pub fn site_client(bundle: &SiteBundle) -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read_pem(&bundle.ca_cert())?.as_slice()) {
        let cert = cert.map_err(|e| HarnessError::Tls(format!("bundle CA: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| HarnessError::Tls(format!("bundle CA: {e}")))?;
    }
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read_pem(&bundle.cert())?.as_slice())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| HarnessError::Tls(format!("site certificate: {e}")))?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut read_pem(&bundle.key())?.as_slice())
            .map_err(|e| HarnessError::Tls(format!("site key: {e}")))?
            .ok_or_else(|| HarnessError::Tls("no private key in site.key".into()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HarnessError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| HarnessError::Tls(format!("site certificate and key: {e}")))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .https_only(true)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|source| HarnessError::Http {
            url: "(site client)".into(),
            source,
        })
}

/// CPU time (user + system) of process `pid` so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / 100.0)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks (USER_HZ = 100
/// on Linux). The command name in parentheses may hold spaces, so fields count from its `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let stat = "4242 (scan bridge) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_seconds(std::process::id() as i32).is_some());
    }

    #[test]
    fn synthetic_batches_decode_with_contiguous_seqs_and_a_status() {
        let codes = vec!["4006381333931".to_string()];
        let bodies = encoded_batches("WH01", 11, 3, 4, &codes).expect("encode");
        assert_eq!(bodies.len(), 3);
        let mut next = 11;
        for body in &bodies {
            let b: Batch = scanbridge_protocol::decode(body).expect("decode");
            assert_eq!(b.site, "WH01");
            assert_eq!(b.first_seq, next);
            assert!(b.status.is_some());
            for e in &b.events {
                assert_eq!(e.seq, next);
                next += 1;
            }
        }
        assert_eq!(next, 23);
    }
}
