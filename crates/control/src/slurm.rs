//! `slurm`: each provider of the fleet is a Slurm cluster (its own `slurm.conf`), reached
//! with the Slurm commands. A launch is `sbatch` with the controller's token as the job's
//! comment; `squeue` on the comment makes a retried launch a no-op and finds the controller's
//! jobs again after a restart. Jobs checkpoint into a per-workload directory (shared storage
//! between the clusters here), and a fencing file names the one token allowed to run, so a
//! job stranded on a cluster whose controller died stops itself once its work moved.

use crate::driver::{
    Driver, DriverError, Instance, InstanceState, LaunchRequest, LossCause, Observation,
    PoolCapacity, Time, Unobserved,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use stratus_model::Fleet;
use stratus_plan::Category;

/// The default job: resumes its progress counter from `$STRATUS_WORKDIR/progress`, appends a
/// checkpoint marker every second, and runs only while `$STRATUS_WORKDIR/owner` names its own
/// token (the fence).
pub const DEFAULT_JOB: &str = "n=$(cat \"$STRATUS_WORKDIR/progress\" 2>/dev/null || echo 0); \
while [ \"$(cat \"$STRATUS_WORKDIR/owner\" 2>/dev/null)\" = \"$STRATUS_TOKEN\" ]; do \
n=$((n+1)); echo $n > \"$STRATUS_WORKDIR/progress.tmp\" && \
mv \"$STRATUS_WORKDIR/progress.tmp\" \"$STRATUS_WORKDIR/progress\"; \
echo \"$STRATUS_TOKEN $n\" >> \"$STRATUS_WORKDIR/checkpoints\"; sleep 1; done";

/// How long a Slurm command may take before its cluster counts as unreachable.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Slurm clusters as providers.
#[derive(Debug)]
pub struct SlurmDriver {
    clusters: BTreeMap<String, PathBuf>,
    work: PathBuf,
    job: String,
    pools: HashMap<String, (u32, PoolCapacity)>,
    stopped: HashSet<String>,
    /// Clusters whose last command failed, and when: they are not asked again for
    /// [`RETRY_AFTER`], so one dead cluster costs a reconcile one timeout, not one per call.
    failed: std::sync::Mutex<HashMap<PathBuf, std::time::Instant>>,
}

/// The directory (under the work directory) of every launch's request, by token.
const LAUNCHES: &str = ".launches";

/// How long a cluster that failed a command is skipped.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// One of our jobs as `squeue` shows it.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    token: String,
    state: String,
}

