//! `stratus serve`: the control plane as a service. An HTTP API under `/v1/` (workloads,
//! plans and their history, the actions log, status), health and Prometheus metrics, API
//! tokens with roles, persistence in SQLite or PostgreSQL, and the reconcile loop: the same
//! [`Controller`] the simulator runs, here on the wall clock.
#![warn(missing_docs)]

/// A line on standard error that never panics (a closed stderr must not end the service).
macro_rules! log {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod dst;
pub mod endpoints;
pub mod store;
pub mod ui;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::Store;
use stratus_control::{
    Controller, ControllerConfig, Driver, Journal, LaunchRequest, LocalDriver, Owned, Phase,
    SimProvider, Strategy, Time,
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
        /// `sh -c` script of every job instance.
        job: String,
        /// `sh -c` template of inference replicas (see
        /// [`LocalDriver::with_replica_command`]).
        replica_command: Option<String>,
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

/// A driver a harness brings (the deterministic simulation tests' faulty world).
pub trait HostDriver: Send {
    /// As the controller sees it.
    fn driver(&mut self) -> &mut dyn Driver;
    /// Let time pass.
    fn advance(&mut self, _now: Time) {}
    /// The simulated provider underneath, if any (outages are injected into it).
    fn sim(&mut self) -> Option<&mut SimProvider> {
        None
    }
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
    /// A harness's driver.
    Custom(Box<dyn HostDriver>),
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
            Backend::Custom(d) => d.driver(),
        }
    }
    /// Let time pass (simulated boots finish).
    fn advance(&mut self, now: Time) {
        match self {
            Backend::Sim(d) => {
                d.advance(now);
            }
            Backend::Custom(d) => d.advance(now),
            _ => {}
        }
    }
    /// Forget lost instances after the controller has seen them.
    fn reap(&mut self, now: Time) {
        if let Backend::Local(d) = self {
            d.reap_lost(now)
        }
    }
}

/// Seconds a stopped or lost simulated instance stays listed (so an observation that failed
/// for a while still sees how it ended).
pub const SIM_RETENTION_S: f64 = 3600.0;

/// Token sequence numbers reserved in the database at a time.
pub const TOKEN_BLOCK: u64 = 1000;

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
    /// Size inference services from the traffic the gateway (`gateway_metrics`) reports
    /// instead of their declared demand.
    pub autoscale: Option<stratus_control::autoscale::AutoscaleConfig>,
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
    /// Stored workloads that are not planned because they no longer pass validation, and why.
    pub invalid: BTreeMap<String, String>,
    /// The owned-instance rows as the database has them (token → (unit, record)), shared
    /// with the launch journal.
    pub persisted: Arc<Mutex<BTreeMap<String, (String, String)>>>,
    /// Actions and a plan a failed write left to store.
    pub pending: (Vec<stratus_control::Action>, Option<stratus_plan::Plan>),
    /// The latest time the loop ran at (the loop's clock never goes back).
    pub last_now: f64,
}

/// The reconcile loop's health, for `/readyz` and `/v1/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoopHealth {
    /// The loop was started.
    pub running: bool,
    /// When the last reconcile finished without error, ms since the Unix epoch.
    pub last_ok_ms: Option<i64>,
    /// The last failure (a database error, or a panic the supervisor recovered from).
    pub last_error: Option<String>,
    /// Panics recovered from.
    pub panics: u64,
    /// The last reconcile panicked and none has succeeded since.
    pub failed_since_panic: bool,
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
    /// Traffic-driven sizing (with `gateway_metrics`); it outlives a rebuilt controller.
    pub autoscaler: Option<Mutex<stratus_control::autoscale::Autoscaler>>,
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
    /// The reconcile loop's health.
    pub health: Mutex<LoopHealth>,
    /// Once set, nothing more is written to the database or sent to the driver by the
    /// reconcile loop: the point at which the deterministic simulation tests crash it.
    pub halt: Arc<AtomicBool>,
    /// The inference endpoints gateways follow, replaced after a reconcile that changed them
    /// (watchers wait on it).
    pub endpoints: tokio::sync::watch::Sender<Arc<endpoints::EndpointList>>,
    /// How the controller is made, to rebuild it after a panic.
    recipe: ControlRecipe,
}

