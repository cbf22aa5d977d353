//! Unit tests of the `[[mqtt]]` broker access and payload format keys and of `[[tags]]`: what is
//! accepted, and that every mistake names its dotted key and its line.
#![allow(clippy::unwrap_used)]

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::create_dir(dir.path().join("site")).unwrap();
        for name in ["ca.pem", "site.pem", "broker-ca.pem", "mqtt-client.pem"] {
            std::fs::write(dir.path().join("site").join(name), ck.cert.pem()).unwrap();
        }
        for name in ["site.key", "mqtt-client.key"] {
            std::fs::write(
                dir.path().join("site").join(name),
                ck.key_pair.serialize_pem(),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("site/mqtt.pass"), "s3cret pass\nignored\n").unwrap();
        std::fs::write(dir.path().join("site/empty.pass"), "\n").unwrap();
        Fixture { dir }
    }

    fn parse(&self, mqtt_and_rest: &str) -> Result<Config, ConfigError> {
        let text = format!("{HEAD}{mqtt_and_rest}");
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }
}

/// Seven lines; the tables under test start on line 8.
const HEAD: &str = r#"site = "WH01"
state_dir = "state"
[relay]
url = "https://127.0.0.1:8443"
ca_cert = "site/ca.pem"
client_cert = "site/site.pem"
client_key = "site/site.key"
"#;

const BROKER: &str = r#"[[mqtt]]
name = "plant"
host = "broker.plant.local"
client_id = "scanbridge-WH01"
topics = ["scanbridge/+/scan", "plc/#", "scanners/+/raw"]
"#;

fn refused(r: Result<Config, ConfigError>) -> (String, usize, String) {
    let e = r.unwrap_err();
    (e.key().to_string(), e.line(), e.to_string())
}

#[test]
fn a_plain_broker_has_no_tls_no_credentials_json_only_and_port_1883() {
    let c = Fixture::new().parse(BROKER).unwrap();
    let m = &c.mqtt[0];
    assert_eq!(
        (m.port, &m.tls, &m.username, &m.password),
        (1883, &None, &None, &None)
    );
    assert!(m.formats.is_empty());
    assert!(c.tags.is_empty());
}

#[test]
fn tls_credentials_formats_and_tags_are_read_with_defaults() {
    let f = Fixture::new();
    let c = f
        .parse(&format!(
            r#"{BROKER}username = "agent-wh01"
password_file = "site/mqtt.pass"
[mqtt.tls]
ca_cert = "site/broker-ca.pem"
client_cert = "site/mqtt-client.pem"
client_key = "site/mqtt-client.key"
[[mqtt.formats]]
filter = "plc/+/tags"
format = "kepware"
[[mqtt.formats]]
filter = "scanners/+/raw"
format = "text"
device_level = 1

[[tags]]
id = "Channel1.Scale1.Weight"
tag = "scale1.weight"
unit = "kg"
device = "SCALE-1"
[[tags]]
id = "Channel1.Dock.Door1"
tag = "dock.door1"
"#
        ))
        .unwrap();
    let m = &c.mqtt[0];
    assert_eq!(m.port, 8883, "TLS default port");
    let tls = m.tls.as_ref().unwrap();
    assert_eq!(tls.ca_cert, f.dir.path().join("site/broker-ca.pem"));
    assert_eq!(
        tls.client_key,
        Some(f.dir.path().join("site/mqtt-client.key"))
    );
    assert_eq!(m.username.as_deref(), Some("agent-wh01"));
    assert_eq!(
        m.password,
        Some(Password("s3cret pass".into())),
        "first line only"
    );
    assert_eq!(
        format!("{:?}", m.password),
        "Some(Password(***))",
        "never printed"
    );
    assert_eq!(
        m.formats,
        vec![
            FormatRule {
                filter: "plc/+/tags".into(),
                format: PayloadFormat::Kepware,
                device_level: 1
            },
            FormatRule {
                filter: "scanners/+/raw".into(),
                format: PayloadFormat::Text,
                device_level: 1
            },
        ]
    );
    assert_eq!(c.tags.len(), 2);
    assert_eq!(c.tags[0].device.as_deref(), Some("SCALE-1"));
    assert_eq!(
        (c.tags[1].unit.as_ref(), c.tags[1].device.as_ref()),
        (None, None)
    );
}

