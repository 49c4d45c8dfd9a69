//! The dashboard in a real browser: the service on 127.0.0.1 with simulated providers, a
//! stratus gateway over two mock replicas feeding the inference page, a simulation report,
//! and `crates/server/ui/e2e/dashboard.mjs` driving Debian's Chromium through playwright-core:
//! sign in, every region on the map, apply a workload and see it placed, take its region down
//! and see it moved, a viewer unable to apply; a screenshot of every page.
//!
//! `.ci/run` installs Chromium and playwright-core and sets STRATUS_TEST_CHROMIUM and
//! STRATUS_TEST_PLAYWRIGHT; without them the test says so and does nothing. Screenshots go to
//! STRATUS_SCREENSHOTS (default: a `stratus-dashboard` directory under the system's temp dir).

use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use stratus_server::{reconcile_loop, Config};

const ADMIN: &str = "browser-admin-token";

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn the_dashboard_works_in_chromium() {
    let (Ok(chromium), Ok(playwright)) = (
        std::env::var("STRATUS_TEST_CHROMIUM"),
        std::env::var("STRATUS_TEST_PLAYWRIGHT"),
    ) else {
        eprintln!("STRATUS_TEST_CHROMIUM/PLAYWRIGHT not set: .ci/run installs Chromium and playwright-core and sets them");
        return;
    };
    let out = std::env::var("STRATUS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("stratus-dashboard"));
    let work = std::env::temp_dir().join(format!("stratus-browser-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();

    // A simulation report for the simulations page: the outage scenario, shortened.
    let reports = work.join("reports");
    {
        let text = std::fs::read_to_string(examples().join("sim-outage.yaml")).unwrap();
        let mut sc: stratus_sim::scenario::Scenario = stratus_model::parse::from_str(
            "sim-outage.yaml",
            &text,
            stratus_model::parse::Format::Yaml,
        )
        .unwrap();
        sc.horizon_hours = 3.0;
        sc.demand_scale = 0.0002;
        let ld = stratus_sim::scenario::resolve(
            sc,
            "sim-outage.yaml",
            &text,
            &examples(),
            &stratus_catalog::default_data_dir(),
        )
        .unwrap();
        let m = stratus_sim::simulate(&ld, &|_| {});
        stratus_sim::report::write(&m, &reports.join("outage-3h")).unwrap();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (base, gateway) = rt.block_on(async {
        // Two mock replicas of the `chat` model behind a stratus gateway.
        let (gw, replicas) =
            stratus_testkit::mock::behind_gateway("chat", stratus_catalog::builtin())
                .await
                .unwrap();
        std::mem::forget(replicas);

        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: format!("sqlite://{}", work.join("s.db").display()),
            tick_s: 0.5,
            boot_s: 0.5,
            admin_token: Some(ADMIN.into()),
            driver: stratus_server::DriverChoice::Sim,
            gateway_metrics: Some(format!("http://{}/metrics", gw.addr)),
            reports: Some(reports.clone()),
            commitments: None,
            autoscale: None,
        };
        let app = stratus_server::app(&config, stratus_catalog::builtin().clone())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(reconcile_loop(app.clone(), config.tick_s));
        tokio::spawn(stratus_server::serve_on(
            app,
            listener,
            std::future::pending(),
        ));
        (format!("http://{addr}"), gw)
    });

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let token = |role: &str| -> String {
        let mut r = agent
            .post(&format!("{base}/v1/tokens"))
            .header("Authorization", &format!("Bearer {ADMIN}"))
            .header("Content-Type", "application/json")
            .send(json!({"name": role, "role": role}).to_string())
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let (operator, viewer) = (token("operator"), token("viewer"));
    // The inference service the gateway serves, and some traffic through the gateway.
    let mut r = agent
        .post(&format!("{base}/v1/workloads"))
        .header("Authorization", &format!("Bearer {operator}"))
        .header("Content-Type", "application/yaml")
        .send("inference:\n  - name: chat\n    model: chat\n    replica: {H100: {chips: 1, rps: 20}}\n    images: {cuda: img}\n    demand: [{from: \"aws:us-east-1\", rps: 40}, {from: \"gcp:europe-west4\", rps: 20}]\n    latency_slo_ms: 100\n")
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    for i in 0..60 {
        let r = agent
            .post(&format!("http://{}/v1/chat/completions", gateway.addr))
            .header("Content-Type", "application/json")
            .send(json!({"model": "chat", "messages": [{"role": "user", "content": format!("question {i}")}]}).to_string())
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui/e2e/dashboard.mjs");
    let run = Command::new("node")
        .arg(&script)
        .env("BASE", &base)
        .env("OPERATOR", &operator)
        .env("VIEWER", &viewer)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT", &playwright)
        .env("OUT", &out)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the browser run failed");
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(last["ok"], true);
    for page in [
        "signin",
        "fleet",
        "plan",
        "workloads",
        "workloads-error",
        "actions",
        "money",
        "inference",
        "simulations",
        "simulation-report",
        "workloads-viewer",
    ] {
        assert!(
            out.join(format!("{page}.png")).is_file(),
            "screenshot {page}.png"
        );
    }
    eprintln!("page load times (ms, in the browser): {}", last["load_ms"]);
    let _ = std::fs::remove_dir_all(&work);
}
