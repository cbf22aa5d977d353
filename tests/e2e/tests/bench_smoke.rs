//! The benchmark program runs end to end on tiny sizes (`scanbridge-bench --smoke`): every phase
//! still checks that every event arrived (exactly once where Odoo is involved) and the table holds
//! a row for each figure. Correctness only: no speed is asserted here.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use scanbridge_e2e::bins;

#[test]
fn the_bench_smoke_run_measures_every_figure_and_prints_one_table() {
    let bench = bins::binary("scanbridge-bench").unwrap();
    let out = Command::new(&bench)
        .arg("--smoke")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scanbridge-bench --smoke failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| (")).collect();
    for figure in ["(1)", "(2)", "(3)", "(4)", "(5)", "(6)"] {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("| {figure}"))),
            "no row for figure {figure}:\n{stdout}"
        );
    }
    // Every row has the seven columns and a number in min / median / max.
    for r in &rows {
        let cells: Vec<&str> = r.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 7, "{r}");
        for c in &cells[4..] {
            assert!(c.trim().parse::<f64>().is_ok_and(f64::is_finite), "{r}");
        }
    }
}