#[test]
fn a_password_file_without_a_username_names_its_key_and_line() {
    let (key, line, msg) =
        refused(Fixture::new().parse(&format!("{BROKER}password_file = \"site/mqtt.pass\"\n")));
    assert_eq!((key.as_str(), line), ("mqtt[0].password_file", 13));
    assert!(msg.contains("set username too"), "{msg}");
}

#[test]
fn a_missing_or_empty_password_file_is_refused() {
    let f = Fixture::new();
    let (key, _, msg) = refused(f.parse(&format!(
        "{BROKER}username = \"u\"\npassword_file = \"site/nope.pass\"\n"
    )));
    assert_eq!(key, "mqtt[0].password_file");
    assert!(msg.contains("cannot read"), "{msg}");
    let (_, line, msg) = refused(f.parse(&format!(
        "{BROKER}username = \"u\"\npassword_file = \"site/empty.pass\"\n"
    )));
    assert_eq!(line, 14);
    assert!(msg.contains("is empty"), "{msg}");
}

#[test]
fn a_client_certificate_without_its_key_is_refused() {
    let (key, line, msg) = refused(Fixture::new().parse(&format!(
        "{BROKER}[mqtt.tls]\nca_cert = \"site/broker-ca.pem\"\nclient_cert = \"site/mqtt-client.pem\"\n"
    )));
    assert_eq!((key.as_str(), line), ("mqtt[0].tls.client_cert", 15));
    assert!(msg.contains("set client_key too"), "{msg}");
}

#[test]
fn an_unreadable_broker_ca_names_the_tls_key() {
    let (key, line, msg) = refused(Fixture::new().parse(&format!(
        "{BROKER}[mqtt.tls]\nca_cert = \"site/missing.pem\"\n"
    )));
    assert_eq!((key.as_str(), line), ("mqtt[0].tls.ca_cert", 14));
    assert!(msg.contains("cannot read"), "{msg}");
}

#[test]
fn an_unknown_format_names_the_rule_and_its_line() {
    let (key, line, msg) = refused(Fixture::new().parse(&format!(
        "{BROKER}[[mqtt.formats]]\nfilter = \"plc/+/tags\"\nformat = \"csv\"\n"
    )));
    assert_eq!((key.as_str(), line), ("mqtt[0].formats[0].format", 15));
    assert!(msg.contains("use json, text or kepware"), "{msg}");
}

#[test]
fn a_format_filter_the_broker_is_not_subscribed_to_is_refused() {
    let (key, line, msg) = refused(Fixture::new().parse(&format!(
        "{BROKER}[[mqtt.formats]]\nfilter = \"other/+\"\nformat = \"text\"\n"
    )));
    assert_eq!((key.as_str(), line), ("mqtt[0].formats[0].filter", 14));
    assert!(msg.contains("add it to topics"), "{msg}");
}

#[test]
fn a_device_level_out_of_range_is_refused() {
    let (key, _, msg) = refused(Fixture::new().parse(&format!(
        "{BROKER}[[mqtt.formats]]\nfilter = \"plc/#\"\nformat = \"kepware\"\ndevice_level = 99\n"
    )));
    assert_eq!(key, "mqtt[0].formats[0].device_level");
    assert!(msg.contains("0 to 31"), "{msg}");
}

#[test]
fn a_tag_id_listed_twice_names_the_second_entry() {
    let (key, line, msg) = refused(Fixture::new().parse(&format!(
        "{BROKER}[[tags]]\nid = \"A\"\ntag = \"a\"\n[[tags]]\nid = \"A\"\ntag = \"b\"\n"
    )));
    assert_eq!((key.as_str(), line), ("tags[1].id", 17));
    assert!(msg.contains("listed twice"), "{msg}");
}

