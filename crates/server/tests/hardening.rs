//! What issue 15's audit found in the API, each pinned by a test named after the failure.

mod common;
use common::{start, ADMIN};
use serde_json::{json, Value};

fn db(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("stratus-hard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/s.db", dir.display());
    (dir, url)
}

/// Item 1: `min_regions: 200000000` was accepted, the planner's allocation aborted the
/// process, and every restart aborted again since the workload was stored.
#[test]
fn an_impossible_redundancy_is_refused_and_a_stored_one_never_stops_the_service() {
    let (dir, url) = db("redundancy");
    let s = start(&url);
    let body = "inference:\n  - name: chat\n    model: m\n    replica: {H100: {chips: 8, rps: 10}}\n    images: {cuda: i}\n    demand: [{from: \"aws:us-east-1\", rps: 30}]\n    latency_slo_ms: 150\n    min_regions: 200000000\n";
    let (code, v) = s.call(
        "POST",
        "/v1/workloads",
        Some(ADMIN),
        Some(("application/yaml", body.as_bytes())),
    );
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["field"], "inference[0].min_regions", "{v}");
    assert_eq!(v["line"], 8, "{v}");
    // An older version stored one: it is listed with why, and everything else runs.
    let bad = json!({"name": "chat", "model": "m", "replica": {"H100": {"chips": 8, "rps": 10}},
        "images": {"cuda": "i"}, "demand": [{"from": "aws:us-east-1", "rps": 30}],
        "latency_slo_ms": 150, "min_regions": 200000000});
    let ok = json!({"name": "ft", "chips": 8, "accelerators": ["H100"], "images": {"cuda": "i"},
        "work_chip_hours": 10});
    s.rt.block_on(s.app.store.apply(
        &[
            ("chat".into(), "inference".into(), bad),
            ("ft".into(), "training".into(), ok),
        ],
        0,
    ))
    .unwrap();
    s.reconcile();
    s.reconcile();
    let (code, st) = s.call("GET", "/v1/status", Some(ADMIN), None);
    assert_eq!(code, 200, "{st}");
    let why = st["unplaced"]["chat"].as_str().unwrap_or_default();
    assert!(why.contains("min_regions"), "{st}");
    assert!(st["controller"]["launches"].as_u64().unwrap() >= 1, "{st}");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 2: `.nan` in `checkpoint_minutes` was stored as null while the API answered
/// "created"; names with `@` or `#` collided with other workloads' unit keys.
#[test]
fn nan_times_and_names_outside_the_grammar_are_refused_everywhere() {
    let (dir, url) = db("names");
    let s = start(&url);
    let job = |name: &str, extra: &str| {
        format!(
            "training:\n  - name: {name}\n    chips: 8\n    accelerators: [H100]\n    images: {{cuda: i}}\n    work_chip_hours: 10\n{extra}"
        )
    };
    for (body, field) in [
        (
            job("ft", "    checkpoint_minutes: .nan\n"),
            "training[0].checkpoint_minutes",
        ),
        (
            job("ft", "    deadline_hours: .inf\n"),
            "training[0].deadline_hours",
        ),
        (job("\"ft@aws:us-east-1\"", ""), "training[0].name"),
        (job("\"ft#1\"", ""), "training[0].name"),
    ] {
        let (code, v) = s.call(
            "POST",
            "/v1/workloads",
            Some(ADMIN),
            Some(("application/yaml", body.as_bytes())),
        );
        assert_eq!(code, 400, "{body}: {v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let (code, list) = s.call("GET", "/v1/workloads", Some(ADMIN), None);
    assert_eq!(code, 200);
    assert_eq!(list["workloads"], Value::Array(vec![]), "nothing stored");
    for path in [
        "/v1/workloads/Chat",
        "/v1/workloads/a%40b",
        "/v1/workloads/a%23b",
    ] {
        let (code, v) = s.call("GET", path, Some(ADMIN), None);
        assert_eq!(code, 400, "{path}: {v}");
        let (code, v) = s.call("DELETE", path, Some(ADMIN), None);
        assert_eq!(code, 400, "{path}: {v}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
