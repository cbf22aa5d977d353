//! Unit tests of configuration validation: every mistake names its dotted key and its line.

use std::path::Path;

use super::*;

/// A temp dir holding a site bundle (self-signed, good enough for parsing) and an agent.toml.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::create_dir(dir.path().join("site")).expect("mkdir");
        std::fs::write(dir.path().join("site/ca.pem"), ck.cert.pem()).expect("write");
        std::fs::write(dir.path().join("site/site.pem"), ck.cert.pem()).expect("write");
        std::fs::write(
            dir.path().join("site/site.key"),
            ck.key_pair.serialize_pem(),
        )
        .expect("write");
        Fixture { dir }
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write config");
        load(&path)
    }
}

const GOOD: &str = r#"site = "WH01"
agent_id = "gw-wh01"
state_dir = "state"

[store]
max_bytes = 2097152
commit_linger_ms = 5
commit_max_events = 100

[relay]
url = "https://127.0.0.1:8443"
ca_cert = "site/ca.pem"
client_cert = "site/site.pem"
client_key = "site/site.key"
heartbeat_secs = 5

[[mqtt]]
name = "site"
host = "127.0.0.1"
port = 1883
client_id = "scanbridge-agent-WH01"
topics = ["scanbridge/+/scan"]

[[stations]]
device = "SC-01"
op = "count"
location = "WH-STOCK-A01"
"#;

fn invalid(e: ConfigError) -> (String, usize, String) {
    let msg = e.to_string();
    (e.key().to_string(), e.line(), msg)
}

#[test]
fn a_complete_config_is_accepted_with_relative_paths_resolved_against_its_directory() {
    let f = Fixture::new();
    let c = f.parse(GOOD).expect("valid config");
    assert_eq!(c.site, "WH01");
    assert_eq!(c.state_dir, f.dir.path().join("state"));
    assert_eq!(c.relay.ca_cert, f.dir.path().join("site/ca.pem"));
    assert_eq!(c.store.commit_max_events, 100);
    assert_eq!(c.store.commit_linger, Duration::from_millis(5));
    assert_eq!(c.relay.batch_max_events, 1000, "default");
    assert_eq!(c.relay.heartbeat, Duration::from_secs(5));
    assert_eq!(c.mqtt[0].topics, vec!["scanbridge/+/scan".to_string()]);
    assert_eq!(c.stations[0].op, Operation::Count);
    assert_eq!(c.store_path(), f.dir.path().join("state/agent.redb"));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let f = Fixture::new();
    let text = GOOD.replace("heartbeat_secs = 5", "heartbeat_seconds = 5");
    let (key, line, msg) = invalid(f.parse(&text).expect_err("unknown key"));
    assert_eq!(key, "heartbeat_seconds");
    assert_eq!(line, 15);
    assert!(
        msg.contains("line 15") && msg.contains("heartbeat_seconds"),
        "{msg}"
    );
}

#[test]
fn a_wrongly_typed_value_names_the_dotted_key_and_line() {
    let f = Fixture::new();
    let text = GOOD.replace("port = 1883", "port = \"mqtt\"");
    let (key, line, msg) = invalid(f.parse(&text).expect_err("bad port"));
    assert_eq!(key, "mqtt.port");
    assert_eq!(line, 20);
    assert!(msg.contains("line 20"), "{msg}");
}

#[test]
fn an_invalid_site_id_is_refused_at_its_line() {
    let f = Fixture::new();
    let text = GOOD.replace("site = \"WH01\"", "site = \"WH 01!\"");
    let (key, line, _) = invalid(f.parse(&text).expect_err("bad site"));
    assert_eq!((key.as_str(), line), ("site", 1));
}

#[test]
fn a_missing_certificate_file_is_refused_naming_the_key_and_the_path() {
    let f = Fixture::new();
    let text = GOOD.replace("site/site.key", "site/missing.key");
    let (key, line, msg) = invalid(f.parse(&text).expect_err("missing key file"));
    assert_eq!((key.as_str(), line), ("relay.client_key", 14));
    assert!(msg.contains("missing.key"), "{msg}");
}

