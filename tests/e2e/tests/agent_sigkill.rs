//! The agent killed with SIGKILL at random moments while scans stream in loses nothing and
//! duplicates nothing: the broker keeps what the agent has not acknowledged, the agent
//! acknowledges only what it committed, and the relay applies each (site, seq) once.
//!
//! Short variant (CI): 20+ kills over 6,000 scans. `SCANBRIDGE_LONG=1`: 120+ kills over 40,000.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use scanbridge_e2e::checks::{describe_violations, verify_exactly_once};
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::stack::{plan_counts, publish_plan, Catalog, Stack, StackOptions};

use scanbridge_e2e::long_variant as long;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_with_sigkill_mid_stream_loses_and_duplicates_nothing() {
    let dir = StateDir::temp("agent-sigkill").expect("state dir");
    let mut stack = Stack::start(dir, &StackOptions::default())
        .await
        .expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 2, 200, 5, "WH-KILL")
        .await
        .expect("seed");
    let seed: u64 = rand::random();
    eprintln!("kill schedule seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (min_kills, n) = if long() { (120, 40_000) } else { (20, 6_000) };
    let (plan, expected) = plan_counts(&catalog, n, &mut rng);

    let started = Instant::now();
    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-kill")
        .await
        .expect("publisher");
    // About 1,000 scans/s, so the stream lasts about as long as twenty kills take.
    let publishing = tokio::spawn(async move {
        publish_plan(&mut publisher, "SC-01", &plan, Some(1_000))
            .await
            .map(|()| publisher)
    });

    let mut kills = 0u32;
    while !publishing.is_finished() || kills < min_kills {
        let pause = rng.gen_range(50..=400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        stack.agent.kill_hard().expect("SIGKILL the agent");
        kills += 1;
        stack.agent.restart().expect("restart the agent");
    }
    let mut publisher = publishing
        .await
        .expect("publisher task")
        .expect("publish the scans");
    eprintln!(
        "{kills} SIGKILLs while publishing, {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let state = stack
        .fence_and_wait(
            &mut publisher,
            "SC-01",
            &catalog,
            &expected,
            Duration::from_secs(if long() { 600 } else { 120 }),
        )
        .await
        .expect("stream applied after the last restart");

    assert!(kills >= min_kills);
    assert_eq!(stack.agent.starts(), kills + 1);
    match verify_exactly_once(&state, &expected, &stack.site) {
        Ok(summary) => eprintln!(
            "{n} counts with {kills} agent SIGKILLs applied exactly once in {:.1} s: {summary:?}",
            started.elapsed().as_secs_f64()
        ),
        Err(problems) => panic!(
            "{}",
            describe_violations(&problems, &format!("after {kills} SIGKILLs (seed {seed})"))
        ),
    }
    stack.ensure_all_running().expect("no process died");
}