/// What building a controller needs, kept to rebuild it.
#[derive(Clone)]
struct ControlRecipe {
    config: ControllerConfig,
    token_prefix: String,
    rt: tokio::runtime::Handle,
}

/// Lock a mutex even when a panic poisoned it: the reconcile loop's supervisor rebuilds
/// what the panic may have left half done.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The launch journal in the database: a token's row is written before the driver sees
/// it, and sequence numbers are reserved in blocks of [`TOKEN_BLOCK`].
struct StoreJournal {
    store: Store,
    rt: tokio::runtime::Handle,
    seq: u64,
    reserved: u64,
    rows: Arc<Mutex<BTreeMap<String, (String, String)>>>,
    halt: Arc<AtomicBool>,
}

impl Journal for StoreJournal {
    fn next_seq(&mut self, floor: u64) -> Result<u64, String> {
        if self.halt.load(Ordering::SeqCst) {
            return Err("halted".into());
        }
        let want = self.seq.max(floor) + 1;
        if want > self.reserved {
            self.reserved = self
                .rt
                .block_on(self.store.reserve_token_seq(want, TOKEN_BLOCK))
                .map_err(|e| e.to_string())?;
        }
        self.seq = want;
        Ok(want)
    }

    fn intent(&mut self, req: &LaunchRequest, at: Time) -> Result<(), String> {
        if self.halt.load(Ordering::SeqCst) {
            return Err("halted".into());
        }
        let rec = owned_row(&Owned {
            request: req.clone(),
            launched_at: at,
            phase: Phase::Launching,
            attempts: 1,
            next_try: at,
            running: false,
            power_mw: 0.0,
        });
        self.rt
            .block_on(self.store.put_owned(&req.token, Some((&rec.0, &rec.1))))
            .map_err(|e| e.to_string())?;
        lock(&self.rows).insert(req.token.clone(), rec);
        Ok(())
    }

    fn forget(&mut self, token: &str) -> Result<(), String> {
        if self.halt.load(Ordering::SeqCst) {
            return Err("halted".into());
        }
        self.rt
            .block_on(self.store.put_owned(token, None))
            .map_err(|e| e.to_string())?;
        lock(&self.rows).remove(token);
        Ok(())
    }
}

/// An owned instance as its database row: (unit, record).
fn owned_row(o: &Owned) -> (String, String) {
    (
        o.request.unit.clone(),
        serde_json::to_string(o).expect("an owned record serializes"),
    )
}

impl App {
    /// The bill so far: FOCUS rows of every usage record (Unix-second clock) under the
    /// service's commitments.
    pub fn live_rows(
        &self,
    ) -> Result<Vec<stratus_ledger::Row>, stratus_ledger::focus::LedgerError> {
        let usage = lock(&self.control).meter.usage();
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
        let ticks = lock(&self.control).ticks;
        let cached = lock(&self.live).clone();
        if let Some((_, r, n)) = cached.filter(|c| c.0 == ticks) {
            return Ok((r, n));
        }
        let rows = self.live_rows()?;
        let r = stratus_ledger::burndown::report(&self.commitments, &rows);
        *lock(&self.live) = Some((ticks, r.clone(), rows.len()));
        Ok((r, rows.len()))
    }