#[test]
fn a_file_without_a_certificate_is_refused() {
    let f = Fixture::new();
    let text = GOOD.replace(
        "client_cert = \"site/site.pem\"",
        "client_cert = \"site/site.key\"",
    );
    let (key, _, _) = invalid(f.parse(&text).expect_err("key is no certificate"));
    assert_eq!(key, "relay.client_cert");
}

#[test]
fn a_plain_http_relay_url_is_refused() {
    let f = Fixture::new();
    let text = GOOD.replace("https://127.0.0.1:8443", "http://127.0.0.1:8443");
    let (key, line, _) = invalid(f.parse(&text).expect_err("http"));
    assert_eq!((key.as_str(), line), ("relay.url", 11));
}

#[test]
fn an_invalid_topic_filter_is_refused_at_its_line() {
    let f = Fixture::new();
    let text = GOOD.replace("\"scanbridge/+/scan\"", "\"scanbridge/#/scan\"");
    let (key, line, msg) = invalid(f.parse(&text).expect_err("bad filter"));
    assert_eq!((key.as_str(), line), ("mqtt[0].topics", 22));
    assert!(msg.contains("`#`"), "{msg}");
}

#[test]
fn an_unknown_station_operation_is_refused() {
    let f = Fixture::new();
    let text = GOOD.replace("op = \"count\"", "op = \"audit\"");
    let (key, line, msg) = invalid(f.parse(&text).expect_err("bad op"));
    assert_eq!((key.as_str(), line), ("stations[0].op", 26));
    assert!(msg.contains("receive, pick"), "{msg}");
}

#[test]
fn a_config_without_any_source_is_refused() {
    let f = Fixture::new();
    let cut = GOOD.find("[[mqtt]]").expect("mqtt table");
    let (key, _, msg) = invalid(f.parse(&GOOD[..cut]).expect_err("no source"));
    assert_eq!(key, "mqtt");
    assert!(msg.contains("at least one"), "{msg}");
}

#[test]
fn a_missing_required_key_is_named() {
    let f = Fixture::new();
    let text = GOOD.replace("state_dir = \"state\"\n", "");
    let (key, _, _) = invalid(f.parse(&text).expect_err("no state_dir"));
    assert_eq!(key, "state_dir");
}

#[test]
fn retry_max_below_retry_initial_is_refused() {
    let f = Fixture::new();
    let text = GOOD.replace(
        "heartbeat_secs = 5",
        "heartbeat_secs = 5\nretry_initial_ms = 1000\nretry_max_ms = 10",
    );
    let (key, line, _) = invalid(f.parse(&text).expect_err("retry"));
    assert_eq!((key.as_str(), line), ("relay.retry_max_ms", 17));
}