fn dir_name(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl SlurmDriver {
    /// `clusters`: provider name → its `slurm.conf`. Jobs run `job` (`sh` script; see
    /// [`DEFAULT_JOB`]) in `work/<workload>`.
    pub fn new(
        clusters: BTreeMap<String, PathBuf>,
        work: &Path,
        job: &str,
        fleet: &Fleet,
    ) -> SlurmDriver {
        let pools = fleet
            .pools()
            .map(|(_, _, p)| (p.id.clone(), (p.chips_per_node, PoolCapacity::of_pool(p))))
            .collect();
        SlurmDriver {
            clusters,
            work: work.to_path_buf(),
            job: job.to_string(),
            pools,
            stopped: HashSet::new(),
            failed: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The work directory of a workload.
    pub fn workdir(&self, workload: &str) -> PathBuf {
        self.work.join(dir_name(workload))
    }

    /// Where the request a job was launched with is kept, by its token.
    fn launch_record(&self, token: &str) -> PathBuf {
        self.work
            .join(LAUNCHES)
            .join(format!("{}.json", dir_name(token)))
    }

    fn conf(&self, pool: &str) -> Result<(&str, &PathBuf), DriverError> {
        let provider = pool.split(':').next().unwrap_or("");
        self.clusters
            .get_key_value(provider)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| DriverError::UnknownPool(pool.to_string()))
    }

    /// Run a Slurm command against one cluster, giving up after [`COMMAND_TIMEOUT`] (a
    /// cluster that does not answer must not stall every other provider's reconcile).
    fn run(&self, conf: &Path, cmd: &str, args: &[&str]) -> Result<String, String> {
        self.run_with(conf, cmd, args, &[])
    }

    /// [`SlurmDriver::run`] with extra environment variables for the command (and, through
    /// `--export=ALL`, for the job it submits).
    fn run_with(
        &self,
        conf: &Path,
        cmd: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<String, String> {
        if let Some(at) = self.failed.lock().expect("failed map").get(conf) {
            if at.elapsed() < RETRY_AFTER {
                return Err(format!(
                    "{cmd}: the cluster failed a command {:?} ago",
                    at.elapsed()
                ));
            }
        }
        let r = self.run_now(conf, cmd, args, env);
        let mut failed = self.failed.lock().expect("failed map");
        match &r {
            Err(_) => {
                failed.insert(conf.to_path_buf(), std::time::Instant::now());
            }
            Ok(_) => {
                failed.remove(conf);
            }
        }
        r
    }

    fn run_now(
        &self,
        conf: &Path,
        cmd: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<String, String> {
        let mut child = Command::new(cmd)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SLURM_CONF", conf)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("{cmd}: {e}"))?;
        let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{cmd}: no answer within {COMMAND_TIMEOUT:?}"));
                }
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Our jobs on one cluster (those with a comment), every state `squeue` still remembers.
    fn jobs(&self, conf: &Path) -> Result<Vec<Job>, String> {
        let out = self.run(conf, "squeue", &["-h", "--states=all", "-o", "%i|%k|%T"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                let (id, token, state) = (f.next()?, f.next()?, f.next()?);
                (!token.is_empty() && token != "(null)").then(|| Job {
                    id: id.trim().to_string(),
                    token: token.trim().to_string(),
                    state: state.trim().to_string(),
                })
            })
            .collect())
    }

    fn live(state: &str) -> bool {
        matches!(
            state,
            "PENDING"
                | "CONFIGURING"
                | "RUNNING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "RESIZING"
        )
    }
}

/// The `sbatch` arguments and environment of a launch. Values travel in the environment of
/// `sbatch` (exported to the job by `--export=ALL`), never inside `--export`'s
/// comma-separated list, where a value holding a comma would set variables of its own.
fn sbatch_command(
    req: &LaunchRequest,
    work: &Path,
    chips_per_node: u32,
    job: &str,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let name = format!("stratus-{}", dir_name(&req.unit));
    let args = vec![
        "--parsable".to_string(),
        format!("--job-name={}", &name[..name.len().min(60)]),
        format!("--comment={}", req.token),
        format!("--nodes={}", req.nodes.max(1)),
        format!("--gres=gpu:{chips_per_node}"),
        "-D".to_string(),
        work.display().to_string(),
        "-o".to_string(),
        work.join("slurm-%j.out").display().to_string(),
        "--export=ALL".to_string(),
        "--wrap".to_string(),
        job.to_string(),
    ];
    let env = vec![
        ("STRATUS_TOKEN", req.token.clone()),
        ("STRATUS_UNIT", req.unit.clone()),
        ("STRATUS_WORKLOAD", req.workload.clone()),
        ("STRATUS_POOL", req.pool.clone()),
        ("STRATUS_WORKDIR", work.display().to_string()),
    ];
    (args, env)
}

impl Driver for SlurmDriver {
    fn launch(&mut self, _now: Time, req: &LaunchRequest) -> Result<(), DriverError> {
        let (_, conf) = self.conf(&req.pool)?;
        let conf = conf.clone();
        // Nothing was submitted while the cluster cannot even list its jobs: a definitive no.
        let existing = self.jobs(&conf).map_err(|e| DriverError::Down {
            region: req.region.clone(),
            reason: e,
        })?;
        if existing
            .iter()
            .any(|j| j.token == req.token && Self::live(&j.state))
        {
            return Ok(());
        }
        let refused = |e: std::io::Error| DriverError::Refused {
            region: req.region.clone(),
            reason: format!("work directory: {e}"),
        };
        let cpn = self.pools.get(&req.pool).map(|p| p.0).unwrap_or(1);
        let work = self.workdir(&req.workload);
        std::fs::create_dir_all(&work).map_err(refused)?;
        // The fence: from now on only this token's job may run for this workload.
        std::fs::write(work.join("owner"), &req.token).map_err(refused)?;
        // What the job is, by its token, so a restarted controller can adopt it exactly.
        std::fs::create_dir_all(self.work.join(LAUNCHES)).map_err(refused)?;
        std::fs::write(
            self.launch_record(&req.token),
            serde_json::to_vec(req).expect("a request serializes"),
        )
        .map_err(refused)?;
        let (args, env) = sbatch_command(req, &work, cpn, &self.job);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // `sbatch` may have submitted the job even when it fails or times out: the token is
        // kept and the launch sent again, which finds the job by its comment.
        self.run_with(&conf, "sbatch", &args, &env)
            .map(|_| ())
            .map_err(|e| DriverError::Unreachable {
                region: req.region.clone(),
                reason: e,
            })
    }

    fn stop(&mut self, _now: Time, token: &str) -> Result<(), DriverError> {
        let mut unread = None;
        for (provider, conf) in &self.clusters {
            let jobs = match self.jobs(conf) {
                Ok(j) => j,
                Err(e) => {
                    unread = Some(DriverError::Unreachable {
                        region: provider.clone(),
                        reason: e,
                    });
                    continue;
                }
            };
            let ids: Vec<String> = jobs
                .iter()
                .filter(|j| j.token == token && Self::live(&j.state))
                .map(|j| j.id.clone())
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["--quiet"];
                args.extend(ids.iter().map(String::as_str));
                self.run(conf, "scancel", &args)
                    .map_err(|e| DriverError::Unreachable {
                        region: provider.clone(),
                        reason: e,
                    })?;
                self.stopped.insert(token.to_string());
                return Ok(());
            }
        }
        // Not found: gone, unless a cluster could not be asked.
        Err(unread.unwrap_or_else(|| DriverError::UnknownToken(token.to_string())))
    }

    fn observe(&mut self, now: Time) -> Observation {
        let mut out = Vec::new();
        let mut unobserved = Vec::new();
        for (provider, conf) in &self.clusters {
            // A cluster whose controller does not answer is unknown, not empty: its jobs may
            // still run.
            let jobs = match self.jobs(conf) {
                Ok(j) => j,
                Err(e) => {
                    unobserved.push(Unobserved {
                        scope: provider.clone(),
                        error: DriverError::Unreachable {
                            region: provider.clone(),
                            reason: e,
                        },
                    });
                    continue;
                }
            };
            for j in jobs {
                let state = match j.state.as_str() {
                    "PENDING" | "CONFIGURING" | "REQUEUED" => InstanceState::Pending {
                        ready_at: now.plus(5.0),
                    },
                    "RUNNING" | "COMPLETING" | "SUSPENDED" | "RESIZING" => InstanceState::Running,
                    "CANCELLED" | "COMPLETED" if self.stopped.contains(&j.token) => continue,
                    "PREEMPTED" => InstanceState::Lost(LossCause::Preempted),
                    "CANCELLED" | "COMPLETED" => continue,
                    _ => InstanceState::Lost(LossCause::Outage),
                };
                let (unit, _) = j.token.rsplit_once('~').unwrap_or((&j.token, ""));
                let workload = unit.split('@').next().unwrap_or(unit).to_string();
                let recorded = std::fs::read(self.launch_record(&j.token))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LaunchRequest>(&b).ok());
                if let Some(request) = recorded {
                    out.push(Instance {
                        request,
                        state,
                        launched_at: now,
                        since: now,
                        endpoints: Vec::new(),
                    });
                    continue;
                }
                let pool = self
                    .pools
                    .keys()
                    .find(|p| p.starts_with(&format!("{provider}:")))
                    .cloned()
                    .unwrap_or_default();
                let region = pool
                    .rsplit_once(':')
                    .map(|(r, _)| r.to_string())
                    .unwrap_or_default();
                out.push(Instance {
                    request: LaunchRequest {
                        token: j.token.clone(),
                        unit: unit.to_string(),
                        workload,
                        pool,
                        region,
                        category: Category::OnDemand,
                        nodes: 1,
                        committed_nodes: 0,
                        replicas: 1,
                    },
                    state,
                    launched_at: now,
                    since: now,
                    endpoints: Vec::new(),
                });
            }
        }
        Observation {
            instances: out,
            unobserved,
        }
    }

    fn capacity(&mut self, _now: Time, pool: &str) -> Result<PoolCapacity, DriverError> {
        let (_, conf) = self.conf(pool)?;
        self.jobs(conf).map_err(|e| DriverError::Unreachable {
            region: pool
                .rsplit_once(':')
                .map(|(r, _)| r.to_string())
                .unwrap_or_default(),
            reason: e,
        })?;
        Ok(self.pools.get(pool).map(|p| p.1).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// See issue 15: a workload name holding a comma set variables of its own in cluster jobs.
    #[test]
    fn a_workload_name_cannot_set_variables_in_a_slurm_job() {
        let req = LaunchRequest {
            token: "s1-x~1".into(),
            unit: "x,LD_PRELOAD=/tmp/evil.so".into(),
            workload: "x,LD_PRELOAD=/tmp/evil.so".into(),
            pool: "alpha:site:gpu8".into(),
            region: "alpha:site".into(),
            category: Category::OnDemand,
            nodes: 1,
            committed_nodes: 0,
            replicas: 1,
        };
        let (args, env) = sbatch_command(&req, Path::new("/w"), 8, "true");
        assert!(args.contains(&"--export=ALL".to_string()), "{args:?}");
        for a in &args {
            assert!(
                !a.contains("LD_PRELOAD"),
                "a value reached an argument: {a}"
            );
        }
        assert!(env.contains(&("STRATUS_WORKLOAD", req.workload.clone())));
        assert!(env.iter().all(|(k, _)| k.starts_with("STRATUS_")));
    }
}
