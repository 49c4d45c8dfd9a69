//! `stratus demo --serve`: the whole product in one command. The control plane on the
//! embedded default (built-in fleet, SQLite in a temporary directory, simulated providers)
//! with the demo workloads applied and the demo commitments loaded; every inference instance
//! the controller launches is backed by a real mock replica in this process, and a stratus
//! gateway follows the control plane's endpoint list, with a trickle of traffic for the
//! inference page; a simulated outage of the busiest region partway through takes its
//! replicas down, and the gateway fails over. Prints the URL and tokens; runs until
//! interrupted.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use stratus_control::{
    Driver, DriverError, InstanceState, LaunchRequest, Observation, PoolCapacity, SimProvider, Time,
};
use stratus_server::{auth, now_ms, reconcile_loop, Backend, Config, DriverChoice, HostDriver};
use stratus_testkit::mock::{self, Faults, MockServer};

/// The simulated providers, with a mock replica serving for each running inference instance
/// (its endpoint replaces the synthetic address), started and killed as instances come and go.
struct MockedSim {
    sim: SimProvider,
    mocks: BTreeMap<String, MockServer>,
    models: BTreeMap<String, String>,
    rt: tokio::runtime::Handle,
}

impl Driver for MockedSim {
    fn launch(&mut self, now: Time, req: &LaunchRequest) -> Result<(), DriverError> {
        self.sim.launch(now, req)
    }
    fn stop(&mut self, now: Time, token: &str) -> Result<(), DriverError> {
        self.sim.stop(now, token)
    }
    fn capacity(&mut self, now: Time, pool: &str) -> Result<PoolCapacity, DriverError> {
        self.sim.capacity(now, pool)
    }
    fn observe(&mut self, now: Time) -> Observation {
        let mut obs = self.sim.observe(now);
        let mut live = Vec::new();
        for i in &mut obs.instances {
            if i.endpoints.is_empty() {
                continue;
            }
            let token = i.request.token.clone();
            match i.state {
                InstanceState::Running | InstanceState::Stopping { .. } => {}
                _ => continue,
            }
            if !self.mocks.contains_key(&token) {
                let model = self
                    .models
                    .get(&i.request.workload)
                    .cloned()
                    .unwrap_or_else(|| "chat".into());
                let faults = Faults {
                    ttft_ms: 20,
                    itl_ms: 2,
                    tokens: 8,
                    ..Faults::default()
                };
                let any: SocketAddr = "127.0.0.1:0".parse().expect("constant address");
                // The reconcile runs on a blocking thread, outside the runtime's tasks.
                match self
                    .rt
                    .block_on(mock::start(any, &model, faults, self.mocks.len() as u64))
                {
                    Ok(m) => {
                        self.mocks.insert(token.clone(), m);
                    }
                    Err(_) => continue,
                }
            }
            if let Some(m) = self.mocks.get(&token) {
                i.endpoints = vec![m.url()];
                live.push(token);
            }
        }
        // Instances gone, lost or stopped: their replicas die with them.
        let gone: Vec<String> = self
            .mocks
            .keys()
            .filter(|t| !live.contains(t))
            .cloned()
            .collect();
        for t in gone {
            if let Some(m) = self.mocks.remove(&t) {
                m.kill();
            }
        }
        obs
    }
}

impl HostDriver for MockedSim {
    fn driver(&mut self) -> &mut dyn Driver {
        self
    }
    fn advance(&mut self, now: Time) {
        self.sim.advance(now);
    }
    fn sim(&mut self) -> Option<&mut SimProvider> {
        Some(&mut self.sim)
    }
}