#[test]
fn topic_filters_follow_the_mqtt_rules() {
    for ok in ["a/b", "+/+/scan", "#", "a/#", "+"] {
        assert!(check_topic_filter(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a/#/b", "a+/b", "a/b#"] {
        assert!(check_topic_filter(bad).is_err(), "{bad}");
    }
}

#[test]
fn key_at_line_prefixes_the_table_header() {
    let text = "a = 1\n[relay]\nurl = 2\n";
    assert_eq!(key_at_line(text, 1), "a");
    assert_eq!(key_at_line(text, 3), "relay.url");
    assert_eq!(key_at_line(text, 2), "relay");
    let _ = Path::new(".");
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
    let f = Fixture::new();
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(f.dir.path().join("site/site.key"), other.serialize_pem()).expect("write");
    let (key, line, msg) = invalid(f.parse(GOOD).expect_err("mismatched key"));
    assert_eq!((key.as_str(), line), ("relay.client_key", 14));
    assert!(msg.contains("not usable together"), "{msg}");
}

#[test]
fn the_status_api_listens_on_loopback_9187_unless_configured_or_disabled() {
    let f = Fixture::new();
    let c = f.parse(GOOD).expect("good config");
    assert_eq!(c.status.listen, "127.0.0.1:9187".parse().ok());
    let c = f
        .parse(&format!("{GOOD}\n[status]\nlisten = \"\"\n"))
        .expect("disabled");
    assert_eq!(c.status.listen, None);
    let c = f
        .parse(&format!("{GOOD}\n[status]\nlisten = \"127.0.0.1:9999\"\n"))
        .expect("custom port");
    assert_eq!(c.status.listen, "127.0.0.1:9999".parse().ok());
}

#[test]
fn a_non_loopback_status_address_is_refused_unless_allow_remote_is_set() {
    let f = Fixture::new();
    let text = format!("{GOOD}\n[status]\nlisten = \"0.0.0.0:9187\"\n");
    let e = f.parse(&text).expect_err("remote refused");
    assert_eq!(e.key(), "status.listen");
    assert!(e.to_string().contains("allow_remote = true"), "{e}");
    let c = f
        .parse(&format!(
            "{GOOD}\n[status]\nlisten = \"0.0.0.0:9187\"\nallow_remote = true\n"
        ))
        .expect("allowed");
    assert_eq!(c.status.listen, "0.0.0.0:9187".parse().ok());
    let e = f
        .parse(&format!("{GOOD}\n[status]\nlisten = \"localhost\"\n"))
        .expect_err("not an address");
    assert_eq!(e.key(), "status.listen");
}

#[test]
fn the_status_command_reads_only_the_status_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    // Unreadable key files and unknown sections do not matter to `status`.
    std::fs::write(
        &path,
        "site = \"WH01\"\n[relay]\nclient_key = \"/nonexistent\"\n[status]\nlisten = \"127.0.0.1:9200\"\n",
    )
    .expect("write");
    assert_eq!(
        status_listen_from_file(&path).ok().flatten(),
        "127.0.0.1:9200".parse().ok()
    );
    std::fs::write(&path, "site = \"WH01\"\n").expect("write");
    assert_eq!(
        status_listen_from_file(&path).ok().flatten(),
        "127.0.0.1:9187".parse().ok()
    );
}

// ---- [[serial]] ------------------------------------------------------------------------------

const SERIAL: &str = r#"
[[serial]]
name = "dock-scanner"
path = "/dev/serial/by-id/usb-Honeywell_1900-if00"
baud = 115200
parity = "even"
data_bits = 7
stop_bits = 2
framing = "crlf"
idle_gap_ms = 80
max_line = 128
device = "SC-07"
aim = false
"#;

#[test]
fn a_serial_port_is_read_with_every_key() {
    let f = Fixture::new();
    let c = f.parse(&format!("{GOOD}{SERIAL}")).expect("valid config");
    assert_eq!(
        c.serial,
        vec![SerialConfig {
            name: "dock-scanner".into(),
            path: "/dev/serial/by-id/usb-Honeywell_1900-if00".into(),
            baud: 115_200,
            parity: SerialParity::Even,
            data_bits: 7,
            stop_bits: 2,
            framing: crate::sources::serial::framing::Framing::CrLf,
            idle_gap: Duration::from_millis(80),
            max_line: 128,
            device: "SC-07".into(),
            aim: false,
        }]
    );
}

#[test]
fn a_serial_port_takes_9600_8n1_cr_framing_and_aim_by_default() {
    let f = Fixture::new();
    let text =
        format!("{GOOD}\n[[serial]]\nname = \"s1\"\npath = \"/dev/ttyUSB0\"\ndevice = \"SC-07\"\n");
    let s = f.parse(&text).expect("valid config").serial.remove(0);
    assert_eq!(
        (
            s.baud,
            s.parity,
            s.data_bits,
            s.stop_bits,
            s.max_line,
            s.aim
        ),
        (9600, SerialParity::None, 8, 1, 256, true)
    );
    assert_eq!(s.framing, crate::sources::serial::framing::Framing::Cr);
    assert_eq!(s.idle_gap, Duration::from_millis(50));
}

#[test]
fn a_config_with_only_a_serial_port_is_a_valid_source() {
    let f = Fixture::new();
    let cut = GOOD.find("[[mqtt]]").expect("mqtt table");
    let c = f
        .parse(&format!("{}{SERIAL}", &GOOD[..cut]))
        .expect("serial-only config");
    assert!(c.mqtt.is_empty());
    assert_eq!(c.serial.len(), 1);
}

#[test]
fn an_unknown_serial_framing_parity_or_data_bits_is_refused_at_its_line() {
    let f = Fixture::new();
    for (from, to, key) in [
        (
            "framing = \"crlf\"",
            "framing = \"newline\"",
            "serial[0].framing",
        ),
        ("parity = \"even\"", "parity = \"mark\"", "serial[0].parity"),
        ("data_bits = 7", "data_bits = 9", "serial[0].data_bits"),
        ("stop_bits = 2", "stop_bits = 3", "serial[0].stop_bits"),
        ("max_line = 128", "max_line = 0", "serial[0].max_line"),
        ("baud = 115200", "baud = 0", "serial[0].baud"),
    ] {
        let text = format!("{GOOD}{}", SERIAL.replace(from, to));
        let (k, line, _) = invalid(f.parse(&text).expect_err(to));
        assert_eq!(k, key, "{to}");
        let want = text.lines().position(|l| l == to).map(|i| i + 1);
        assert_eq!(Some(line), want, "{to} is reported at its line");
    }
}

#[test]
fn a_serial_name_already_used_by_a_broker_is_refused() {
    let f = Fixture::new();
    let text = format!("{GOOD}{}", SERIAL.replace("\"dock-scanner\"", "\"site\""));
    let (key, _, msg) = invalid(f.parse(&text).expect_err("duplicate name"));
    assert_eq!(key, "serial[0].name");
    assert!(msg.contains("used twice"), "{msg}");
}

#[test]
fn the_same_serial_device_path_twice_is_refused() {
    let f = Fixture::new();
    let second = SERIAL.replace("\"dock-scanner\"", "\"other\"");
    let text = format!("{GOOD}{SERIAL}{second}");
    let (key, _, msg) = invalid(f.parse(&text).expect_err("duplicate path"));
    assert_eq!(key, "serial[1].path");
    assert!(msg.contains("configured twice"), "{msg}");
}

#[test]
fn the_commented_serial_example_in_deploy_parses_once_uncommented() {
    let example = include_str!("../../../deploy/agent.example.toml");
    let table: String = example
        .lines()
        .skip_while(|l| !l.starts_with("# [[serial]]"))
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or("")))
        .collect();
    assert!(table.contains("device ="), "found the example table");
    let f = Fixture::new();
    let c = f
        .parse(&format!("{GOOD}\n{table}"))
        .expect("the example [[serial]] table is valid");
    assert_eq!(c.serial.len(), 1);
    assert_eq!(c.serial[0].baud, 9600);
}

#[test]
fn the_scan_id_window_and_cap_default_to_3_days_and_1_million_and_are_checked() {
    let f = Fixture::new();
    let c = f.parse(GOOD).expect("valid config");
    assert_eq!(c.store.dedupe_window, Duration::from_secs(3 * 24 * 3600));
    assert_eq!(c.store.dedupe_max_ids, 1_000_000);
    let text = GOOD.replace(
        "commit_max_events = 100",
        "commit_max_events = 100\ndedupe_window_secs = 86400\ndedupe_max_ids = 50000",
    );
    let c = f.parse(&text).expect("valid config");
    assert_eq!(c.store.dedupe_window, Duration::from_secs(86_400));
    assert_eq!(c.store.dedupe_max_ids, 50_000);
    let text = GOOD.replace(
        "commit_max_events = 100",
        "commit_max_events = 100\ndedupe_window_secs = 5",
    );
    let (key, line, msg) = invalid(f.parse(&text).expect_err("window too short"));
    assert_eq!((key.as_str(), line), ("store.dedupe_window_secs", 9));
    assert!(msg.contains("60 to 31536000 seconds"), "{msg}");
}
