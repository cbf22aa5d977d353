//! The relay's exactly-once guarantee against Odoo when the relay itself dies or Odoo's answer is
//! lost: every count still reaches Odoo exactly once and in order. Both faults leave a chunk "in
//! doubt" (applied in Odoo, or not, the relay cannot know) and exercise the relay's
//! `search_count` on the chunk tag before it re-applies anything.
//!
//! The relay SIGKILL loop has a long variant: `SCANBRIDGE_LONG=1` (100+ kills over 30,000 scans).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use scanbridge_e2e::checks::{describe_violations, verify_exactly_once};
use scanbridge_e2e::odoo_sim::Faults;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::stack::{
    plan_counts, publish_plan, Catalog, PlannedCount, Stack, StackOptions,
};

use scanbridge_e2e::long_variant as long;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_with_sigkill_mid_stream_applies_every_count_exactly_once() {
    let dir = StateDir::temp("relay-sigkill").expect("state dir");
    let mut stack = Stack::start(dir, &StackOptions::default())
        .await
        .expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 4, 100, 5, "WH-RK")
        .await
        .expect("seed");
    let seed: u64 = rand::random();
    eprintln!("relay kill schedule seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (min_kills, n) = if long() { (100, 30_000) } else { (8, 3_000) };
    let (plan, expected) = plan_counts(&catalog, n, &mut rng);

    let started = Instant::now();
    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-relay-kill")
        .await
        .expect("publisher");
    let publishing = tokio::spawn(async move {
        publish_plan(&mut publisher, "SC-01", &plan, Some(1_000))
            .await
            .map(|()| publisher)
    });
    let mut kills = 0;
    while !publishing.is_finished() || kills < min_kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..=500))).await;
        stack
            .relay
            .kill_and_restart("info")
            .await
            .expect("SIGKILL and restart the relay");
        kills += 1;
    }
    let mut publisher = publishing.await.expect("task").expect("publish");
    eprintln!(
        "{kills} relay SIGKILLs while publishing, {:.1} s",
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
        .expect("stream applied after the last relay restart");
    match verify_exactly_once(&state, &expected, &stack.site) {
        Ok(summary) => eprintln!(
            "{n} counts with {kills} relay SIGKILLs applied exactly once in {:.1} s: {summary:?}",
            started.elapsed().as_secs_f64()
        ),
        Err(problems) => panic!(
            "{}",
            describe_violations(
                &problems,
                &format!("after {kills} relay SIGKILLs (seed {seed})")
            )
        ),
    }
    assert!(kills >= min_kills);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_after_odoo_committed_a_load_neither_loses_nor_repeats_the_chunk() {
    let dir = StateDir::temp("lost-load").expect("state dir");
    let mut stack = Stack::start(dir, &StackOptions::default())
        .await
        .expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 7, 20, 2, "WH-LL")
        .await
        .expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x10ad);
    // Two passes over the 40 pairs: the first warms the relay (ids cached, nothing in doubt).
    let (plan, expected) = plan_counts(&catalog, 80, &mut rng);
    let (first, second) = plan.split_at(40);
    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-lost-load")
        .await
        .expect("publisher");
    publish_plan(&mut publisher, "SC-01", first, None)
        .await
        .expect("publish first pass");
    // The fence product too, so the relay has every barcode of the second pass cached.
    let (fence_code, fence_id) = catalog.fence_product.clone();
    let (loc_code, loc_id) = catalog.locations[0].clone();
    let warm_fence = PlannedCount {
        product_code: fence_code,
        location_code: loc_code,
        pair: (fence_id, loc_id),
        qty: 1,
    };
    publish_plan(&mut publisher, "SC-01", &[warm_fence], None)
        .await
        .expect("publish fence warm-up");
    let mut pairs: Vec<_> = first.iter().map(|c| c.pair).collect();
    pairs.push((fence_id, loc_id));
    stack
        .wait_for_state(
            Duration::from_secs(60),
            "the first pass to be applied",
            |s| {
                pairs
                    .iter()
                    .all(|&(p, l)| s.quant(p, l).is_some_and(|q| q.quantity == 1.0))
            },
            |s| format!("{} moves", s.moves.len()),
        )
        .await
        .expect("first pass applied");

    // The relay's next Odoo call is the second pass's `load`: Odoo commits it, the answer is lost.
    stack
        .sim
        .faults(&Faults {
            drop_after_commit_next: Some(1),
            ..Faults::default()
        })
        .await
        .expect("set fault");
    publish_plan(&mut publisher, "SC-01", second, None)
        .await
        .expect("publish second pass");
    let state = stack
        .fence_and_wait(
            &mut publisher,
            "SC-01",
            &catalog,
            &expected,
            Duration::from_secs(90),
        )
        .await
        .expect("second pass applied after the lost answer");
    eprintln!("Odoo calls: {:?}", state.calls);
    if let Err(problems) = verify_exactly_once(&state, &expected, &stack.site) {
        panic!(
            "{}",
            describe_violations(&problems, "after one lost answer to a committed load")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_answers_lost_after_commit_do_not_apply_a_count_twice() {
    let dir = StateDir::temp("lost-answers").expect("state dir");
    let mut stack = Stack::start(dir, &StackOptions::default())
        .await
        .expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 5, 100, 5, "WH-LA")
        .await
        .expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1057);
    let (plan, expected) = plan_counts(&catalog, 3_000, &mut rng);

    let started = Instant::now();
    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-lost-answers")
        .await
        .expect("publisher");
    let publishing = tokio::spawn(async move {
        publish_plan(&mut publisher, "SC-01", &plan, Some(1_000))
            .await
            .map(|()| publisher)
    });
    // While the stream flows, over and over: the next Odoo call commits, then its connection is
    // closed without an answer — the relay cannot tell whether that load or apply took effect.
    let mut injected = 0;
    while !publishing.is_finished() || injected < 20 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..=300))).await;
        stack
            .sim
            .faults(&Faults {
                drop_after_commit_next: Some(1),
                ..Faults::default()
            })
            .await
            .expect("set fault");
        injected += 1;
    }
    let mut publisher = publishing.await.expect("task").expect("publish");
    let state = stack
        .fence_and_wait(
            &mut publisher,
            "SC-01",
            &catalog,
            &expected,
            Duration::from_secs(120),
        )
        .await
        .expect("stream applied despite lost answers");
    eprintln!(
        "{injected} lost answers injected over {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Err(problems) = verify_exactly_once(&state, &expected, &stack.site) {
        panic!(
            "{}",
            describe_violations(&problems, &format!("with {injected} lost Odoo answers"))
        );
    }
}
