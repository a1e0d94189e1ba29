//! Runs the independent KPI oracle (`tests/oracle/oracle.py`) over what a test saw; shared by
//! the processor's and the end-to-end tests (`#[path]`-included by both).

use std::path::{Path, PathBuf};

use kpiflow_schemas::Event;

/// The oracle script, from either crate's manifest directory.
fn script() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("tests/oracle/oracle.py"),
        here.join("../tests/oracle/oracle.py"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("tests/oracle/oracle.py exists")
}

/// Compares `updates` (KPI update JSON, one per item, in publishing order) with the oracle's
/// recomputation over `events` minus the ids in `refused`, for `kpis` (empty: all it knows).
/// Prints the oracle's report and fails the test on any difference.
pub(crate) fn assert_oracle_agrees_with(
    events: &[Event],
    updates: impl IntoIterator<Item = Vec<u8>>,
    refused: &[String],
    kpis: &[String],
) {
    let work = tempfile::tempdir().unwrap();
    let lines = |items: &mut dyn Iterator<Item = Vec<u8>>| -> Vec<u8> {
        let mut out = Vec::new();
        for mut item in items {
            out.append(&mut item);
            out.push(b'\n');
        }
        out
    };
    let path = |name: &str| work.path().join(name);
    std::fs::write(
        path("events.jsonl"),
        lines(&mut events.iter().map(Event::to_json)),
    )
    .unwrap();
    std::fs::write(path("updates.jsonl"), lines(&mut updates.into_iter())).unwrap();
    std::fs::write(path("refused.txt"), refused.join("\n")).unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script())
        .arg("--events")
        .arg(path("events.jsonl"))
        .arg("--updates")
        .arg(path("updates.jsonl"))
        .arg("--refused")
        .arg(path("refused.txt"));
    if !kpis.is_empty() {
        cmd.args(["--kpis", &kpis.join(",")]);
    }
    let out = cmd.output().expect("python3 runs the oracle");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("oracle:\n{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the oracle disagrees with the stream:\n{report}"
    );
}
