//! The admin listener with a relay running in-process: site status from redb (also after a
//! restart), admin credentials (a site certificate is never one), the JSON API, metrics, the
//! login cookie and form token, dead-letter replay after fixing master data, and the trace.

#![allow(clippy::unwrap_used)]

mod admin_support;

use std::time::Duration;

use admin_support::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_status_comes_from_the_store_and_survives_a_relay_restart() {
    let setup = Setup::new("http://127.0.0.1:9", "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;
    let site = site_client(&setup.bundle("WH01"));
    let status = agent_status(7, Some(42_000), 30);
    let b = batch(
        "WH01",
        1,
        vec![
            count("4006381333931", 3.0),
            quarantined(b"\xff\xfe", "not UTF-8"),
        ],
        Some(status),
    );
    send(&site, &relay.batches_url(), &b).await;

    let admin = admin_client(&setup.ca_pem());
    let (code, sites) = get_json(&admin, &relay.admin_url("/v1/sites")).await;
    assert_eq!(code, 200, "{sites}");
    let wh01 = &sites[0];
    assert_eq!(wh01["site"], "WH01");
    assert_eq!(wh01["state"], "online");
    assert_eq!(wh01["agent_backlog_events"], 7);
    assert_eq!(wh01["agent_version"], "0.1.0-test");
    assert_eq!(wh01["events_received"], 2);
    assert_eq!(wh01["quarantined"], 1);
    // Odoo is unreachable: both events wait at the relay.
    assert_eq!(wh01["inbox_lag_events"], 2);
    assert!(wh01["oldest_unsynced_age_secs"].as_f64().unwrap() >= 42.0);
    let days = wh01["cert_expires_in_days"].as_f64().unwrap();
    assert!((29.9..30.1).contains(&days), "{days}");
    assert_eq!(wh01["sources"][0]["up"], true);

    relay.stop().await;
    let relay = InProcess::start(&setup).await;
    let admin = admin_client(&setup.ca_pem());
    let (code, after) = get_json(&admin, &relay.admin_url("/v1/sites/WH01")).await;
    assert_eq!(code, 200, "{after}");
    for key in [
        "last_seen",
        "agent_backlog_events",
        "events_received",
        "quarantined",
        "inbox_lag_events",
        "cert_not_after",
        "agent_version",
    ] {
        assert_eq!(after[key], wh01[key], "{key} changed across the restart");
    }
    let (code, _) = get_json(&admin, &relay.admin_url("/v1/sites/NOPE")).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_certificate_is_refused_on_every_admin_route_and_the_site_listener_has_none() {
    let setup = Setup::new("http://127.0.0.1:9", "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;
    let bundle = setup.bundle("WH01");
    let site = site_client(&bundle);
    send(
        &site,
        &relay.batches_url(),
        &batch("WH01", 1, vec![count("1", 1.0)], None),
    )
    .await;

    let gets = [
        "/v1/sites",
        "/v1/sites/WH01",
        "/v1/sites/WH01/events",
        "/v1/sites/WH01/quarantine",
        "/v1/dead-letters",
        "/v1/dead-letters/WH01/1",
        "/v1/trace?site=WH01&seq=1",
        "/metrics",
        "/",
        "/sites/WH01",
    ];
    let posts = [
        "/v1/dead-letters/WH01/1/replay",
        "/v1/dead-letters/WH01/1/skip",
        "/sites/WH01/dead-letters/1/replay",
        "/login",
    ];
    for with_token in [false, true] {
        for path in gets {
            let mut r = site.get(relay.admin_url(path));
            if with_token {
                r = r.bearer_auth(TOKEN);
            }
            let code = r.send().await.unwrap().status().as_u16();
            assert!(
                code == 401 || code == 403,
                "GET {path} with a site certificate: {code}"
            );
        }
        for path in posts {
            let mut r = site
                .post(relay.admin_url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={TOKEN}&csrf=x"));
            if with_token {
                r = r.bearer_auth(TOKEN);
            }
            let code = r.send().await.unwrap().status().as_u16();
            assert!(
                code == 401 || code == 403,
                "POST {path} with a site certificate: {code}"
            );
        }
    }
    // The site listener knows nothing but /v1/batches.
    let site_base = format!("https://127.0.0.1:{}", relay.site_addr.port());
    for path in ["/v1/sites", "/metrics", "/", "/v1/trace?site=WH01&seq=1"] {
        let r = site
            .get(format!("{site_base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "site listener GET {path}");
    }
    // And the same routes with the admin token work on the admin listener.
    let admin = admin_client(&setup.ca_pem());
    assert_eq!(get_json(&admin, &relay.admin_url("/v1/sites")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_or_a_wrong_token_gets_401_and_an_admin_certificate_is_accepted() {
    let setup = Setup::new("http://127.0.0.1:9", "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;
    let admin = admin_client(&setup.ca_pem());
    let r = admin
        .get(relay.admin_url("/v1/sites"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = admin
        .get(relay.admin_url("/metrics"))
        .bearer_auth("test-admin-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A browser without a session is sent to the login form.
    let r = admin.get(relay.admin_url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login");

    let out = setup.dir.path().join("admin-alice");
    scanbridge_relay::admin::cert::issue_admin(&setup.dir.path().join("ca"), "alice", &out, 30)
        .unwrap();
    let alice = client_with_cert(
        &setup.ca_pem(),
        &out.join("admin.pem"),
        &out.join("admin.key"),
    );
    let r = alice
        .get(relay.admin_url("/v1/sites"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // An admin certificate is no site certificate: the site listener refuses its handshake.
    let r = alice.get(relay.batches_url()).send().await;
    assert!(r.is_err(), "site listener accepted an admin certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_sets_a_strict_http_only_cookie_and_forms_need_the_session_token() {
    let setup = Setup::new("http://127.0.0.1:9", "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;
    let admin = admin_client(&setup.ca_pem());
    let r = admin
        .post(relay.admin_url("/login"))
        .form(&[("token", "wrong-token-wrong-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(!r.headers().contains_key("set-cookie"));

    let r = admin
        .post(relay.admin_url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing in {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let r = admin
        .get(relay.admin_url("/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("Scanbridge fleet"));
    // The cookie reads the API, but cannot change anything through it (token or cert only).
    let r = admin
        .get(relay.admin_url("/v1/sites"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = admin
        .post(relay.admin_url("/v1/dead-letters/WH01/1/replay"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A page form without the session's form token is refused.
    let r = admin
        .post(relay.admin_url("/sites/WH01/dead-letters/1/replay"))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_is_applied_after_the_product_is_seeded_and_the_trace_shows_its_path(
) {
    let sim = OdooSim::start().await;
    sim.seed(&[("4006381333931", "Widget")], &[(LOCATION, "A01")])
        .await;
    let setup = Setup::new(&sim.url, "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;
    let site = site_client(&setup.bundle("WH01"));
    let b = batch(
        "WH01",
        1,
        vec![
            count("4006381333931", 5.0),
            count("5901234123457", 2.0),
            quarantined(b"<script>", "not JSON"),
        ],
        Some(agent_status(0, None, 90)),
    );
    send(&site, &relay.batches_url(), &b).await;
    let admin = admin_client(&setup.ca_pem());

    let list: Value = eventually(WAIT, "one dead letter", || async {
        let (_, v) = get_json(&admin, &relay.admin_url("/v1/dead-letters?site=WH01")).await;
        (v.as_array().map(Vec::len) == Some(1)).then_some(v)
    })
    .await;
    assert_eq!(list[0]["seq"], 2);
    assert_eq!(list[0]["state"], "open");
    assert!(list[0]["event"].as_str().unwrap().contains("5901234123457"));
    let (code, shown) = get_json(&admin, &relay.admin_url("/v1/dead-letters/WH01/2")).await;
    assert_eq!(code, 200);
    assert!(!shown["reason"].as_str().unwrap().is_empty());

    let (_, t) = get_json(&admin, &relay.admin_url("/v1/trace?site=WH01&seq=2")).await;
    let steps: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["received_at_agent", "stored_at_relay", "dead_lettered"],
        "{t}"
    );

    sim.seed(&[("5901234123457", "Gadget")], &[]).await;
    let r = admin
        .post(relay.admin_url("/v1/dead-letters/WH01/2/replay"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = eventually(WAIT, "the replayed event applied", || async {
        let (_, t) = get_json(&admin, &relay.admin_url("/v1/trace?site=WH01&seq=2")).await;
        (t["steps"][2]["step"] == "applied_in_odoo").then_some(t)
    })
    .await;
    assert_eq!(t["steps"][1]["step"], "stored_at_relay");
    assert!(t["steps"][1]["at"].is_string(), "{t}");
    let applied = &t["steps"][2];
    assert!(
        applied["detail"]
            .as_str()
            .unwrap()
            .contains("scanbridge.WH01_2"),
        "{t}"
    );
    assert_eq!(applied["model"], "stock.quant", "{t}");
    assert!(applied["record_id"].as_i64().unwrap() > 0, "{t}");

    let (_, by_code) = get_json(&admin, &relay.admin_url("/v1/trace?barcode=4006381333931")).await;
    assert_eq!(by_code["traces"].as_array().unwrap().len(), 1, "{by_code}");
    assert_eq!(by_code["traces"][0]["seq"], 1);
    let (_, q) = get_json(&admin, &relay.admin_url("/v1/sites/WH01/quarantine")).await;
    assert_eq!(q[0]["raw"], "<script>");
    let (_, events) = get_json(&admin, &relay.admin_url("/v1/sites/WH01/events?limit=2")).await;
    let seqs: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 2]);
    // Replaying again is refused: it is no longer open.
    let r = admin
        .post(relay.admin_url("/v1/dead-letters/WH01/2/skip"))
        .bearer_auth(TOKEN)
        .json(&json!({"note": "too late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_contract_names_for_every_site() {
    let setup = Setup::new("http://127.0.0.1:9", "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;
    for s in ["WH01", "WH02"] {
        let site = site_client(&setup.bundle(s));
        send(
            &site,
            &relay.batches_url(),
            &batch(
                s,
                1,
                vec![count("1", 1.0)],
                Some(agent_status(3, Some(1000), 10)),
            ),
        )
        .await;
    }
    let admin = admin_client(&setup.ca_pem());
    let r = admin
        .get(relay.admin_url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics"));
    let text = r.text().await.unwrap();
    for site in ["WH01", "WH02"] {
        for name in [
            "scanbridge_site_up",
            "scanbridge_site_last_seen_timestamp_seconds",
            "scanbridge_site_oldest_unsynced_age_seconds",
            "scanbridge_site_agent_backlog_events",
            "scanbridge_site_inbox_lag_events",
            "scanbridge_events_received_total",
            "scanbridge_events_applied_total",
            "scanbridge_dead_letters_total",
            "scanbridge_dead_letters_open",
            "scanbridge_quarantined_total",
            "scanbridge_site_cert_expiry_timestamp_seconds",
        ] {
            let series = format!("{name}{{site=\"{site}\"}} ");
            assert!(text.contains(&series), "{series} missing in\n{text}");
        }
    }
    assert!(text.contains("scanbridge_site_up{site=\"WH01\"} 1"));
    assert!(text.contains("scanbridge_site_agent_backlog_events{site=\"WH02\"} 3"));
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text");
}
