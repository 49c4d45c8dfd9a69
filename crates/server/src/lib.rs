//! `stratus serve`: the control plane as a service. An HTTP API under `/v1/` (workloads,
//! plans and their history, the actions log, status), health and Prometheus metrics, API
//! tokens with roles, persistence in SQLite or PostgreSQL, and the reconcile loop: the same
//! [`Controller`] the simulator runs, here on the wall clock.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod store;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::Store;
use stratus_control::{
    Controller, ControllerConfig, Driver, LocalDriver, SimProvider, Strategy, Time,
};
use stratus_model::Fleet;

/// Which provider back end the service drives.
#[derive(Debug, Clone)]
pub enum DriverChoice {
    /// Simulated providers in this process (the embedded default).
    Sim,
    /// Processes on this machine, with their records under `dir`, each running `job`.
    Local {
        /// State directory (instance records, pids, work directories).
        dir: std::path::PathBuf,
        /// `sh -c` script of every instance.
        job: String,
    },
    /// Slurm clusters, one per provider (provider name → `slurm.conf`), jobs working under
    /// `work` and running `job`.
    Slurm {
        /// Provider → the cluster's `slurm.conf`.
        clusters: std::collections::BTreeMap<String, std::path::PathBuf>,
        /// Work directories (shared storage the clusters can all reach).
        work: std::path::PathBuf,
        /// `sh` script of every job.
        job: String,
    },
    /// EC2 through the AWS SDK (feature `aws`).
    #[cfg(feature = "aws")]
    Aws(stratus_control::aws::AwsConfig),
}

/// The driver the reconcile loop owns.
pub enum Backend {
    /// Simulated providers.
    Sim(SimProvider),
    /// Local processes.
    Local(LocalDriver),
    /// Slurm clusters.
    Slurm(stratus_control::SlurmDriver),
    /// EC2.
    #[cfg(feature = "aws")]
    Aws(Box<stratus_control::aws::AwsDriver>),
}

impl Backend {
    /// As the controller sees it.
    pub fn driver(&mut self) -> &mut dyn Driver {
        match self {
            Backend::Sim(d) => d,
            Backend::Local(d) => d,
            Backend::Slurm(d) => d,
            #[cfg(feature = "aws")]
            Backend::Aws(d) => d.as_mut(),
        }
    }
    /// Let time pass (simulated boots finish).
    fn advance(&mut self, now: Time) {
        if let Backend::Sim(d) = self {
            d.advance(now);
        }
    }
    /// Forget lost instances after the controller has seen them.
    fn reap(&mut self, now: Time) {
        match self {
            Backend::Sim(d) => d.reap_lost(),
            Backend::Local(d) => d.reap_lost(now),
            Backend::Slurm(_) => {}
            #[cfg(feature = "aws")]
            Backend::Aws(_) => {}
        }
    }
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (loopback by default).
    pub listen: SocketAddr,
    /// `sqlite://FILE` or `postgres://…`.
    pub db: String,
    /// Seconds between reconciles (also run at once after a change through the API).
    pub tick_s: f64,
    /// Seconds the simulated providers take to boot an instance.
    pub boot_s: f64,
    /// An admin token to store (hashed) at start, so a fresh database can be used.
    pub admin_token: Option<String>,
    /// The provider back end.
    pub driver: DriverChoice,
    /// A stratus gateway's `/metrics` URL, for the dashboard's inference page.
    pub gateway_metrics: Option<String>,
    /// A directory of `stratus sim run` outputs, for the dashboard's simulations page.
    pub reports: Option<std::path::PathBuf>,
    /// A commitments file (name, text) for the ledger; the fleet's reservations otherwise.
    pub commitments: Option<(String, String)>,
}

/// Milliseconds since the Unix epoch: the service's clock (the controller's `Time` is
/// seconds on the same epoch, so beliefs survive a restart).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the reconcile loop owns.
pub struct Control {
    /// The controller.
    pub controller: Controller,
    /// The provider back end.
    pub backend: Backend,
    /// Replans already written to the plan history.
    pub replans_seen: u64,
    /// What the last recorded plan placed where, so an identical re-plan is not recorded again.
    pub last_plan_key: String,
    /// Reconciles run.
    pub ticks: u64,
    /// What every instance observed was billed for (the ledger's input), resumed from the
    /// database at start and stored after every reconcile.
    pub meter: stratus_ledger::Meter,
}