    /// Take a region (`provider:region`) of the simulated provider down or bring it back and
    /// wake the reconcile loop; the tokens of the instances lost, or `None` when the service
    /// does not drive simulated providers.
    pub fn set_sim_region(&self, region: &str, down: bool) -> Option<Vec<String>> {
        let now = Time(now_ms() as f64 / 1000.0);
        let lost = match &mut lock(&self.control).backend {
            Backend::Sim(d) => d.set_region_down(now, region, down),
            Backend::Custom(d) => d.sim()?.set_region_down(now, region, down),
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
    /// The admin token given is unusable.
    #[error("admin token: {0}")]
    BadToken(String),
}

/// Open the database, build the app state.
pub async fn app(config: &Config, fleet: Fleet) -> Result<Arc<App>, ServeError> {
    let backend = match &config.driver {
        DriverChoice::Sim => {
            let mut d = SimProvider::new(&fleet, config.boot_s, 1.0);
            d.retention_s = Some(SIM_RETENTION_S);
            Backend::Sim(d)
        }
        DriverChoice::Local {
            dir,
            job,
            replica_command,
        } => Backend::Local(
            LocalDriver::new(dir, job, &fleet)
                .map_err(|e| ServeError::Driver(dir.clone(), e))?
                .with_replica_command(replica_command.clone()),
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
    let mut control = controller_config(config.tick_s);
    if matches!(config.driver, DriverChoice::Slurm { .. }) {
        // Slurm jobs fence themselves (a job runs only while the owner file names its
        // token), so a cluster that stops answering is written off and its work placed
        // again after a few reconciles.
        control.write_off_s = Some((6.0 * config.tick_s).max(2.0));
    }
    app_with_control(config, control, fleet, backend).await
}

/// The controller's timing for a service reconciling every `tick_s` seconds.
pub fn controller_config(tick_s: f64) -> ControllerConfig {
    ControllerConfig {
        tick_s,
        react_s: tick_s.min(1.0),
        retry_s: tick_s,
        retry_max_s: 8.0 * tick_s,
        ..ControllerConfig::default()
    }
}

/// A controller restored from the database: the instances it owned and the token sequence.
async fn build_control(
    store: &Store,
    fleet: &Fleet,
    recipe: &ControlRecipe,
    halt: &Arc<AtomicBool>,
    backend: Backend,
) -> Result<Control, store::StoreError> {
    let mut controller = Controller::new(fleet.clone(), Strategy::Stratus, recipe.config.clone());
    controller.token_prefix = recipe.token_prefix.clone();
    let mut rows = BTreeMap::new();
    let mut owned = Vec::new();
    for (token, unit, record) in store.owned().await? {
        match serde_json::from_str::<Owned>(&record) {
            Ok(o) => owned.push(o),
            Err(e) => {
                log!("stratus serve: owned instance {token}: unreadable record kept: {e}")
            }
        }
        rows.insert(token, (unit, record));
    }
    for (o, why) in controller.restore(owned) {
        log!(
            "stratus serve: owned instance {}: {why}; it is treated as an orphan",
            o.request.token
        );
    }
    let rows = Arc::new(Mutex::new(rows));
    let seq = store.token_seq().await?;
    controller.set_journal(Box::new(StoreJournal {
        store: store.clone(),
        rt: recipe.rt.clone(),
        seq,
        reserved: seq,
        rows: rows.clone(),
        halt: halt.clone(),
    }));
    let usage = store.usage().await?;
    Ok(Control {
        controller,
        backend,
        replans_seen: 0,
        last_plan_key: String::new(),
        ticks: 0,
        meter: stratus_ledger::Meter::resume(usage),
        invalid: BTreeMap::new(),
        persisted: rows,
        pending: (Vec::new(), None),
        last_now: 0.0,
    })
}

/// [`app`] with a driver the caller made.
pub async fn app_with(
    config: &Config,
    fleet: Fleet,
    backend: Backend,
) -> Result<Arc<App>, ServeError> {
    app_with_control(config, controller_config(config.tick_s), fleet, backend).await
}

/// [`app_with`] with the controller's timing given.
pub async fn app_with_control(
    config: &Config,
    control: ControllerConfig,
    fleet: Fleet,
    backend: Backend,
) -> Result<Arc<App>, ServeError> {
    if let Some(t) = &config.admin_token {
        auth::check_token_value(t).map_err(ServeError::BadToken)?;
    }
    let store = Store::open(&config.db).await?;
    if let Some(t) = &config.admin_token {
        // A rotated token replaces the one stored at an earlier start, which stops working.
        store.set_bootstrap_admin(&auth::hash(t), now_ms()).await?;
    }
    if !store.has_tokens().await? {
        return Err(ServeError::NoToken);
    }
    // The installation's identity in every token: the database it keeps its state in.
    let id = config.db.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let recipe = ControlRecipe {
        config: control,
        token_prefix: format!("s{:08x}-", id as u32),
        rt: tokio::runtime::Handle::current(),
    };
    let halt = Arc::new(AtomicBool::new(false));
    let control = build_control(&store, &fleet, &recipe, &halt, backend).await?;
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
        autoscaler: config
            .autoscale
            .filter(|_| config.gateway_metrics.is_some())
            .map(|c| Mutex::new(stratus_control::autoscale::Autoscaler::new(c))),
        reports: config.reports.clone(),
        projection: Mutex::new(None),
        live: Mutex::new(None),
        fleet: Arc::new(fleet),
        control: Mutex::new(control),
        wake: tokio::sync::Notify::new(),
        // A restart re-plans at once.
        changed: std::sync::atomic::AtomicBool::new(true),
        health: Mutex::new(LoopHealth::default()),
        halt,
        endpoints: tokio::sync::watch::Sender::new(Arc::new(endpoints::EndpointList {
            version: now_ms().max(0) as u64,
            endpoints: Vec::new(),
        })),
        recipe,
    }))
}

/// Serve until interrupted (Ctrl-C or SIGTERM).
pub async fn serve(config: Config, fleet: Fleet) -> Result<(), ServeError> {
    let app = app(&config, fleet).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Listen(config.listen, e))?;
    let local = listener.local_addr().unwrap_or(config.listen);
    log!("stratus serve: listening on http://{local}");
    tokio::spawn(reconcile_loop(app.clone(), config.tick_s));
    serve_on(app, listener, shutdown()).await
}