/// Run it.
pub fn run(listen: SocketAddr, outage_after_s: f64, outage_s: f64) -> Result<()> {
    let fleet = stratus_catalog::builtin().clone();
    let workloads = stratus_catalog::scenario::demo_workloads(&fleet)?;
    let dir = std::env::temp_dir().join(format!("stratus-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = || auth::new_token().context("reading /dev/urandom");
    let (admin, viewer) = (token()?, token()?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let state = dir.clone();
    rt.block_on(async move {
        let dir = state;
        // The control plane's address first: the gateway follows it.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let local = listener.local_addr()?;
        // The inference page's data: a gateway following the control plane's replicas (mock
        // replicas behind the simulated instances) and a trickle of chats.
        let model = workloads.inference.first().map(|s| s.model.clone()).unwrap_or_else(|| "chat".into());
        let token_file = dir.join("viewer.token");
        std::fs::write(&token_file, format!("{viewer}\n")).context("writing the demo's token file")?;
        let gw_cfg = stratus_gateway::Config::load_with(
            None,
            Some(stratus_gateway::config::ControlPlaneConfig {
                url: format!("http://{local}"),
                token_file: token_file.display().to_string(),
                watch_s: 20,
            }),
        )?;
        let mut gw_cfg = gw_cfg;
        gw_cfg.listen = "127.0.0.1:0".parse().expect("constant address");
        let gw = stratus_gateway::start(gw_cfg, &fleet).await?;
        let gw_addr = gw.addr;
        tokio::spawn(async move {
            let _keep = gw;
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "How far is the nearest region?"}]}).to_string();
            loop {
                let (a, b) = (agent.clone(), body.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    a.post(&format!("http://{gw_addr}/v1/chat/completions"))
                        .header("Content-Type", "application/json")
                        .send(b)
                })
                .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });

        let config = Config {
            listen,
            db: format!("sqlite://{}", dir.join("demo.db").display()),
            tick_s: 2.0,
            boot_s: 5.0,
            admin_token: Some(admin.clone()),
            driver: DriverChoice::Sim,
            gateway_metrics: Some(format!("http://{gw_addr}/metrics")),
            reports: None,
            commitments: Some(("examples/commitments.yaml".into(), crate::ledger::DEFAULT_COMMITMENTS.into())),
            autoscale: None,
        };
        let mut sim = SimProvider::new(&fleet, config.boot_s, 1.0);
        sim.retention_s = Some(stratus_server::SIM_RETENTION_S);
        let backend = Backend::Custom(Box::new(MockedSim {
            sim,
            mocks: BTreeMap::new(),
            models: workloads.inference.iter().map(|s| (s.name.clone(), s.model.clone())).collect(),
            rt: tokio::runtime::Handle::current(),
        }));
        let app = stratus_server::app_with(&config, fleet.clone(), backend).await?;
        app.store.add_token(&auth::hash(&viewer), "demo-viewer", "viewer", now_ms()).await?;
        app.store
            .apply(&stratus_server::api::workload_items(&workloads), now_ms())
            .await?;
        // A closed standard output must not end a server.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "stratus demo --serve: the control plane on the built-in fleet with the demo workloads, simulated providers");
        let _ = writeln!(out, "  open      http://{local}/");
        let _ = writeln!(out, "  operator  {admin}   (admin token: apply workloads, inject outages)");
        let _ = writeln!(out, "  viewer    {viewer}   (read-only)");
        let _ = writeln!(out, "  outage    the busiest region goes dark after {outage_after_s} s for {outage_s} s; watch Actions");
        let _ = writeln!(out, "  state     {} (deleted on exit)", dir.display());
        let _ = writeln!(out, "Ctrl-C to stop.");
        tokio::spawn(reconcile_loop(app.clone(), config.tick_s));
        let outage_app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(outage_after_s)).await;
            let Ok(Some(p)) = outage_app.store.plan(None).await else { return };
            let mut count: std::collections::BTreeMap<String, usize> = Default::default();
            for x in p.plan["placements"].as_array().into_iter().flatten() {
                *count.entry(x["region"].as_str().unwrap_or("").to_string()).or_default() += 1;
            }
            let Some(region) = count.into_iter().max_by_key(|(r, n)| (*n, std::cmp::Reverse(r.clone()))).map(|x| x.0) else { return };
            let set = |down: bool| outage_app.set_sim_region(&region, down);
            set(true);
            let _ = writeln!(std::io::stderr(), "stratus demo: {region} is down (simulated outage)");
            tokio::time::sleep(Duration::from_secs_f64(outage_s)).await;
            set(false);
            eprintln!("stratus demo: {region} is back");
        });
        stratus_server::serve_on(app, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
