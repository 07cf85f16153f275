//! The `revpulse` binary: `generate` writes a data set, and `replay --output
//! json` prints every metric table of SPEC §4 in the documented shape;
//! `bench` and `bench --soak` run through.

use std::collections::BTreeSet;
use std::process::Command;

use revpulse_pipelines::row::Table;

#[test]
fn generate_then_replay_json_prints_every_table() {
    let bin = env!("CARGO_BIN_EXE_revpulse");
    let dir = std::env::temp_dir().join(format!("revpulse-cli-{}", std::process::id()));
    let out =
        Command::new(bin).args(["generate", "--events", "30000", "--out"]).arg(&dir).output().expect("generate runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out =
        Command::new(bin).arg("replay").arg(&dir).args(["--output", "json", "-w", "2"]).output().expect("replay runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut tables = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        let name = row["table"].as_str().expect("table field");
        let table = Table::from_name(name).expect("a SPEC §4 table");
        for (col, _) in table.key_columns().iter().chain(table.value_columns()) {
            assert!(row.get(*col).is_some(), "{name} row without {col}: {line}");
        }
        if let Some(day) = row.get("day").or(row.get("month")).and_then(|d| d.as_str()) {
            assert!(day.len() == 10 && day.as_bytes()[4] == b'-', "date as YYYY-MM-DD: {day}");
        }
        if let Some(minute) = row.get("minute").and_then(|d| d.as_str()) {
            assert!(
                minute.len() == 20 && minute.ends_with(":00Z") && minute.as_bytes()[10] == b'T',
                "minute: {minute}"
            );
        }
        tables.insert(table);
    }
    assert_eq!(tables, Table::METRICS.into_iter().collect::<BTreeSet<_>>(), "every metric table has rows");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `revpulse bench` runs every phase end to end on a small input and prints
/// each figure (the benchmark itself runs with --release; here it must only
/// keep working). `--soak` streams and finishes cleanly.
#[test]
fn bench_and_soak_run_every_phase() {
    let bin = env!("CARGO_BIN_EXE_revpulse");
    let out = Command::new(bin)
        .args(["bench", "--events", "3000", "--partitions", "2", "--tenants", "2", "--freshness-secs", "1"])
        .env_remove("REVPULSE_CONFIG")
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    for row in [
        "| replay (files → dataflow), 1 worker |",
        "| replay, 2 workers |",
        "| ceiling: Kafka consume + decode |",
        "| pipeline: Kafka → dataflow → ClickHouse |",
        "| pipeline, 2 workers |",
        "| pipeline / ceiling |",
        "| freshness at ",
        "| state: ",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
    let out = Command::new(bin)
        .args(["bench", "--soak", "2", "--soak-rate", "500", "--partitions", "2"])
        .env_remove("REVPULSE_CONFIG")
        .output()
        .expect("soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| elapsed s | event time | produced | consumed | RSS MiB |"), "{stdout}");
}