/// What clients of the API may hold: connections open at once (more are answered 503 and
/// closed; HTTP/1 serves one request at a time per connection, so this also bounds requests in
/// flight) and the time a client has to send a request's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a client has to send a request's head.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Answer the API and the dashboard on a bound listener until `stop` completes (the
/// reconcile loop is the caller's to spawn), within the default [`Limits`].
pub async fn serve_on(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_on_with(app, listener, stop, Limits::default()).await
}

/// How long the accept loop waits after `e`: a while when the process or system is out of
/// descriptors or memory (accepting again at once would fail again, at full speed).
pub fn accept_backoff(e: &std::io::Error) -> Option<Duration> {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12)).then(|| Duration::from_millis(100))
}

/// The answer to a connection past the cap.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Content-Type: application/json\r\nContent-Length: 32\r\nRetry-After: 1\r\n\r\n\
{\"error\":\"too many connections\"}";

#[cfg(test)]
mod tests {
    #[test]
    fn the_overload_answer_is_well_formed() {
        let text = std::str::from_utf8(super::TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn exhaustion_is_waited_out_and_other_errors_are_not() {
        for code in [24, 23, 105, 12] {
            assert!(super::accept_backoff(&std::io::Error::from_raw_os_error(code)).is_some());
        }
        assert!(super::accept_backoff(&std::io::Error::from_raw_os_error(103)).is_none());
    }
}

/// [`serve_on`] within `limits`.
pub async fn serve_on_with(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<(), ServeError> {
    use tokio::io::AsyncWriteExt;
    let router = api::router(app);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut stop = std::pin::pin!(stop);
    loop {
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if let Some(wait) = accept_backoff(&e) {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(TOO_MANY).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            drop(slot);
        });
    }
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

/// Reconcile on the period, and at once when the API changed something or a retry is due.
/// Supervised: a reconcile that panics is logged, shown by `/readyz`, and the controller is
/// rebuilt from the database (as after a restart) before the next one.
pub async fn reconcile_loop(app: Arc<App>, tick_s: f64) {
    lock(&app.health).running = true;
    loop {
        let r = tokio::spawn(reconcile_once_owned(app.clone())).await;
        let outcome = match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ReconcileError::Panicked(m))) => Err((m, true)),
            Ok(Err(e)) => Err((e.to_string(), false)),
            Err(join) => Err((panic_message(join), true)),
        };
        {
            let mut h = lock(&app.health);
            match &outcome {
                Ok(()) => {
                    h.last_ok_ms = Some(now_ms());
                    h.failed_since_panic = false;
                }
                Err((e, panicked)) => {
                    log!(
                        "stratus serve: reconcile {}: {e}",
                        if *panicked { "panicked" } else { "failed" }
                    );
                    h.last_error = Some(e.clone());
                    if *panicked {
                        h.panics += 1;
                        h.failed_since_panic = true;
                    }
                }
            }
        }
        if let Err((_, true)) = outcome {
            if let Err(e) = app.rebuild_control().await {
                log!("stratus serve: rebuilding the controller failed: {e}");
            }
        }
        let wait = {
            let c = lock(&app.control);
            let now = now_ms() as f64 / 1000.0;
            let until = c
                .controller
                .next_wake()
                .map(|t| (t.0 - now).max(0.05))
                .unwrap_or(f64::INFINITY);
            tick_s.max(0.05).min(until)
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
            _ = app.wake.notified() => {}
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

async fn reconcile_once_owned(app: Arc<App>) -> Result<(), ReconcileError> {
    reconcile_once(&app).await
}

/// Why a reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The reconcile panicked.
    #[error("the reconcile panicked: {0}")]
    Panicked(String),
    /// [`App::halt`] is set.
    #[error("halted")]
    Halted,
}

impl App {
    /// Why the reconcile loop is not working, if it is not: it panicked and has not completed
    /// a reconcile since, or none completed for ten periods (at least a minute).
    pub fn loop_trouble(&self) -> Option<String> {
        let h = lock(&self.health).clone();
        if !h.running {
            return None;
        }
        if h.failed_since_panic {
            return Some(format!(
                "reconcile loop restarted after a panic ({} so far): {}",
                h.panics,
                h.last_error.unwrap_or_default()
            ));
        }
        let stall_ms = (10.0 * self.recipe.config.tick_s * 1000.0).max(60_000.0) as i64;
        match h.last_ok_ms {
            Some(t) if now_ms() - t > stall_ms => Some(format!(
                "no reconcile completed for {} s: {}",
                (now_ms() - t) / 1000,
                h.last_error.unwrap_or_default()
            )),
            _ => None,
        }
    }

    /// Build the controller again from the database, as a restart would (after a panic left
    /// it in an unknown state). The driver is kept.
    pub async fn rebuild_control(&self) -> Result<(), store::StoreError> {
        let backend = {
            let mut c = lock(&self.control);
            std::mem::replace(&mut c.backend, Backend::Custom(Box::new(NoDriver)))
        };
        let fresh =
            build_control(&self.store, &self.fleet, &self.recipe, &self.halt, backend).await;
        let mut c = lock(&self.control);
        match fresh {
            Ok(mut fresh) => {
                fresh.ticks = c.ticks;
                *c = fresh;
                self.changed.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A placeholder while the controller is rebuilt.
struct NoDriver;

impl Driver for NoDriver {
    fn launch(&mut self, _: Time, r: &LaunchRequest) -> Result<(), stratus_control::DriverError> {
        Err(stratus_control::DriverError::Down {
            region: r.region.clone(),
            reason: "the controller is being rebuilt".into(),
        })
    }
    fn stop(&mut self, _: Time, t: &str) -> Result<(), stratus_control::DriverError> {
        Err(stratus_control::DriverError::Unreachable {
            region: String::new(),
            reason: format!("the controller is being rebuilt ({t})"),
        })
    }
    fn observe(&mut self, _: Time) -> stratus_control::Observation {
        stratus_control::Observation {
            instances: Vec::new(),
            unobserved: vec![stratus_control::Unobserved {
                scope: String::new(),
                error: stratus_control::DriverError::Unreachable {
                    region: String::new(),
                    reason: "the controller is being rebuilt".into(),
                },
            }],
        }
    }
    fn capacity(
        &mut self,
        _: Time,
        pool: &str,
    ) -> Result<stratus_control::PoolCapacity, stratus_control::DriverError> {
        Err(stratus_control::DriverError::UnknownPool(pool.to_string()))
    }
}

impl HostDriver for NoDriver {
    fn driver(&mut self) -> &mut dyn Driver {
        self
    }
}

/// One reconcile on the wall clock.
pub async fn reconcile_once(app: &Arc<App>) -> Result<(), ReconcileError> {
    reconcile_at(app, now_ms() as f64 / 1000.0)
        .await
        .map(|_| ())
}

/// One reconcile at `now_s` (seconds on the Unix epoch; earlier than the last is read as
/// the last): read the stored workloads (those that no longer validate are listed, not
/// planned), let the controller act, and write what it did (actions, usage, a new plan,
/// the owned instances that changed) in one transaction. The host loop of `stratus serve`
/// and of the deterministic simulation tests. Returns the actions written.
pub async fn reconcile_at(
    app: &Arc<App>,
    now_s: f64,
) -> Result<Vec<stratus_control::Action>, ReconcileError> {
    let stored = app.store.workloads().await?;
    let (workloads, invalid) = api::checked_workloads(&stored, &app.fleet);
    // The gateway's demand counters, when sizing follows traffic (a gateway that does not
    // answer leaves the sizes as they are).
    let demand = match (&app.autoscaler, &app.gateway_metrics) {
        (Some(_), Some(url)) => dashboard::scrape(url.clone())
            .await
            .ok()
            .map(|t| endpoints::demand_counts(&t)),
        _ => None,
    };
    let a = app.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut guard = lock(&a.control);
        let c = &mut *guard;
        let now = Time(now_s.max(c.last_now));
        c.last_now = now.0;
        if a.changed.swap(false, Ordering::SeqCst) {
            c.controller.mark_dirty();
        }
        c.backend.advance(now);
        let workloads = match &a.autoscaler {
            Some(scaler) => {
                let mut scaler = lock(scaler);
                if let Some(d) = &demand {
                    scaler.observe(now, d);
                }
                let lat = stratus_model::LatencyTable::cached(&a.fleet);
                let nearest = |from: &str, declared: &[&str]| -> usize {
                    let Some(f) = lat.index_of(from) else {
                        return 0;
                    };
                    (0..declared.len())
                        .min_by(|&i, &j| {
                            let rtt = |k: usize| {
                                lat.index_of(declared[k])
                                    .map_or(f64::INFINITY, |d| lat.rtt(f, d).0)
                            };
                            rtt(i).total_cmp(&rtt(j)).then(i.cmp(&j))
                        })
                        .unwrap_or(0)
                };
                let (sized, changed) = scaler.size(now, &workloads, &nearest);
                if changed {
                    c.controller.mark_dirty();
                }
                sized
            }
            None => workloads,
        };
        let actions = c.controller.tick(now, &workloads, c.backend.driver());
        let obs = c.controller.observation();
        c.meter
            .observe_partial(now, &obs.instances, |pool| !obs.unobserved(pool));
        let usage = c.meter.take_changed();
        let endpoints = endpoints::compute(&c.controller, &workloads, &a.fleet);
        a.endpoints.send_if_modified(|list| {
            if list.endpoints == endpoints {
                return false;
            }
            *list = Arc::new(endpoints::EndpointList {
                version: list.version + 1,
                endpoints,
            });
            true
        });
        c.backend.reap(now);
        c.ticks += 1;
        c.invalid = invalid;
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
                    c.pending.1 = Some(p.clone());
                }
            }
        }
        c.pending.0.extend(actions);
        // The owned instances that changed since the database last had them.
        let now_rows: BTreeMap<String, (String, String)> = c
            .controller
            .owned()
            .map(|o| (o.request.token.clone(), owned_row(o)))
            .collect();
        let persisted = lock(&c.persisted);
        let mut owned: Vec<(String, Option<(String, String)>)> = now_rows
            .iter()
            .filter(|(t, r)| persisted.get(*t) != Some(*r))
            .map(|(t, r)| (t.clone(), Some(r.clone())))
            .collect();
        owned.extend(
            persisted
                .keys()
                .filter(|t| !now_rows.contains_key(*t))
                .map(|t| (t.clone(), None)),
        );
        drop(persisted);
        (c.pending.clone(), usage, owned, (now.0 * 1000.0) as i64)
    })
    .await;
    let ((actions, plan), usage, owned, at_ms) = match joined {
        Ok(x) => x,
        Err(e) => return Err(ReconcileError::Panicked(panic_message(e))),
    };
    if app.halt.load(Ordering::SeqCst) {
        return Err(ReconcileError::Halted);
    }
    let write = store::ReconcileWrite {
        now_ms: at_ms,
        actions: &actions,
        usage: &usage,
        plan: plan.as_ref(),
        owned: &owned,
    };
    match app.store.save_reconcile(&write).await {
        Ok(()) => {
            let c = lock(&app.control);
            let mut persisted = lock(&c.persisted);
            for (t, row) in owned {
                match row {
                    Some(r) => {
                        persisted.insert(t, r);
                    }
                    None => {
                        persisted.remove(&t);
                    }
                }
            }
            drop(persisted);
            drop(c);
            let mut c = lock(&app.control);
            let n = actions.len().min(c.pending.0.len());
            c.pending.0.drain(..n);
            if c.pending.1.as_ref() == plan.as_ref() {
                c.pending.1 = None;
            }
            Ok(actions)
        }
        Err(e) => {
            // The meter hands these records out again; actions and the plan stay pending.
            lock(&app.control).meter.requeue(usage);
            Err(e.into())
        }
    }
}
