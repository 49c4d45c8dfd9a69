//! `local`: workloads as processes on this machine. Each instance is a record in a state
//! directory, written *before* the process starts (keyed by the client token), and the process
//! writes its own pid beside it. A launch whose record exists is a no-op, so a controller that
//! crashed between deciding and recording never starts a second copy; a restarted controller
//! adopts what the directory shows.

use crate::driver::{
    Driver, DriverError, Instance, InstanceState, LaunchRequest, LossCause, Observation,
    PoolCapacity, Time,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use stratus_model::Fleet;

/// The default job: counts progress into `$STRATUS_WORKDIR/progress`, resuming from it, so a
/// restarted instance continues where the last checkpoint left off.
pub const DEFAULT_JOB: &str = "n=$(cat \"$STRATUS_WORKDIR/progress\" 2>/dev/null || echo 0); \
while :; do n=$((n+1)); echo $n > \"$STRATUS_WORKDIR/progress.tmp\" && \
mv \"$STRATUS_WORKDIR/progress.tmp\" \"$STRATUS_WORKDIR/progress\"; sleep 1; done";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    request: LaunchRequest,
    launched_at: Time,
    /// The ports an inference instance's replica processes were given (`{port}` in the
    /// replica command), one per replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ports: Vec<u16>,
    /// Asked to stop: the replicas drain (listed as stopping, so gateways send them nothing
    /// new) and are ended at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_at: Option<Time>,
    /// Every replica answered its health check once: from then on it is running, and its
    /// health is the gateways' to watch (the reconcile loop does not probe it again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ready: bool,
}

/// Local processes as a provider.
#[derive(Debug)]
pub struct LocalDriver {
    dir: PathBuf,
    job: String,
    /// `sh -c` template for inference replicas (`{port}` is replaced by a free port).
    replica_command: Option<String>,
    /// Seconds a stopped replica instance keeps running, taking no new requests, so the
    /// requests in flight through gateways finish.
    drain_s: f64,
    capacity: HashMap<String, PoolCapacity>,
    children: HashMap<String, Child>,
}

/// Path probed on a local replica before it is reported running (and so advertised as
/// serving): OpenAI-compatible servers (llama.cpp's, vLLM's, the mock replica) answer it.
pub const HEALTH_PATH: &str = "/health";