#[test]
fn an_unknown_key_in_a_format_rule_is_refused() {
    let (key, _, _) = refused(Fixture::new().parse(&format!(
        "{BROKER}[[mqtt.formats]]\nfilter = \"plc/#\"\nformat = \"kepware\"\ndevice = \"x\"\n"
    )));
    assert_eq!(key, "device");
}

#[test]
fn filter_coverage_and_topic_matching_follow_mqtt_wildcards() {
    assert!(filter_covers("plc/#", "plc/+/tags"));
    assert!(filter_covers("plc/+/tags", "plc/+/tags"));
    assert!(filter_covers("+/+/tags", "plc/line1/tags"));
    assert!(filter_covers("#", "a/#"));
    assert!(!filter_covers("plc/+/tags", "plc/#"));
    assert!(!filter_covers("plc/line1/tags", "plc/+/tags"));
    assert!(!filter_covers("plc/+", "plc/+/tags"));
    assert!(topic_matches("plc/+/tags", "plc/line1/tags"));
    assert!(topic_matches("plc/#", "plc"));
    assert!(topic_matches("plc/#", "plc/a/b/c"));
    assert!(!topic_matches("plc/+/tags", "plc/a/b/tags"));
    assert!(!topic_matches("#", "$SYS/broker/uptime"));
    assert!(topic_matches("+/+", "a/"));
}

#[test]
fn the_deploy_example_parses_with_its_broker_tls_password_and_second_broker_uncommented() {
    let f = Fixture::new();
    let dir = f.dir.path().display().to_string();
    for name in ["broker-ca.pem", "mqtt-client.pem"] {
        std::fs::copy(
            f.dir.path().join("site/mqtt-client.pem"),
            f.dir.path().join(name),
        )
        .unwrap();
    }
    std::fs::copy(
        f.dir.path().join("site/mqtt-client.key"),
        f.dir.path().join("mqtt-client.key"),
    )
    .unwrap();
    for name in ["mqtt.password", "plant-mqtt.password"] {
        std::fs::write(f.dir.path().join(name), "pw\n").unwrap();
    }
    let example = include_str!("../../../deploy/agent.example.toml")
        .replace("/etc/scanbridge/", &format!("{dir}/"))
        .replace("/var/lib/scanbridge-agent", &format!("{dir}/state"));
    let markers = [
        "# username",
        "# password_file",
        "# [mqtt.tls]",
        "# [[mqtt]]",
    ];
    let mut uncommenting = false;
    let mut text = String::new();
    for line in example.lines() {
        if markers.iter().any(|m| line.starts_with(m)) {
            uncommenting = true;
        }
        if line.trim().is_empty() || !line.starts_with('#') {
            uncommenting = false;
        }
        let line = match (uncommenting, line.strip_prefix("# ")) {
            (true, Some(rest)) => rest,
            _ => line,
        };
        text.push_str(line);
        text.push('\n');
    }
    let path = f.dir.path().join("agent.toml");
    std::fs::write(&path, &text).unwrap();
    let c = load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.mqtt.len(), 2);
    let (site, plant) = (&c.mqtt[0], &c.mqtt[1]);
    assert_eq!((site.port, plant.port), (1883, 8883));
    assert!(site.tls.as_ref().is_some_and(|t| t.client_key.is_some()));
    assert_eq!(site.password, Some(Password("pw".into())));
    assert_eq!(site.formats.len(), 2);
    assert_eq!(site.formats[0].format, PayloadFormat::Text);
    assert_eq!(plant.formats[0].format, PayloadFormat::Kepware);
    assert_eq!(c.tags.len(), 1);
    assert_eq!(c.tags[0].unit.as_deref(), Some("kg"));
    assert!(c.stations.len() >= 2);
}
