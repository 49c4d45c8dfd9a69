//! The API end to end over real HTTP on 127.0.0.1, against SQLite and (when
//! `STRATUS_TEST_POSTGRES` names a server, as `.ci/run` does) PostgreSQL.

use serde_json::{json, Value};

mod common;
use common::{start, ADMIN};

const WORKLOADS: &str = r#"
training:
  - name: ft
    chips: 64
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 6400
inference:
  - name: chat
    model: m
    replica: {H100: {chips: 8, rps: 10}}
    images: {cuda: "img"}
    demand: [{from: "aws:us-east-1", rps: 30}]
    latency_slo_ms: 150
"#;

fn names(v: &Value) -> Vec<String> {
    v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect()
}

fn exercise(s: &common::Server) {
    // Health and the API document need no token; everything else does.
    assert_eq!(s.call("GET", "/healthz", None, None).0, 200);
    assert_eq!(s.call("GET", "/readyz", None, None).0, 200);
    let (code, doc) = s.call("GET", "/openapi.json", None, None);
    assert_eq!(code, 200);
    assert!(doc["paths"]["/v1/workloads"]["post"].is_object());
    assert_eq!(s.call("GET", "/v1/workloads", None, None).0, 401);
    assert_eq!(s.call("GET", "/v1/workloads", Some("wrong"), None).0, 401);

    // Tokens with roles: the admin makes a viewer and an operator.
    let mk = |role: &str| {
        let (code, v) = s.call(
            "POST",
            "/v1/tokens",
            Some(ADMIN),
            Some((
                "application/json",
                json!({"name": role, "role": role}).to_string().as_bytes(),
            )),
        );
        assert_eq!(code, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    let viewer = mk("viewer");
    let operator = mk("operator");
    let (code, v) = s.call(
        "POST",
        "/v1/tokens",
        Some(&operator),
        Some(("application/json", br#"{"name":"x","role":"admin"}"#)),
    );
    assert_eq!(code, 403, "{v}");

    // The fleet, in the fleet file format.
    let (code, f) = s.call("GET", "/v1/fleet", Some(&viewer), None);
    assert_eq!(code, 200);
    let back: stratus_model::Fleet = serde_json::from_value(f).unwrap();
    assert_eq!(back.pool_count(), stratus_catalog::builtin().pool_count());

    // A viewer reads but cannot apply.
    assert_eq!(s.call("GET", "/v1/workloads", Some(&viewer), None).0, 200);
    let (code, _) = s.call(
        "POST",
        "/v1/workloads",
        Some(&viewer),
        Some(("application/yaml", WORKLOADS.as_bytes())),
    );
    assert_eq!(code, 403);

    // An operator applies; a second identical apply changes nothing.
    let (code, v) = s.call(
        "POST",
        "/v1/workloads",
        Some(&operator),
        Some(("application/yaml", WORKLOADS.as_bytes())),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["applied"][0]["result"], "created");
    let (_, v) = s.call(
        "POST",
        "/v1/workloads",
        Some(&operator),
        Some(("application/yaml", WORKLOADS.as_bytes())),
    );
    assert_eq!(v["applied"][0]["result"], "unchanged");
    let (_, list) = s.call("GET", "/v1/workloads", Some(&viewer), None);
    assert_eq!(names(&list), vec!["chat", "ft"]);

    // Bad input: a 4xx naming line and field, and nothing stored changes.
    let bad: [(&str, &[u8], &str); 5] = [
        ("application/yaml", b"training:\n  - name: x\n    chips: [1\n", "request body"),
        ("application/yaml", b"training:\n  - name: x\n    chips: 8\n    colour: red\n", "colour"),
        ("application/yaml", b"training:\n  - name: x\n    chips: eight\n", "chips"),
        ("application/json", br#"{"training": [{"name": "ft", "chips": 8, "accelerators": ["H999"]}]}"#, "H999"),
        ("application/yaml", b"inference:\n  - name: chat\n    model: m\n    replica: {H100: {chips: 8, rps: 10}}\n    images: {cuda: i}\n    demand: [{from: \"nowhere:x\", rps: 3}]\n    latency_slo_ms: 100\n", "nowhere"),
    ];
    for (ct, body, needle) in bad {
        let (code, v) = s.call("POST", "/v1/workloads", Some(&operator), Some((ct, body)));
        assert_eq!(code, 400, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
    }
    let big = vec![b'#'; stratus_server::api::MAX_BODY_BYTES + 10];
    assert_eq!(
        s.call(
            "POST",
            "/v1/workloads",
            Some(&operator),
            Some(("application/yaml", &big))
        )
        .0,
        413
    );
    let (_, after) = s.call("GET", "/v1/workloads", Some(&viewer), None);
    assert_eq!(after, list, "bad input changed nothing");

    // The reconcile loop plans and launches; history, diff and the actions log show it.
    s.reconcile();
    let (code, plan) = s.call("GET", "/v1/plan", Some(&viewer), None);
    assert_eq!(code, 200, "{plan}");
    assert!(plan["placed"].as_i64().unwrap() >= 2, "{plan}");
    let id = plan["id"].as_i64().unwrap();
    let (code, diff) = s.call("GET", &format!("/v1/plans/{id}/diff"), Some(&viewer), None);
    assert_eq!(code, 200);
    assert!(
        diff["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["unit"] == "ft"),
        "{diff}"
    );
    let (_, acts) = s.call("GET", "/v1/actions", Some(&viewer), None);
    let launches: Vec<&Value> = acts["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "launch")
        .collect();
    assert!(launches.len() >= 2, "{acts}");
    // A steady state launches nothing more.
    s.reconcile();
    let (_, again) = s.call("GET", "/v1/actions", Some(&viewer), None);
    assert_eq!(
        again["actions"].as_array().unwrap().len(),
        acts["actions"].as_array().unwrap().len()
    );
    let (code, st) = s.call("GET", "/v1/status", Some(&viewer), None);
    assert_eq!(code, 200);
    assert_eq!(st["workloads"], 2);

    // What ran is billed: usage records and the FOCUS file, valid by the column rules.
    assert_eq!(s.call("GET", "/v1/ledger/focus.csv", None, None).0, 401);
    let (code, usage) = s.call("GET", "/v1/usage", Some(&viewer), None);
    assert_eq!(code, 200);
    let usage = usage.as_str().unwrap().to_string();
    assert!(usage.lines().count() >= 2, "{usage}");
    let (code, csv) = s.call("GET", "/v1/ledger/focus.csv", Some(&viewer), None);
    assert_eq!(code, 200);
    let csv = csv.as_str().unwrap().to_string();
    assert!(csv.lines().count() >= 3, "{csv}");
    let v = stratus_ledger::check::check_csv(&csv);
    assert!(v.is_empty(), "{v:#?}");
    // The money page's summary bills the same usage: same rows, same total.
    let (code, sum) = s.call("GET", "/v1/ledger/summary", Some(&viewer), None);
    assert_eq!(code, 200, "{sum}");
    // BilledCost is FOCUS's first column, a plain decimal.
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("BilledCost,"));
    let (mut rows, mut billed) = (0u64, 0.0f64);
    for l in lines {
        rows += 1;
        billed += l.split(',').next().unwrap().parse::<f64>().unwrap();
    }
    assert_eq!(sum["live"]["rows"], rows, "{sum}");
    let live = sum["live"]["billed_usd"].as_f64().unwrap();
    assert!(
        (live - billed).abs() <= 1e-6 * billed.max(1.0),
        "{live} vs {billed}"
    );
    let (_, plan) = s.call("GET", "/v1/plan", Some(&viewer), None);
    assert_eq!(
        sum["power_mw"], plan["plan"]["summary"]["power_mw"],
        "{sum}"
    );

    // Delete stops the unit at the next reconcile.
    assert_eq!(
        s.call("DELETE", "/v1/workloads/ft", Some(&viewer), None).0,
        403
    );
    assert_eq!(
        s.call("DELETE", "/v1/workloads/ft", Some(&operator), None)
            .0,
        204
    );
    assert_eq!(
        s.call("DELETE", "/v1/workloads/ft", Some(&operator), None)
            .0,
        404
    );
    s.reconcile();
    let (_, acts) = s.call("GET", "/v1/actions", Some(&viewer), None);
    assert!(
        acts["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "stop" && a["unit"] == "ft"),
        "{acts}"
    );
    let metrics = s.call("GET", "/metrics", None, None).1;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("stratus_workloads 1") && text.contains("stratus_controller_launches_total"),
        "{text}"
    );
}

#[test]
fn api_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("stratus-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/api.db", dir.display());
    let s = start(&db);
    exercise(&s);
    drop(s);
    // Everything survives a restart on the same file.
    let s = start(&db);
    let (code, v) = s.call("GET", "/v1/workloads", Some(ADMIN), None);
    assert_eq!(code, 200);
    assert_eq!(names(&v), vec!["chat"]);
    let (_, plans) = s.call("GET", "/v1/plans", Some(ADMIN), None);
    assert!(plans["plans"].as_array().unwrap().len() >= 2, "{plans}");
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn api_on_postgres() {
    let Ok(url) = std::env::var("STRATUS_TEST_POSTGRES") else {
        eprintln!("STRATUS_TEST_POSTGRES not set: .ci/run starts PostgreSQL and sets it");
        return;
    };
    // A fresh database per run.
    let db = format!("stratus_test_{}", std::process::id());
    let admin = std::process::Command::new("psql")
        .args([&url, "-c", &format!("CREATE DATABASE {db}")])
        .output()
        .expect("psql");
    assert!(
        admin.status.success(),
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
    let s = start(&format!("{base}/{db}"));
    exercise(&s);
    drop(s);
    let _ = std::process::Command::new("psql")
        .args([&url, "-c", &format!("DROP DATABASE {db} WITH (FORCE)")])
        .output();
}