/// Shared state of the service.
pub struct App {
    /// The database.
    pub store: Store,
    /// The fleet plans are made on.
    pub fleet: Arc<Fleet>,
    /// Commitments the ledger bills against.
    pub commitments: Vec<stratus_ledger::Commitment>,
    /// See [`Config::gateway_metrics`].
    pub gateway_metrics: Option<String>,
    /// See [`Config::reports`].
    pub reports: Option<std::path::PathBuf>,
    /// The money page's projection of the current plan, keyed by (plan id, hour).
    pub projection: Mutex<Option<((i64, i64), stratus_ledger::burndown::Report)>>,
    /// The money page's live bill (report, rows), keyed by the reconcile count it was built
    /// at: usage changes only at reconciles, and the bill grows with the service's life.
    pub live: Mutex<Option<(u64, stratus_ledger::burndown::Report, usize)>>,
    /// The controller and its driver.
    pub control: Mutex<Control>,
    /// Wakes the reconcile loop early after a change.
    pub wake: tokio::sync::Notify,
    /// A workload changed through the API: the next reconcile re-plans globally.
    pub changed: std::sync::atomic::AtomicBool,
}

impl App {
    /// The bill so far: FOCUS rows of every usage record (Unix-second clock) under the
    /// service's commitments.
    pub fn live_rows(
        &self,
    ) -> Result<Vec<stratus_ledger::Row>, stratus_ledger::focus::LedgerError> {
        let usage = self.control.lock().expect("control lock").meter.usage();
        let opts = stratus_ledger::Options {
            epoch: 0,
            ..stratus_ledger::Options::default()
        };
        stratus_ledger::build(&self.fleet, &self.commitments, &usage, &opts)
    }

    /// The live bill's burn-down report and its row count, built once per reconcile.
    pub fn live_report(
        &self,
    ) -> Result<(stratus_ledger::burndown::Report, usize), stratus_ledger::focus::LedgerError> {
        let ticks = self.control.lock().expect("control lock").ticks;
        let cached = self.live.lock().expect("live lock").clone();
        if let Some((_, r, n)) = cached.filter(|c| c.0 == ticks) {
            return Ok((r, n));
        }
        let rows = self.live_rows()?;
        let r = stratus_ledger::burndown::report(&self.commitments, &rows);
        *self.live.lock().expect("live lock") = Some((ticks, r.clone(), rows.len()));
        Ok((r, rows.len()))
    }

    /// Take a region (`provider:region`) of the simulated provider down or bring it back and
    /// wake the reconcile loop; the tokens of the instances lost, or `None` when the service
    /// does not drive simulated providers.
    pub fn set_sim_region(&self, region: &str, down: bool) -> Option<Vec<String>> {
        let lost = match &mut self.control.lock().expect("control lock").backend {
            Backend::Sim(d) => d.set_region_down(Time(now_ms() as f64 / 1000.0), region, down),
            _ => return None,
        };
        self.changed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
        Some(lost)
    }
}

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The commitments file is bad.
    #[error("{0}")]
    Commitments(stratus_model::InputError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The local driver's state directory is unusable.
    #[error("local driver state directory {0}: {1}")]
    Driver(std::path::PathBuf, std::io::Error),
    /// Nobody could use the API.
    #[error("no API token is stored: pass --admin-token-file FILE or set STRATUS_ADMIN_TOKEN")]
    NoToken,
}

