//! Memory probe: applies `N` inventory counts through the simulator's library the way the relay
//! does (`stock.quant.load` of 500 rows with external ids in inventory mode, then
//! `action_apply_inventory` with a TAG), dumping `/__sim/state` every `DUMP_EVERY` chunks like
//! the e2e harness polls it, and prints resident memory (VmRSS / VmHWM from `/proc/self/status`)
//! and bytes per applied move.
//!
//!     cargo run --release -p scanbridge-odoo-sim --example mem_probe -- 50000 [DUMP_EVERY]

use std::time::Instant;

use scanbridge_odoo_sim::{control, OdooVersion, Sim, SimConfig};
use serde_json::{json, Map, Value};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn kwargs(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let dump_every: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let sim = Sim::new(SimConfig {
        version: OdooVersion::V17,
        db_name: "scanbridge".into(),
        login: "scanbridge".into(),
        api_key: "k".into(),
        user_name: "Administrator".into(),
    })?;
    let products: Vec<Value> = (0..200)
        .map(|i| json!({"barcode": format!("2000{i:08}"), "name": format!("P{i}")}))
        .collect();
    let locations: Vec<Value> = (0..5)
        .map(|i| json!({"barcode": format!("WH-SCN-A{i:02}"), "name": format!("A{i:02}")}))
        .collect();
    let seeded = control::seed(
        &sim,
        json!({"products": products, "locations": locations})
            .to_string()
            .as_bytes(),
    )?;
    let pids: Vec<i64> = seeded["products"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let lids: Vec<i64> = seeded["locations"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let pairs: Vec<(i64, i64)> = pids
        .iter()
        .flat_map(|p| lids.iter().map(move |l| (*p, *l)))
        .collect();
    // The e2e plan: rounds over every (product, location) pair in a shuffled order, each
    // count one more than the pair's previous one; chunks of at most 500 cut before a pair
    // repeats (the relay's `chunk_len`).
    let mut plan: Vec<(usize, f64)> = Vec::with_capacity(n);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut counts = vec![0.0f64; pairs.len()];
    while plan.len() < n {
        for i in (1..order.len()).rev() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (rng >> 33) as usize % (i + 1));
        }
        for &i in &order {
            if plan.len() == n {
                break;
            }
            counts[i] += 1.0;
            plan.push((i, counts[i]));
        }
    }
    let rss0 = status_kib("VmRSS:");
    let started = Instant::now();
    let mut seq = 0usize;
    let mut chunk_no = 0usize;
    while seq < n {
        let mut seen = std::collections::HashSet::new();
        let len = plan[seq..]
            .iter()
            .take(500)
            .take_while(|(pair, _)| seen.insert(*pair))
            .count();
        let first = seq + 1;
        let rows: Vec<Value> = (0..len)
            .map(|i| {
                let s = first + i;
                let (pair, qty) = plan[s - 1];
                let (p, l) = pairs[pair];
                json!([format!("scanbridge.SC-01_{s}"), p, l, qty])
            })
            .collect();
        let load = sim.execute_kw(
            2,
            "stock.quant",
            "load",
            vec![
                json!([
                    "id",
                    "product_id/.id",
                    "location_id/.id",
                    "inventory_quantity"
                ]),
                Value::Array(rows),
            ],
            kwargs(json!({"context": {"inventory_mode": true}})),
        )?;
        let mut ids: Vec<i64> = load
            .as_ref()
            .and_then(|v| v["ids"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        anyhow::ensure!(ids.len() == len, "load refused: {load:?}");
        ids.sort_unstable();
        ids.dedup();
        sim.execute_kw(
            2,
            "stock.quant",
            "write",
            vec![json!(ids), json!({"inventory_quantity_set": true})],
            kwargs(json!({"context": {"inventory_mode": true}})),
        )?;
        let tag = format!("scanbridge:SC-01:{first}-{}", first + len - 1);
        sim.execute_kw(
            2,
            "stock.quant",
            "action_apply_inventory",
            vec![json!(ids)],
            kwargs(json!({"context": {"inventory_mode": true, "inventory_name": tag}})),
        )?;
        seq += len;
        chunk_no += 1;
        if dump_every > 0 && chunk_no % dump_every == 0 {
            let body = control::state_json(&sim)?;
            drop(body);
        }
    }
    let rss1 = status_kib("VmRSS:");
    let hwm = status_kib("VmHWM:");
    let moves = sim.read(|db| db.all_ids("stock.move").len());
    // Every count is one more than the pair's previous one: every move is +1 out of the
    // inventory adjustment location, and each pair's quant holds its last count.
    let wrong = sim.read(|db| {
        db.all_ids("stock.move")
            .into_iter()
            .filter(|m| {
                (db.float("stock.move", *m, "product_uom_qty") - 1.0).abs() > 1e-9
                    || db.str("stock.move", *m, "state") != "done"
            })
            .count()
    });
    let quants_ok = sim.read(|db| {
        pairs.iter().enumerate().all(|(i, (p, l))| {
            let q = db.quants_by_key((Some(*p), Some(*l), None));
            q.len() == 1 && (db.float("stock.quant", q[0], "quantity") - counts[i]).abs() < 1e-9
        })
    });
    println!("moves not +1/done: {wrong}; every pair's quant at its last count: {quants_ok}");
    println!(
        "counts {n}, moves {moves}, {:.1} s, VmRSS {rss0} -> {rss1} KiB, VmHWM {hwm} KiB, \
         {:.0} bytes/move (RSS growth), {:.0} bytes/move (HWM)",
        started.elapsed().as_secs_f64(),
        (rss1.saturating_sub(rss0) * 1024) as f64 / moves.max(1) as f64,
        (hwm.saturating_sub(rss0) * 1024) as f64 / moves.max(1) as f64,
    );
    Ok(())
}