/// Whether an HTTP server on 127.0.0.1:`port` answers `GET /health` with a 2xx, within a
/// short timeout (the probe runs in the reconcile loop, so it must never block for long).
pub fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let req = format!(
        "GET {HEALTH_PATH} HTTP/1.0\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got == head.len() && head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

/// Seconds a stopped replica instance drains by default: it is reported stopping (the control
/// plane lists its endpoints as draining, gateways send it nothing new) while the requests in
/// flight finish, then its processes are ended.
pub const DEFAULT_DRAIN_S: f64 = 5.0;

/// Replica processes one local instance may run.
pub const MAX_LOCAL_REPLICAS: u32 = 64;

/// A port free on 127.0.0.1 now and not given to another replica of this driver.
fn free_port(taken: &[u16]) -> std::io::Result<u16> {
    for _ in 0..64 {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port on 127.0.0.1"))
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn file_name(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

impl LocalDriver {
    /// A driver keeping its records under `dir`, running `job` (a `sh -c` script; see
    /// [`DEFAULT_JOB`]) for every instance, with the fleet's pools as capacity.
    pub fn new(dir: &Path, job: &str, fleet: &Fleet) -> std::io::Result<LocalDriver> {
        std::fs::create_dir_all(dir.join("instances"))?;
        std::fs::create_dir_all(dir.join("work"))?;
        let capacity = fleet
            .pools()
            .map(|(_, _, p)| (p.id.clone(), PoolCapacity::of_pool(p)))
            .collect();
        Ok(LocalDriver {
            dir: dir.to_path_buf(),
            job: job.to_string(),
            replica_command: None,
            drain_s: DEFAULT_DRAIN_S,
            capacity,
            children: HashMap::new(),
        })
    }

    /// Run inference replicas as `command` (a `sh -c` template in which `{port}` becomes a
    /// port allocated on 127.0.0.1, also passed as `$STRATUS_PORT`), e.g.
    /// `stratus mock-replica --listen 127.0.0.1:{port}` or llama.cpp's server. A replica is
    /// reported running, and its endpoint `http://127.0.0.1:PORT` advertised as serving,
    /// only once it answers `GET /health`. Jobs still run the job script.
    pub fn with_replica_command(mut self, command: Option<String>) -> LocalDriver {
        self.replica_command = command;
        self
    }

    /// Seconds a stopped replica instance drains before its processes are ended (see
    /// [`DEFAULT_DRAIN_S`]); jobs stop at once.
    pub fn with_drain(mut self, seconds: f64) -> LocalDriver {
        self.drain_s = seconds.max(0.0);
        self
    }

    /// End a stopped instance's processes and forget it.
    fn end(&mut self, token: &str) {
        self.kill(token);
        let _ = std::fs::remove_file(self.pid_path(token));
        let _ = std::fs::remove_file(self.record_path(token));
    }

    fn record_path(&self, token: &str) -> PathBuf {
        self.dir
            .join("instances")
            .join(format!("{}.json", file_name(token)))
    }

    fn pid_path(&self, token: &str) -> PathBuf {
        self.dir
            .join("instances")
            .join(format!("{}.pid", file_name(token)))
    }

    /// The work directory of a workload (shared by its instances, so progress survives moves).
    pub fn workdir(&self, workload: &str) -> PathBuf {
        self.dir.join("work").join(file_name(workload))
    }

    fn records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = std::fs::read_dir(self.dir.join("instances"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        out.sort_by(|a: &Record, b| a.request.token.cmp(&b.request.token));
        out
    }

    fn write_record(&self, r: &Record) -> std::io::Result<()> {
        let path = self.record_path(&r.request.token);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(r).expect("record serializes"))?;
        std::fs::rename(tmp, path)
    }

    fn pid(&self, token: &str) -> Option<i32> {
        std::fs::read_to_string(self.pid_path(token))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the instance's process is alive (a zombie child counts as gone).
    fn alive(&mut self, token: &str) -> Option<bool> {
        if let Some(c) = self.children.get_mut(token) {
            return Some(matches!(c.try_wait(), Ok(None)));
        }
        let pid = self.pid(token)?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        Some(match stat {
            None => false,
            // The state letter follows the parenthesised command name.
            Some(s) => s
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|st| st != "Z" && st != "X"),
        })
    }

    fn used(&self, pool: &str) -> PoolCapacity {
        self.records()
            .iter()
            .filter(|r| r.request.pool == pool)
            .fold(PoolCapacity::default(), |u, r| {
                u.plus(PoolCapacity::of(&r.request))
            })
    }

    fn kill(&mut self, token: &str) {
        if let Some(pid) = self.pid(token) {
            // The job runs in its own process group: end the shell and its children.
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.children.remove(token) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl LocalDriver {
    /// Forget instances whose process is gone, once the controller has seen them lost.
    pub fn reap_lost(&mut self, now: Time) {
        for i in self.observe(now).instances {
            if matches!(i.state, InstanceState::Lost(_)) {
                let t = i.request.token;
                self.kill(&t);
                let _ = std::fs::remove_file(self.pid_path(&t));
                let _ = std::fs::remove_file(self.record_path(&t));
            }
        }
    }
}

impl Driver for LocalDriver {
    fn launch(&mut self, now: Time, req: &LaunchRequest) -> Result<(), DriverError> {
        if self.record_path(&req.token).exists() {
            return Ok(());
        }
        let total = *self
            .capacity
            .get(&req.pool)
            .ok_or_else(|| DriverError::UnknownPool(req.pool.clone()))?;
        let free = total.minus(self.used(&req.pool));
        if !PoolCapacity::of(req).fits_in(&free) {
            return Err(DriverError::Capacity {
                pool: req.pool.clone(),
                asked: req.nodes,
                free,
            });
        }
        let replica = crate::unit::UnitKey::parse(&req.unit).is_ok_and(|u| u.is_replicas());
        let (job, ports) = match (&self.replica_command, replica) {
            (Some(template), true) => {
                let n = req.replicas.max(1);
                if n > MAX_LOCAL_REPLICAS {
                    return Err(DriverError::Refused {
                        region: req.region.clone(),
                        reason: format!(
                            "{n} replicas: the local driver runs at most {MAX_LOCAL_REPLICAS} \
                             replica processes per instance"
                        ),
                    });
                }
                let mut taken: Vec<u16> = self
                    .records()
                    .iter()
                    .flat_map(|r| r.ports.iter().copied())
                    .collect();
                let mut ports = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let port = free_port(&taken).map_err(|e| DriverError::Refused {
                        region: req.region.clone(),
                        reason: format!("cannot allocate a port: {e}"),
                    })?;
                    taken.push(port);
                    ports.push(port);
                }
                let command = |p: &u16| template.replace("{port}", &p.to_string());
                // One process per replica, all in the instance's process group (stopping the
                // instance ends them all); the group's leader waits for them.
                let job = if ports.len() == 1 {
                    command(&ports[0])
                } else {
                    let mut s: String = ports
                        .iter()
                        .map(|p| format!("STRATUS_PORT={p} sh -c {} & ", shell_quote(&command(p))))
                        .collect();
                    s.push_str("wait");
                    s
                };
                (job, ports)
            }
            _ => (self.job.clone(), Vec::new()),
        };
        // The record first: from here on a retry with this token is a no-op.
        let rec = Record {
            request: req.clone(),
            launched_at: now,
            ports: ports.clone(),
            stop_at: None,
            ready: ports.is_empty(),
        };
        self.write_record(&rec).map_err(|e| DriverError::Refused {
            region: req.region.clone(),
            reason: format!("local state directory: {e}"),
        })?;
        let work = self.workdir(&req.workload);
        let _ = std::fs::create_dir_all(&work);
        let script = format!(
            "echo $$ > '{}'; exec sh -c \"$STRATUS_JOB\"",
            self.pid_path(&req.token).display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .env("STRATUS_JOB", &job)
            .env(
                "STRATUS_PORT",
                ports.first().map(|p| p.to_string()).unwrap_or_default(),
            )
            .env("STRATUS_TOKEN", &req.token)
            .env("STRATUS_UNIT", &req.unit)
            .env("STRATUS_WORKLOAD", &req.workload)
            .env("STRATUS_POOL", &req.pool)
            .env("STRATUS_WORKDIR", &work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        match cmd.spawn() {
            Ok(child) => {
                self.children.insert(req.token.clone(), child);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(self.record_path(&req.token));
                Err(DriverError::Refused {
                    region: req.region.clone(),
                    reason: format!("cannot start a process: {e}"),
                })
            }
        }
    }

    fn stop(&mut self, now: Time, token: &str) -> Result<(), DriverError> {
        let Some(mut rec) = self
            .records()
            .into_iter()
            .find(|r| r.request.token == token)
        else {
            if self.record_path(token).exists() {
                // A record that does not parse: end whatever it started.
                self.end(token);
                return Ok(());
            }
            return Err(DriverError::UnknownToken(token.to_string()));
        };
        if rec.ports.is_empty() || self.drain_s <= 0.0 {
            self.end(token);
            return Ok(());
        }
        if rec.stop_at.is_none() {
            rec.stop_at = Some(now.plus(self.drain_s));
            self.write_record(&rec).map_err(|e| DriverError::Refused {
                region: rec.request.region.clone(),
                reason: format!("local state directory: {e}"),
            })?;
        }
        Ok(())
    }

    fn observe(&mut self, now: Time) -> Observation {
        let mut out = Vec::new();
        for r in self.records() {
            let token = r.request.token.clone();
            if let Some(at) = r.stop_at {
                if now.0 >= at.0 || self.alive(&token) != Some(true) {
                    self.end(&token);
                    continue;
                }
            }
            let state = match self.alive(&token) {
                _ if r.stop_at.is_some() => InstanceState::Stopping {
                    done_at: r.stop_at.unwrap_or(now),
                },
                // Replicas run once every one answers its health check; until then they start.
                Some(true) if !r.ready => {
                    if r.ports.iter().all(|&p| healthy(p)) {
                        let mut rec = r.clone();
                        rec.ready = true;
                        // Unwritten, it is probed again at the next observation: no harm.
                        let _ = self.write_record(&rec);
                        InstanceState::Running
                    } else {
                        InstanceState::Pending {
                            ready_at: now.plus(1.0),
                        }
                    }
                }
                Some(true) => InstanceState::Running,
                // Started less than 10 s ago and no pid yet: still starting.
                None if now.0 - r.launched_at.0 < 10.0 => InstanceState::Pending {
                    ready_at: r.launched_at.plus(10.0),
                },
                _ => InstanceState::Lost(LossCause::Outage),
            };
            out.push(Instance {
                request: r.request,
                state,
                launched_at: r.launched_at,
                since: r.launched_at,
                endpoints: r
                    .ports
                    .iter()
                    .map(|p| format!("http://127.0.0.1:{p}"))
                    .collect(),
            });
        }
        Observation::complete(out)
    }

    fn capacity(&mut self, _now: Time, pool: &str) -> Result<PoolCapacity, DriverError> {
        let total = *self
            .capacity
            .get(pool)
            .ok_or_else(|| DriverError::UnknownPool(pool.to_string()))?;
        Ok(total.minus(self.used(pool)))
    }
}