/// Open the database, build the app state.
pub async fn app(config: &Config, fleet: Fleet) -> Result<Arc<App>, ServeError> {
    let store = Store::open(&config.db).await?;
    if let Some(t) = &config.admin_token {
        store
            .add_token(&auth::hash(t), "bootstrap-admin", "admin", now_ms())
            .await?;
    }
    if !store.has_tokens().await? {
        return Err(ServeError::NoToken);
    }
    let backend = match &config.driver {
        DriverChoice::Sim => Backend::Sim(SimProvider::new(&fleet, config.boot_s, 1.0)),
        DriverChoice::Local { dir, job } => Backend::Local(
            LocalDriver::new(dir, job, &fleet).map_err(|e| ServeError::Driver(dir.clone(), e))?,
        ),
        DriverChoice::Slurm {
            clusters,
            work,
            job,
        } => Backend::Slurm(stratus_control::SlurmDriver::new(
            clusters.clone(),
            work,
            job,
            &fleet,
        )),
        #[cfg(feature = "aws")]
        DriverChoice::Aws(cfg) => {
            Backend::Aws(Box::new(stratus_control::aws::AwsDriver::new(cfg.clone())))
        }
    };
    let mut controller = Controller::new(
        fleet.clone(),
        Strategy::Stratus,
        ControllerConfig {
            tick_s: config.tick_s,
            react_s: config.tick_s.min(1.0),
            ..ControllerConfig::default()
        },
    );
    // The installation's identity in every token: the database it keeps its state in.
    let id = config.db.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    controller.token_prefix = format!("s{:08x}-", id as u32);
    let usage = store.usage().await?;
    let ledger_start = stratus_ledger::time::month_start(now_ms() / 1000);
    let commitments = match &config.commitments {
        Some((name, text)) => stratus_ledger::commitment::load(name, text, &fleet, ledger_start)
            .map_err(ServeError::Commitments)?,
        None => stratus_ledger::commitment::from_fleet(&fleet, ledger_start),
    };
    Ok(Arc::new(App {
        store,
        commitments,
        gateway_metrics: config.gateway_metrics.clone(),
        reports: config.reports.clone(),
        projection: Mutex::new(None),
        live: Mutex::new(None),
        fleet: Arc::new(fleet),
        control: Mutex::new(Control {
            controller,
            backend,
            replans_seen: 0,
            last_plan_key: String::new(),
            ticks: 0,
            meter: stratus_ledger::Meter::resume(usage),
        }),
        wake: tokio::sync::Notify::new(),
        // A restart re-plans at once.
        changed: std::sync::atomic::AtomicBool::new(true),
    }))
}

/// Serve until interrupted (Ctrl-C or SIGTERM).
pub async fn serve(config: Config, fleet: Fleet) -> Result<(), ServeError> {
    let app = app(&config, fleet).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Listen(config.listen, e))?;
    let local = listener.local_addr().unwrap_or(config.listen);
    eprintln!("stratus serve: listening on http://{local}");
    tokio::spawn(reconcile_loop(app.clone(), config.tick_s));
    serve_on(app, listener, shutdown()).await
}

/// Answer the API and the dashboard on a bound listener until `stop` completes (the
/// reconcile loop is the caller's to spawn).
pub async fn serve_on(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    axum::serve(listener, api::router(app))
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| ServeError::Listen(local, e))
}

async fn shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Reconcile on the period, and at once when the API changed something.
pub async fn reconcile_loop(app: Arc<App>, tick_s: f64) {
    loop {
        if let Err(e) = reconcile_once(&app).await {
            eprintln!("stratus serve: reconcile failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(tick_s.max(0.05))) => {}
            _ = app.wake.notified() => {}
        }
    }
}

/// One reconcile: read the desired workloads, let the controller act, record what it did.
pub async fn reconcile_once(app: &Arc<App>) -> Result<(), store::StoreError> {
    let stored = app.store.workloads().await?;
    let workloads = api::workload_set(&stored);
    let a = app.clone();
    let (actions, plan, usage) = tokio::task::spawn_blocking(move || {
        let now = Time(now_ms() as f64 / 1000.0);
        let mut c = a.control.lock().expect("control lock");
        let c = &mut *c;
        if a.changed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            c.controller.mark_dirty();
        }
        c.backend.advance(now);
        if c.ticks == 0 {
            // After a restart: take over what the driver already runs, launch nothing twice.
            let seen = c.backend.driver().observe(now);
            c.controller.adopt(seen);
        }
        let actions = c.controller.tick(now, &workloads, c.backend.driver());
        c.meter.observe(now, c.controller.observed());
        let changed = c.meter.take_changed();
        c.backend.reap(now);
        c.ticks += 1;
        let mut plan = None;
        if c.controller.stats.replans != c.replans_seen {
            c.replans_seen = c.controller.stats.replans;
            if let Some(p) = c.controller.last_plan() {
                let key: String = p
                    .placements
                    .iter()
                    .map(|x| format!("{}={}/{:?}/{};", x.unit, x.pool, x.category, x.nodes))
                    .chain(p.unplaced.iter().map(|u| format!("{}=-;", u.unit)))
                    .collect();
                if key != c.last_plan_key {
                    c.last_plan_key = key;
                    plan = Some(p.clone());
                }
            }
        }
        (actions, plan, changed)
    })
    .await
    .expect("reconcile task");
    let now = now_ms();
    let stored = match app.store.add_actions(&actions, now).await {
        Ok(()) => app.store.save_usage(&usage).await,
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        // The meter hands these records out again at the next reconcile.
        app.control
            .lock()
            .expect("control lock")
            .meter
            .requeue(usage);
        return Err(e);
    }
    if let Some(p) = plan {
        app.store.add_plan(now, &p).await?;
    }
    Ok(())
}
