//! `waybill bench` end to end at a tiny scale (3 devices, 20 orders): every
//! scenario runs against a `waybill serve` child process and reports its figures.
//! No figure is compared with a target here; that is BENCHMARKS.md's job.

use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn every_scenario_runs_end_to_end_at_a_tiny_scale() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "bench",
            "--docs",
            "20",
            "--changed",
            "3",
            "--writers",
            "3",
            "--orders-per-writer",
            "2",
            "--changes-per-writer",
            "5",
            "--devices",
            "3",
            "--rounds",
            "2",
            "--idle",
            "3",
            "--json",
            "--timeout-secs",
            "120",
            "--work",
        ])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "waybill bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let seen: BTreeSet<(String, String)> = figures
        .iter()
        .map(|f| {
            (
                f["scenario"].as_str().unwrap().to_owned(),
                f["metric"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (scenario, metric) in [
        ("initial_sync", "wall_time"),
        ("initial_sync", "bytes_to_device"),
        ("reconnect", "round_trips"),
        ("reconnect", "bytes_per_change_byte"),
        ("ingest", "changes_per_s"),
        ("fanout", "p99"),
        ("idle_3", "relay_kib_per_device"),
    ] {
        assert!(
            seen.contains(&(scenario.to_owned(), metric.to_owned())),
            "no {scenario}/{metric} in {stdout}"
        );
    }
    for figure in &figures {
        assert!(figure["value"].as_f64().unwrap().is_finite(), "{figure}");
    }
}
