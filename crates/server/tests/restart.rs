//! The service restarted from its database: what the controller must remember. Each test names
//! the failure it pins; see issue 15.

use std::sync::Arc;
use stratus_control::fault::{FaultRates, FaultyDriver, Rng};
use stratus_control::{Driver, SimProvider};
use stratus_server::{app, app_with, lock, reconcile_at, App, Backend, Config, DriverChoice};

const WORKLOADS: &str = r#"
training:
  - {name: ft, chips: 64, accelerators: [H100], images: {cuda: img}, work_chip_hours: 6400}
  - {name: ft-b, chips: 8, accelerators: [H100], images: {cuda: img}, work_chip_hours: 100}
"#;

fn config(db: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: db.into(),
        tick_s: 60.0,
        boot_s: 0.0,
        admin_token: Some("stx_restart-test-admin-token".into()),
        driver: DriverChoice::Sim,
        gateway_metrics: None,
        reports: None,
        commitments: None,
        autoscale: None,
    }
}

fn db(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("stratus-restart-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/s.db", dir.display());
    (dir, url)
}

fn apply(rt: &tokio::runtime::Runtime, app: &Arc<App>) {
    let w: stratus_model::WorkloadSet =
        stratus_model::parse::from_str("w.yaml", WORKLOADS, stratus_model::Format::Yaml).unwrap();
    rt.block_on(app.store.apply(&stratus_server::api::workload_items(&w), 0))
        .unwrap();
}

fn launched(actions: &[stratus_control::Action]) -> Vec<String> {
    actions
        .iter()
        .filter(|a| a.kind == stratus_control::ActionKind::Launch)
        .map(|a| a.token.clone())
        .collect()
}

fn seq(token: &str) -> u64 {
    token.rsplit_once('~').unwrap().1.parse().unwrap()
}

/// See issue 15: after a restart the token sequence was rebuilt from live instances only, so a
/// token could be issued again.
#[test]
fn no_token_is_issued_again_after_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, url) = db("seq");
    let first = {
        let app = rt
            .block_on(app(&config(&url), stratus_catalog::builtin().clone()))
            .unwrap();
        apply(&rt, &app);
        let first = launched(&rt.block_on(reconcile_at(&app, 1000.0)).unwrap());
        // Seen running, so the restarted service knows they were.
        rt.block_on(reconcile_at(&app, 1030.0)).unwrap();
        first
    };
    assert_eq!(first.len(), 2, "{first:?}");
    // The simulated provider lives in the process: after the restart its instances are gone,
    // and both units are launched again, with new tokens.
    let app = rt
        .block_on(app(&config(&url), stratus_catalog::builtin().clone()))
        .unwrap();
    let acts = rt.block_on(reconcile_at(&app, 1060.0)).unwrap();
    let second = launched(&acts);
    assert_eq!(second.len(), 2, "{acts:#?}");
    let top = first.iter().map(|t| seq(t)).max().unwrap();
    for t in &second {
        assert!(!first.contains(t), "{t} issued twice");
        assert!(seq(t) > top, "{t} not above {top}");
    }
    drop(app);
    let _ = std::fs::remove_dir_all(dir);
}

/// See issue 15: a launch that got no answer was forgotten at a crash; the restarted service
/// launched the unit again with a new token while the first launch ran.
#[test]
fn a_launch_without_an_answer_is_retried_with_its_token_after_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, url) = db("intent");
    let fleet = stratus_catalog::builtin().clone();
    let mut sim = SimProvider::new(&fleet, 0.0, 1.0);
    sim.retention_s = Some(86_400.0);
    // Every launch takes effect and its answer is lost; observations see nothing yet.
    let rates = FaultRates {
        launch_timeout: 1.0,
        visibility_lag_s: 1e9,
        ..FaultRates::default()
    };
    let world = Arc::new(std::sync::Mutex::new(FaultyDriver::new(
        sim,
        rates,
        Rng::new(1, "restart"),
    )));
    let start = |world: &Arc<std::sync::Mutex<FaultyDriver>>| {
        rt.block_on(app_with(
            &config(&url),
            fleet.clone(),
            Backend::Custom(Box::new(Shared(world.clone()))),
        ))
        .unwrap()
    };
    let app1 = start(&world);
    apply(&rt, &app1);
    rt.block_on(reconcile_at(&app1, 1000.0)).unwrap();
    let tokens: Vec<String> = lock(&world).log.launched.keys().cloned().collect();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    // A crash: the process and its memory are gone, the database and the world remain.
    drop(app1);
    let app2 = start(&world);
    for t in [1060.0, 1120.0, 1180.0] {
        rt.block_on(reconcile_at(&app2, t)).unwrap();
    }
    let w = lock(&world);
    let sent: Vec<&String> = w.log.launched.keys().collect();
    assert_eq!(
        sent,
        tokens.iter().collect::<Vec<_>>(),
        "a new token was sent"
    );
    assert_eq!(w.world.instances().count(), 2);
    drop(w);
    drop(app2);
    let _ = std::fs::remove_dir_all(dir);
}

/// The faulty world shared between the test and the service.
struct Shared(Arc<std::sync::Mutex<FaultyDriver>>);

impl Driver for Shared {
    fn launch(
        &mut self,
        now: stratus_control::Time,
        req: &stratus_control::LaunchRequest,
    ) -> Result<(), stratus_control::DriverError> {
        lock(&self.0).launch(now, req)
    }
    fn stop(
        &mut self,
        now: stratus_control::Time,
        token: &str,
    ) -> Result<(), stratus_control::DriverError> {
        lock(&self.0).stop(now, token)
    }
    fn observe(&mut self, now: stratus_control::Time) -> stratus_control::Observation {
        lock(&self.0).observe(now)
    }
    fn capacity(
        &mut self,
        now: stratus_control::Time,
        pool: &str,
    ) -> Result<stratus_control::PoolCapacity, stratus_control::DriverError> {
        lock(&self.0).capacity(now, pool)
    }
}

impl stratus_server::HostDriver for Shared {
    fn driver(&mut self) -> &mut dyn Driver {
        self
    }
    fn advance(&mut self, now: stratus_control::Time) {
        lock(&self.0).world.advance(now);
    }
}
