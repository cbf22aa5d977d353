//! A replaced gateway box through the real chain (mosquitto, agent, relay, Odoo simulator, each
//! its own process): the old box's counts reach Odoo; the box is replaced (a fresh `agent.redb`,
//! the same site certificate and broker session), so its store numbers from 1 again while the
//! relay already holds the site's seqs. The relay refuses its batches (409) instead of taking them
//! for duplicates, the agent deletes nothing and says what to run; after `scanbridge-agent store
//! renumber --after N` (the real command, N from the relay's own message) every count of both
//! boxes is applied in Odoo exactly once and in order.
//!
//! Before store identities, the relay answered the new box's batches as duplicates and the agent
//! deleted them: its first N counts were lost without a word. This test fails that way if the
//! check goes.

use std::time::Duration;

use rand::SeedableRng;
use scanbridge_e2e::agent::{Agent, StatusApi};
use scanbridge_e2e::bins;
use scanbridge_e2e::checks::{describe_violations, verify_exactly_once, Expected};
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::stack::{plan_counts, publish_plan, Catalog, Stack, StackOptions};

/// Counts per box.
const PER_BOX: usize = 300;
const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_box_is_refused_keeps_its_counts_and_after_renumbering_both_boxes_apply_once() {
    let dir = StateDir::temp("replaced-box").expect("state dir");
    let root = dir.path().to_path_buf();
    let mut stack = Stack::start(dir, &StackOptions::default())
        .await
        .expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 1, 40, 3, "WH-BOX")
        .await
        .expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xb0c5);
    let (plan, expected) = plan_counts(&catalog, 2 * PER_BOX, &mut rng);
    let (old_box, new_box) = plan.split_at(PER_BOX);
    let mut old_expected = Expected::default();
    for c in old_box {
        old_expected.next_qty(c.pair);
    }

    // The old box: its counts reach Odoo.
    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-box")
        .await
        .expect("publisher");
    publish_plan(&mut publisher, "SC-01", old_box, None)
        .await
        .expect("publish old box");
    publisher.wait_all_acked(TIMEOUT).await.expect("acked");
    stack
        .wait_for_state(
            TIMEOUT,
            "the old box's counts to be applied",
            |s| old_expected.pairs_done(s) == old_expected.counts.len(),
            |s| {
                format!(
                    "{}/{} pairs done",
                    old_expected.pairs_done(s),
                    old_expected.counts.len()
                )
            },
        )
        .await
        .expect("old box applied");
    stack
        .agent
        .stop(Duration::from_secs(10))
        .expect("old box stops");

    // The new box: same configuration and certificate, an empty state directory.
    let new_dir = root.join("new-box");
    std::fs::create_dir_all(&new_dir).expect("new box dir");
    let mut opts = stack.agent_options.clone();
    opts.state_dir = None;
    let mut agent = Agent::start(&new_dir, &opts).await.expect("new box starts");
    let api = StatusApi::new(opts.status_url().expect("status API")).expect("status client");
    publish_plan(&mut publisher, "SC-01", new_box, None)
        .await
        .expect("publish new box");
    publisher.wait_all_acked(TIMEOUT).await.expect("acked");

    // Refused, not taken for duplicates: the counts stay at the agent and it says what to run.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let problem = loop {
        // (Not listening yet right after the start.)
        let status = api.status().await.unwrap_or_default();
        let problems: Vec<String> = status["problems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = problems.into_iter().find(|p| p.contains("store renumber")) {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never reported the relay's refusal: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(problem.contains("409"), "{problem}");
    let metrics = api.metrics().await.expect("agent metrics");
    assert_eq!(
        metrics.get("scanbridge_agent_backlog_events").copied(),
        Some(PER_BOX as f64),
        "the refused counts are all still at the agent: {metrics:?}"
    );
    let after: u64 = problem
        .split("--after ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `--after N` in the relay's message: {problem}"));
    assert!(
        after >= PER_BOX as u64,
        "the relay holds the old box's seqs: {problem}"
    );

    // The technician's fix, with the agent stopped.
    agent.stop(Duration::from_secs(10)).expect("new box stops");
    let out = std::process::Command::new(bins::binary(bins::AGENT).expect("agent binary"))
        .args(["store", "renumber", "--config"])
        .arg(agent.config_path())
        .args(["--after", &after.to_string()])
        .output()
        .expect("run renumber");
    assert!(
        out.status.success(),
        "renumber failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    agent.restart().expect("new box restarts");

    // Both boxes' counts, each once, in order.
    stack.agent = agent;
    let state = stack
        .fence_and_wait(&mut publisher, "SC-01", &catalog, &expected, TIMEOUT)
        .await
        .expect("new box applied");
    if let Err(problems) = verify_exactly_once(&state, &expected, &stack.site) {
        panic!("{}", describe_violations(&problems, ""));
    }
    stack.ensure_all_running().expect("no process died");
}
