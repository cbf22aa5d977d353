//! The `scanbridge-relay` binary's command line: exit codes and messages an operator acts on.

use std::process::Command;

fn relay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scanbridge-relay"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run scanbridge-relay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn ca_init_then_issue_succeed_and_a_second_init_is_refused_with_73() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    assert_eq!(relay(&["ca", "init", "--dir", path(&ca)]).0, 0);
    let (code, _, err) = relay(&["ca", "init", "--dir", path(&ca)]);
    assert_eq!(code, 73);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let out = dir.path().join("wh01");
    assert_eq!(
        relay(&[
            "ca",
            "issue",
            "--dir",
            path(&ca),
            "--site",
            "WH01",
            "--out",
            path(&out)
        ])
        .0,
        0
    );
    assert!(out.join("site.key").exists() && out.join("ca.pem").exists());
}

#[test]
fn an_invalid_site_id_and_an_unknown_subcommand_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    assert_eq!(relay(&["ca", "init", "--dir", path(&ca)]).0, 0);
    let out = dir.path().join("x");
    let (code, _, err) = relay(&[
        "ca",
        "issue",
        "--dir",
        path(&ca),
        "--site",
        "WH 01",
        "--out",
        path(&out),
    ]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(relay(&["frobnicate"]).0, 64);
}

#[test]
fn check_config_names_the_key_and_line_of_a_mistake_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    assert_eq!(relay(&["ca", "init", "--dir", path(&ca)]).0, 0);
    std::fs::write(dir.path().join("key"), "k\n").expect("key");
    let good = "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n[tls]\nserver_cert = \"ca/server.pem\"\nserver_key = \"ca/server.key\"\nclient_ca = \"ca/ca.pem\"\n[odoo]\nurl = \"http://127.0.0.1:8069\"\ndatabase = \"db\"\nlogin = \"u\"\napi_key_file = \"key\"\n";
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, good).expect("write");
    let (code, out, err) = relay(&["check-config", path(&file)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));

    std::fs::write(&file, good.replace("login = ", "logn = ")).expect("write");
    let (code, _, err) = relay(&["check-config", path(&file)]);
    assert_eq!(code, 64);
    assert!(err.contains("line 10") && err.contains("logn"), "{err}");

    std::fs::write(&file, good.replace("ca/server.key", "ca/ca.pem")).expect("write");
    let (code, _, err) = relay(&["run", "--config", path(&file)]);
    assert_eq!(code, 64);
    assert!(
        err.contains("line 5") && err.contains("tls.server_key"),
        "{err}"
    );
}
