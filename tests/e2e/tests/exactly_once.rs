//! Ten thousand counts through the real chain — mosquitto, agent, relay, Odoo simulator, each its
//! own process — reach Odoo exactly once and in order.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use scanbridge_e2e::checks::{describe_violations, verify_exactly_once};
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::stack::{plan_counts, publish_plan, Catalog, Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_scans_reach_odoo_exactly_once() {
    let dir = StateDir::temp("exactly-once").expect("state dir");
    let mut stack = Stack::start(dir, &StackOptions::default())
        .await
        .expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 1, 200, 5, "WH-E2E")
        .await
        .expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ca9_b41d);
    let (plan, expected) = plan_counts(&catalog, 10_000, &mut rng);

    let started = Instant::now();
    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-e2e")
        .await
        .expect("publisher");
    publish_plan(&mut publisher, "SC-01", &plan, None)
        .await
        .expect("publish");
    let state = stack
        .fence_and_wait(
            &mut publisher,
            "SC-01",
            &catalog,
            &expected,
            Duration::from_secs(120),
        )
        .await
        .expect("stream applied");
    let elapsed = started.elapsed();

    match verify_exactly_once(&state, &expected, &stack.site) {
        Ok(summary) => eprintln!(
            "10,000 counts applied exactly once in {:.1} s: {summary:?}, {} Odoo RPCs",
            elapsed.as_secs_f64(),
            state.rpc_total
        ),
        Err(problems) => panic!("{}", describe_violations(&problems, "")),
    }
    stack.ensure_all_running().expect("no process died");
}
