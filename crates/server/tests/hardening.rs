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

fn json_body(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Item 7: tokens could not be listed or revoked.
#[test]
fn tokens_are_listed_and_revoked_and_the_last_admin_is_kept() {
    let (dir, url) = db("tokens");
    let s = start(&url);
    let (code, v) = s.call(
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some((
            "application/json",
            &json_body(&json!({"name": "ci", "role": "viewer"})),
        )),
    );
    assert_eq!(code, 200, "{v}");
    let viewer = v["token"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(s.call("GET", "/v1/workloads", Some(&viewer), None).0, 200);
    // Listed without values; only admins may list.
    assert_eq!(s.call("GET", "/v1/tokens", Some(&viewer), None).0, 403);
    let (code, list) = s.call("GET", "/v1/tokens", Some(ADMIN), None);
    assert_eq!(code, 200, "{list}");
    let text = list.to_string();
    assert!(!text.contains(&viewer) && !text.contains(ADMIN), "{text}");
    let names: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(
        names.contains(&"ci") && names.contains(&"bootstrap-admin"),
        "{list}"
    );
    // Revoked: the token stops working at once.
    assert_eq!(
        s.call("DELETE", &format!("/v1/tokens/{id}"), Some(ADMIN), None)
            .0,
        204
    );
    assert_eq!(s.call("GET", "/v1/workloads", Some(&viewer), None).0, 401);
    assert_eq!(
        s.call("DELETE", &format!("/v1/tokens/{id}"), Some(ADMIN), None)
            .0,
        404
    );
    // The last admin token stays.
    let admin_id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bootstrap-admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = s.call(
        "DELETE",
        &format!("/v1/tokens/{admin_id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(code, 409, "{v}");
    assert_eq!(s.call("GET", "/v1/tokens", Some(ADMIN), None).0, 200);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 7: a rotated admin token file left the old admin token valid; an empty token file
/// was accepted.
#[test]
fn a_rotated_admin_token_revokes_the_old_one_and_an_empty_one_is_refused() {
    let (dir, url) = db("rotate");
    let s = start(&url);
    assert_eq!(s.call("GET", "/v1/tokens", Some(ADMIN), None).0, 200);
    drop(s);
    let mut c = common::config(&url);
    c.admin_token = Some("a-brand-new-admin-token".into());
    let s = common::start_app(c, None, stratus_server::Limits::default());
    assert_eq!(s.call("GET", "/v1/tokens", Some(ADMIN), None).0, 401);
    assert_eq!(
        s.call("GET", "/v1/tokens", Some("a-brand-new-admin-token"), None)
            .0,
        200
    );
    drop(s);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for bad in ["", "   ", "short"] {
        let mut c = common::config(&url);
        c.admin_token = Some(bad.into());
        let e = rt
            .block_on(stratus_server::app(&c, stratus_catalog::builtin().clone()))
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert!(e.to_string().starts_with("admin token:"), "{e}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 7: there was no record of who changed what.
#[test]
fn every_write_through_the_api_is_audited() {
    let (dir, url) = db("audit");
    let s = start(&url);
    let (_, v) = s.call(
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some((
            "application/json",
            &json_body(&json!({"name": "ops", "role": "operator"})),
        )),
    );
    let ops = v["token"].as_str().unwrap().to_string();
    let job = "training:\n  - {name: ft, chips: 8, accelerators: [H100], images: {cuda: i}, work_chip_hours: 10}\n";
    assert_eq!(
        s.call(
            "POST",
            "/v1/workloads",
            Some(&ops),
            Some(("application/yaml", job.as_bytes()))
        )
        .0,
        200
    );
    assert_eq!(
        s.call("DELETE", "/v1/workloads/ft", Some(&ops), None).0,
        204
    );
    assert_eq!(
        s.call(
            "POST",
            "/v1/tokens",
            Some(&ops),
            Some(("application/json", b"{}"))
        )
        .0,
        403
    );
    assert_eq!(s.call("DELETE", "/v1/workloads/ft", None, None).0, 401);
    assert_eq!(s.call("GET", "/v1/audit", Some(&ops), None).0, 403);
    let (code, v) = s.call("GET", "/v1/audit", Some(ADMIN), None);
    assert_eq!(code, 200, "{v}");
    let rows: Vec<(String, String, String, i64, String)> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["who"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string(),
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_i64().unwrap(),
                r["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        (
            "bootstrap-admin",
            "POST",
            "/v1/tokens",
            200,
            "created token ops (operator,",
        ),
        ("ops", "POST", "/v1/workloads", 200, "applied ft created"),
        (
            "ops",
            "DELETE",
            "/v1/workloads/ft",
            204,
            "deleted workload ft",
        ),
        ("ops", "POST", "/v1/tokens", 403, ""),
        ("-", "DELETE", "/v1/workloads/ft", 401, ""),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:#?}");
    for (got, want) in rows.iter().zip(want) {
        assert_eq!(
            (got.0.as_str(), got.1.as_str(), got.2.as_str(), got.3),
            (want.0, want.1, want.2, want.3),
            "{rows:#?}"
        );
        assert!(got.4.starts_with(want.4), "{got:?}");
    }
    assert!(v["audit"][0]["at_ms"].as_i64().unwrap() > 0);
    assert!(!v.to_string().contains(&ops), "no token value in the log");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 7: symlinks under the reports directory were followed.
#[test]
fn symlinks_under_the_reports_directory_are_not_followed() {
    let (dir, url) = db("reports");
    let reports = dir.join("reports");
    let real = reports.join("run-a");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(
        real.join("metrics.json"),
        r#"{"scenario": "a", "policies": []}"#,
    )
    .unwrap();
    std::fs::write(real.join("report.md"), "# a\n").unwrap();
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("metrics.json"), r#"{"scenario": "secret"}"#).unwrap();
    std::fs::write(secret.join("report.md"), "secret\n").unwrap();
    std::os::unix::fs::symlink(&secret, reports.join("run-link")).unwrap();
    std::os::unix::fs::symlink(secret.join("report.md"), real.join("plot.svg")).unwrap();
    let mut c = common::config(&url);
    c.reports = Some(reports.clone());
    let s = common::start_app(c, None, stratus_server::Limits::default());
    let (code, v) = s.call("GET", "/v1/sim/reports", Some(ADMIN), None);
    assert_eq!(code, 200, "{v}");
    let names: Vec<&str> = v["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["run-a"], "{v}");
    assert_eq!(v["reports"][0]["plots"], json!([]), "{v}");
    assert_eq!(
        s.call("GET", "/v1/sim/reports/run-a/report.md", Some(ADMIN), None)
            .0,
        200
    );
    for path in [
        "/v1/sim/reports/run-link/report.md",
        "/v1/sim/reports/run-a/plot.svg",
    ] {
        let (code, body) = s.call("GET", path, Some(ADMIN), None);
        assert_eq!(code, 404, "{path}: {body}");
        assert!(!body.to_string().contains("secret"), "{path}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// A driver that panics while `panicking` is set.
struct Panicky {
    inner: stratus_control::SimProvider,
    panicking: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl stratus_control::Driver for Panicky {
    fn launch(
        &mut self,
        now: stratus_control::Time,
        r: &stratus_control::LaunchRequest,
    ) -> Result<(), stratus_control::DriverError> {
        self.inner.launch(now, r)
    }
    fn stop(
        &mut self,
        now: stratus_control::Time,
        t: &str,
    ) -> Result<(), stratus_control::DriverError> {
        self.inner.stop(now, t)
    }
    fn observe(&mut self, now: stratus_control::Time) -> stratus_control::Observation {
        assert!(
            !self.panicking.load(std::sync::atomic::Ordering::SeqCst),
            "a driver bug"
        );
        self.inner.observe(now)
    }
    fn capacity(
        &mut self,
        now: stratus_control::Time,
        p: &str,
    ) -> Result<stratus_control::PoolCapacity, stratus_control::DriverError> {
        self.inner.capacity(now, p)
    }
}

impl stratus_server::HostDriver for Panicky {
    fn driver(&mut self) -> &mut dyn stratus_control::Driver {
        self
    }
}

/// Item 7: a panic in the reconcile loop stopped it while /healthz and /readyz said ok.
#[test]
fn a_panic_in_the_reconcile_loop_is_recovered_from_and_shown_by_readyz() {
    let (dir, url) = db("panic");
    let panicking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let driver = Panicky {
        inner: stratus_control::SimProvider::new(stratus_catalog::builtin(), 0.0, 1.0),
        panicking: panicking.clone(),
    };
    let s = common::start_app(
        common::config(&url),
        Some(stratus_server::Backend::Custom(Box::new(driver))),
        stratus_server::Limits::default(),
    );
    s.rt.spawn(stratus_server::reconcile_loop(s.app.clone(), 0.05));
    let wait_for = |want: u16| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (code, body) = s.call("GET", "/readyz", None, None);
            if code == want {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "readyz stayed {code}: {body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let body = wait_for(503);
    assert!(body.to_string().contains("panic"), "{body}");
    let (_, st) = s.call("GET", "/v1/status", Some(ADMIN), None);
    assert!(
        st["reconcile_loop"]["panics"].as_u64().unwrap() >= 1,
        "{st}"
    );
    // The loop is still there: once the driver behaves, reconciles complete again.
    panicking.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for(200);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 7: a reconcile's state was written in three transactions, so a failure between them
/// kept actions without the usage they caused (or the reverse).
#[test]
fn a_reconcile_is_written_in_one_transaction() {
    let (dir, url) = db("tx");
    let s = start(&url);
    let job = |name: &str| {
        format!("training:\n  - {{name: {name}, chips: 8, accelerators: [H100], images: {{cuda: i}}, work_chip_hours: 10}}\n")
    };
    let apply = |name: &str| {
        let (code, v) = s.call(
            "POST",
            "/v1/workloads",
            Some(ADMIN),
            Some(("application/yaml", job(name).as_bytes())),
        );
        assert_eq!(code, 200, "{v}");
    };
    let actions = || {
        s.call("GET", "/v1/actions", Some(ADMIN), None).1["actions"]
            .as_array()
            .unwrap()
            .len()
    };
    apply("ft-a");
    s.reconcile();
    let before = actions();
    assert!(before >= 1);
    // The next reconcile launches ft-b (an action) and bills ft-a (usage); usage writes fail.
    apply("ft-b");
    let pool = s.rt.block_on(sqlx::SqlitePool::connect(&url)).unwrap();
    let trigger = "CREATE TRIGGER no_usage BEFORE INSERT ON usage BEGIN SELECT RAISE(ABORT, 'disk full'); END";
    s.rt.block_on(sqlx::query(trigger).execute(&pool)).unwrap();
    let r = s.rt.block_on(stratus_server::reconcile_once(&s.app));
    assert!(r.is_err(), "the write should have failed");
    assert_eq!(actions(), before, "actions written without their usage");
    s.rt.block_on(sqlx::query("DROP TRIGGER no_usage").execute(&pool))
        .unwrap();
    s.reconcile();
    let after = s.call("GET", "/v1/actions", Some(ADMIN), None).1;
    let launches_b = after["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "launch" && a["unit"] == "ft-b")
        .count();
    assert_eq!(
        launches_b, 1,
        "the failed reconcile's actions are written once: {after}"
    );
    let usage = s.call("GET", "/v1/usage", Some(ADMIN), None).1;
    assert!(usage.to_string().contains("ft-a"), "{usage}");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
