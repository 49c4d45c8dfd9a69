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

/// Item 5: a request head left unfinished held its connection open (75 s in the audit).
#[test]
fn a_request_head_left_unfinished_is_dropped() {
    use std::io::{Read, Write};
    let (dir, url) = db("slow");
    let s = common::start_with(
        &url,
        stratus_server::Limits {
            header_timeout: std::time::Duration::from_millis(200),
            ..stratus_server::Limits::default()
        },
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /v1/workloads HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    // The server ends the connection by itself (the read timeout only bounds a broken test).
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut buf = Vec::new();
    let r = c.read_to_end(&mut buf);
    assert!(r.is_ok(), "the connection was held open: {r:?}");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 5: nothing capped the connections a client could hold.
#[test]
fn connections_past_the_cap_are_answered_503() {
    use std::io::{Read, Write};
    let (dir, url) = db("cap");
    let s = common::start_with(
        &url,
        stratus_server::Limits {
            max_connections: 2,
            ..stratus_server::Limits::default()
        },
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    let _a = std::net::TcpStream::connect(&addr).unwrap();
    let _b = std::net::TcpStream::connect(&addr).unwrap();
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries < 1000, "the third connection was served");
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        if &head == b"HTTP/1.1 503" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 7: the page sent no CSP, frame or nosniff headers.
#[test]
fn the_page_and_the_api_send_security_headers() {
    let (dir, url) = db("headers");
    let s = common::start(&url);
    for path in ["/", "/ui/app.js", "/healthz", "/v1/workloads"] {
        let r = common::agent()
            .get(&format!("{}{path}", s.base))
            .call()
            .unwrap();
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
    }
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
