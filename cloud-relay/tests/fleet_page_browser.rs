//! The fleet page in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`). Logs in with the admin token, takes a screenshot, checks that the
//! rows are sorted worst first (offline, stale, dead letters, backlog age), that text from an
//! agent is shown as text (not markup), clicks a site row to reach the site page, and skips a dead
//! letter with the page's own form (session cookie + form token).
//!
//! Needs `chromium` and `chromium-driver` (tests/ensure-deps.sh installs them).

#![allow(clippy::unwrap_used)]

mod admin_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use admin_support::*;
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
const KNOWN: &str = "4006381333931";
const UNKNOWN: &str = "5901234123457";
const HOSTILE_AGENT: &str = "<img src=x onerror=alert(1)>";

/// chromedriver as a child process; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver_path() -> &'static str {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromedriver not installed: run tests/ensure-deps.sh (Debian: chromium chromium-driver)")
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver_path())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver { child, port };
    let status = format!("http://127.0.0.1:{port}/status");
    eventually(WAIT, "chromedriver ready", || {
        let status = status.clone();
        async move {
            let r = reqwest::Client::new().get(&status).send().await.ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        }
    })
    .await;
    driver
}

/// Stores a heartbeat for `site` as if it had arrived `ago` seconds ago (test setup through the
/// store, so the stale/offline thresholds need no waiting).
async fn heartbeat_at(
    relay: &InProcess,
    site: &str,
    agent: &str,
    ago_secs: i64,
    backlog: u64,
    oldest_ms: Option<u64>,
) {
    let inbox = relay.inbox.clone();
    let mut b = batch(site, 1, vec![], Some(agent_status(backlog, oldest_ms, 60)));
    b.agent = agent.into();
    let site = site.to_string();
    let at = scanbridge_relay::now_micros() - ago_secs * 1_000_000;
    tokio::task::spawn_blocking(move || inbox.accept_batch(&site, &b, &[], at))
        .await
        .unwrap()
        .unwrap();
}

async fn wait_for_path(c: &fantoccini::Client, path: &str) {
    eventually(WAIT, &format!("browser at {path}"), || async {
        let url = c.current_url().await.ok()?;
        (url.path() == path).then_some(())
    })
    .await;
}

/// Asserts a non-empty PNG; copies it to `$FLEET_SCREENSHOTS/` when set (to look at it).
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    if let Some(dir) = std::env::var_os("FLEET_SCREENSHOTS") {
        std::fs::write(Path::new(&dir).join(path.file_name().unwrap()), &bytes).unwrap();
    }
    assert!(
        bytes.len() > 1000,
        "screenshot too small: {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_page_logs_in_sorts_worst_first_and_a_click_on_a_row_opens_the_site() {
    let sim = OdooSim::start().await;
    sim.seed(&[(KNOWN, "Widget")], &[(LOCATION, "A01")]).await;
    let setup = Setup::new(&sim.url, "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;

    // DEAD1 sends a real batch whose second event names a product Odoo does not know.
    let dead_site = site_client(&setup.bundle("DEAD1"));
    let b = batch(
        "DEAD1",
        1,
        vec![count(KNOWN, 1.0), count(UNKNOWN, 2.0)],
        Some(agent_status(0, None, 60)),
    );
    send(&dead_site, &relay.batches_url(), &b).await;
    let admin = admin_client(&setup.ca_pem());
    eventually(WAIT, "DEAD1's dead letter", || async {
        let (_, v) = get_json(&admin, &relay.admin_url("/v1/dead-letters?site=DEAD1")).await;
        (v.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    heartbeat_at(&relay, "OFF1", "gw-off1", 3600, 0, None).await;
    heartbeat_at(&relay, "STALE1", "gw-stale1", 300, 0, None).await;
    heartbeat_at(&relay, "OLD1", "gw-old1", 0, 50, Some(7_200_000)).await;
    heartbeat_at(&relay, "OK1", HOSTILE_AGENT, 0, 0, None).await;
    let expected = ["OFF1", "STALE1", "DEAD1", "OLD1", "OK1"];

    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--ignore-certificate-errors", "--window-size=1400,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap();

    // The body runs in its own task so that a failed assertion still closes the browser.
    let (fleet_url, shots) = (relay.admin_url("/"), setup.dir.path().to_path_buf());
    let body = tokio::spawn({
        let c = c.clone();
        async move {
            c.goto(&fleet_url).await.unwrap();
            wait_for_path(&c, "/login").await;
            c.find(Locator::Id("token"))
                .await
                .unwrap()
                .send_keys(TOKEN)
                .await
                .unwrap();
            c.find(Locator::Id("login"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for_path(&c, "/").await;
            c.find(Locator::Id("fleet")).await.unwrap();

            let shot = shots.join("fleet.png");
            std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();
            assert_png(&shot);

            let mut order = Vec::new();
            for row in c.find_all(Locator::Css("tr.site")).await.unwrap() {
                order.push(row.attr("data-site").await.unwrap().unwrap());
            }
            assert_eq!(order, expected, "rows not sorted worst first");
            let classes = c
                .find(Locator::Css("tr[data-site='OFF1']"))
                .await
                .unwrap()
                .attr("class")
                .await
                .unwrap()
                .unwrap();
            assert!(classes.contains("offline"), "{classes}");
            // The agent name is text, not markup.
            assert!(c.find_all(Locator::Css("img")).await.unwrap().is_empty());
            let ok_row = c.find(Locator::Css("tr[data-site='OK1']")).await.unwrap();
            assert!(ok_row.text().await.unwrap().contains(HOSTILE_AGENT));

            // A real click on the row (on its headline cell, not on the link).
            c.find(Locator::Css("tr[data-site='DEAD1'] td.headline"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for_path(&c, "/sites/DEAD1").await;
            let title = c
                .find(Locator::Id("site-title"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(title.contains("DEAD1"), "{title}");
            let dead = c
                .find(Locator::Id("dead-letters"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(dead.contains(UNKNOWN), "{dead}");
            let events = c
                .find(Locator::Id("events"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                events.contains(KNOWN) && events.contains("applied"),
                "{events}"
            );
            let shot = shots.join("site.png");
            std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();
            assert_png(&shot);

            // Skip the dead letter with the page's form.
            c.find(Locator::Id("skip-2"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let flash = eventually(WAIT, "the skip confirmation", || async {
                let f = c.find(Locator::Id("flash")).await.ok()?;
                f.text().await.ok()
            })
            .await;
            assert!(flash.contains("skipped"), "{flash}");
        }
    });
    let outcome = body.await;
    let _ = c.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    let (_, shown) = get_json(&admin, &relay.admin_url("/v1/dead-letters/DEAD1/2")).await;
    assert_eq!(shown["state"], "skipped", "{shown}");
}
