//! End to end on real Slurm: two clusters (alpha and beta, started by `.ci/slurm.sh`) stand for
//! two clouds. A training job and two smaller jobs run where the plan puts them; then alpha's
//! slurmctld is killed, and within a bounded number of reconciles the jobs run on beta,
//! resuming from the last checkpoint marker, with nothing launched twice. A controller that
//! restarts while alpha's slurmctld is down launches nothing until alpha answers, then adopts
//! what runs there. The tests share the clusters, so they take turns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use stratus_control::{ActionKind, Controller, ControllerConfig, SlurmDriver, Strategy, Time};
use stratus_model::parse::{from_str, Format};
use stratus_model::{Fleet, WorkloadSet};

const FLEET: &str = r#"
name: two-slurm-clusters
providers:
  - name: alpha
    regions:
      - name: site
        lat: 50.1
        lon: 8.7
        carbon_g_per_kwh: 300
        pue: 1.2
        power_cap_mw: 5
        pools:
          - {id: "alpha:site:gpu8", instance_type: gpu8, accelerator: H100, chips_per_node: 8, nodes: 3, on_demand_per_node_hour: 20, domain_chips: 8}
  - name: beta
    regions:
      - name: site
        lat: 48.9
        lon: 2.3
        carbon_g_per_kwh: 60
        pue: 1.2
        power_cap_mw: 5
        pools:
          - {id: "beta:site:gpu8", instance_type: gpu8, accelerator: H100, chips_per_node: 8, nodes: 3, on_demand_per_node_hour: 40, domain_chips: 8}
"#;

const WORKLOADS: &str = r#"
training:
  - name: pretrain
    chips: 8
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 100000
  - name: ft-a
    chips: 4
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 4000
  - name: ft-b
    chips: 4
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 4000
"#;

fn squeue(conf: &Path) -> Vec<(String, String)> {
    let out = Command::new("squeue")
        .args(["-h", "--states=all", "-o", "%k|%T"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn running(conf: &Path) -> usize {
    squeue(conf).iter().filter(|(_, s)| s == "RUNNING").count()
}

fn progress(d: &SlurmDriver, w: &str) -> u64 {
    std::fs::read_to_string(d.workdir(w).join("progress"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Restarts alpha's controller and cancels our jobs, whatever the test's outcome.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in ["alpha", "beta"] {
            let conf = self.0.join(c).join("slurm.conf");
            if c == "alpha"
                && Command::new("scontrol")
                    .arg("ping")
                    .env("SLURM_CONF", &conf)
                    .output()
                    .map(|o| !String::from_utf8_lossy(&o.stdout).contains("UP"))
                    .unwrap_or(true)
            {
                let _ = Command::new("/usr/sbin/slurmctld")
                    .args(["-f", conf.to_str().unwrap()])
                    .env("SLURM_CONF", &conf)
                    .status();
                std::thread::sleep(Duration::from_secs(2));
            }
            let _ = Command::new("scancel")
                .args(["--quiet", "--partition=main"])
                .env("SLURM_CONF", &conf)
                .status();
        }
    }
}

/// The clusters are shared: one test at a time.
static CLUSTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn clusters() -> Option<(std::sync::MutexGuard<'static, ()>, PathBuf)> {
    let Ok(base) = std::env::var("STRATUS_TEST_SLURM") else {
        eprintln!("STRATUS_TEST_SLURM not set: .ci/run starts two Slurm clusters and sets it");
        return None;
    };
    let guard = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    Some((guard, PathBuf::from(base)))
}

fn kill_slurmctld(base: &Path, cluster: &str) {
    let pid = std::fs::read_to_string(base.join(cluster).join("slurmctld.pid")).unwrap();
    assert!(Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(500));
}

/// Stop a cluster's slurmctld cleanly (it saves its state; its jobs run on): the controller
/// unreachable, as in maintenance.
fn stop_slurmctld(base: &Path, cluster: &str) {
    let conf = base.join(cluster).join("slurm.conf");
    assert!(Command::new("scontrol")
        .args(["shutdown", "slurmctld"])
        .env("SLURM_CONF", &conf)
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Command::new("scontrol")
        .arg("ping")
        .env("SLURM_CONF", &conf)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("UP"))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "{cluster}'s slurmctld did not stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_slurmctld(base: &Path, cluster: &str) {
    let conf = base.join(cluster).join("slurm.conf");
    assert!(Command::new("/usr/sbin/slurmctld")
        .args(["-f", conf.to_str().unwrap()])
        .env("SLURM_CONF", &conf)
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("scontrol")
        .arg("ping")
        .env("SLURM_CONF", &conf)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("UP"))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "{cluster}'s slurmctld did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn jobs_fail_over_to_the_other_cluster_when_a_slurmctld_dies() {
    let Some((_turn, base)) = clusters() else {
        return;
    };
    let _cleanup = Cleanup(base.clone());
    let alpha = base.join("alpha/slurm.conf");
    let beta = base.join("beta/slurm.conf");
    let fleet: Fleet = from_str("fleet.yaml", FLEET, Format::Yaml).unwrap();
    let w: WorkloadSet = from_str("w.yaml", WORKLOADS, Format::Yaml).unwrap();
    let work = std::env::temp_dir().join(format!("stratus-slurm-work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let clusters = BTreeMap::from([
        ("alpha".to_string(), alpha.clone()),
        ("beta".to_string(), beta.clone()),
    ]);
    let mut d = SlurmDriver::new(clusters, &work, stratus_control::slurm::DEFAULT_JOB, &fleet);
    // Jobs fence themselves (the owner file), so a cluster that stops answering may be
    // written off and its work placed again.
    let config = ControllerConfig {
        tick_s: 1.0,
        react_s: 1.0,
        probe_s: 3600.0,
        retry_s: 1.0,
        retry_max_s: 2.0,
        write_off_s: Some(3.0),
        ..ControllerConfig::default()
    };
    let mut c = Controller::new(fleet, Strategy::Stratus, config);
    let start = Instant::now();
    let now = || Time(start.elapsed().as_secs_f64());
    let mut log = Vec::new();

    // Everything on alpha, the cheaper cluster.
    log.extend(c.tick(now(), &w, &mut d));
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(&alpha) < 3
        || ["pretrain", "ft-a", "ft-b"]
            .iter()
            .any(|j| progress(&d, j) < 3)
    {
        assert!(
            Instant::now() < deadline,
            "jobs did not start on alpha: {:?} {log:#?}",
            squeue(&alpha)
        );
        std::thread::sleep(Duration::from_millis(300));
        log.extend(c.tick(now(), &w, &mut d));
    }
    // Nothing live on beta (finished jobs of earlier runs may still be listed).
    assert!(
        squeue(&beta)
            .iter()
            .all(|(_, s)| s != "RUNNING" && s != "PENDING"),
        "{:?}",
        squeue(&beta)
    );
    let before: BTreeMap<&str, u64> = ["pretrain", "ft-a", "ft-b"]
        .iter()
        .map(|j| (*j, progress(&d, j)))
        .collect();

    // Alpha's controller dies.
    kill_slurmctld(&base, "alpha");

    // Within a bounded number of reconciles, all three run on beta.
    let mut ticks = 0;
    while running(&beta) < 3 {
        ticks += 1;
        assert!(
            ticks <= 30,
            "not failed over after {ticks} reconciles: {:?} {log:#?}",
            squeue(&beta)
        );
        log.extend(c.tick(now(), &w, &mut d));
        std::thread::sleep(Duration::from_millis(500));
    }
    // They resumed from their checkpoints, and the stranded copies on alpha fenced themselves off.
    std::thread::sleep(Duration::from_secs(3));
    for (job, p0) in &before {
        let p = progress(&d, job);
        assert!(p > *p0, "{job}: progress {p} not beyond {p0}");
        let marks = std::fs::read_to_string(d.workdir(job).join("checkpoints")).unwrap();
        let lines: Vec<(&str, u64)> = marks
            .lines()
            .filter_map(|l| {
                let (t, n) = l.split_once(' ')?;
                Some((t, n.parse().ok()?))
            })
            .collect();
        let first_token = lines[0].0;
        let switch = lines
            .iter()
            .position(|(t, _)| *t != first_token)
            .expect("a second token");
        // The job on beta resumed from the checkpoint, not from zero.
        assert!(
            lines[switch].1 > *p0,
            "{job}: resumed at {} below {p0}: {marks}",
            lines[switch].1
        );
        // The stranded copy on alpha stopped itself within a beat of the fence moving.
        let stragglers = lines[switch..]
            .iter()
            .filter(|(t, _)| *t == first_token)
            .count();
        assert!(stragglers <= 2, "{job}: alpha kept running: {marks}");
    }
    // Nothing launched twice: one launch per unit per cluster, and the story is in the log.
    let launches: Vec<_> = log
        .iter()
        .filter(|a| a.kind == ActionKind::Launch)
        .collect();
    assert_eq!(launches.len(), 6, "{log:#?}");
    for unit in ["pretrain", "ft-a", "ft-b"] {
        let pools: Vec<&str> = launches
            .iter()
            .filter(|a| a.unit == unit)
            .map(|a| a.pool.as_str())
            .collect();
        assert_eq!(pools, vec!["alpha:site:gpu8", "beta:site:gpu8"], "{unit}");
    }
    assert!(log.iter().any(|a| a.kind == ActionKind::Lost), "{log:#?}");
    let live_on_beta: Vec<String> = squeue(&beta)
        .into_iter()
        .filter(|(_, s)| s == "RUNNING")
        .map(|(t, _)| t)
        .collect();
    let mut units: Vec<&str> = live_on_beta
        .iter()
        .map(|t| t.rsplit_once('~').unwrap().0)
        .collect();
    units.sort();
    assert_eq!(units, vec!["ft-a", "ft-b", "pretrain"]);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_controller_restarted_while_a_slurmctld_is_down_relaunches_nothing() {
    let Some((_turn, base)) = clusters() else {
        return;
    };
    let _cleanup = Cleanup(base.clone());
    let alpha = base.join("alpha/slurm.conf");
    let beta = base.join("beta/slurm.conf");
    let fleet: Fleet = from_str("fleet.yaml", FLEET, Format::Yaml).unwrap();
    let w: WorkloadSet = from_str("w.yaml", WORKLOADS, Format::Yaml).unwrap();
    let work = std::env::temp_dir().join(format!("stratus-slurm-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let map = || {
        BTreeMap::from([
            ("alpha".to_string(), alpha.clone()),
            ("beta".to_string(), beta.clone()),
        ])
    };
    let config = ControllerConfig {
        tick_s: 1.0,
        retry_s: 1.0,
        retry_max_s: 2.0,
        ..ControllerConfig::default()
    };
    let start = Instant::now();
    let now = || Time(start.elapsed().as_secs_f64());
    let mut d = SlurmDriver::new(map(), &work, stratus_control::slurm::DEFAULT_JOB, &fleet);
    let mut c = Controller::new(fleet.clone(), Strategy::Stratus, config.clone());
    c.token_prefix = "r1-".into();
    c.tick(now(), &w, &mut d);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Running for a few seconds, so alpha's slurmctld has saved them in its state.
    while running(&alpha) < 3
        || ["pretrain", "ft-a", "ft-b"]
            .iter()
            .any(|j| progress(&d, j) < 3)
    {
        assert!(
            Instant::now() < deadline,
            "jobs did not start: {:?}",
            squeue(&alpha)
        );
        std::thread::sleep(Duration::from_millis(300));
        c.tick(now(), &w, &mut d);
    }
    // Alpha's slurmctld stops, and the controller restarts without its memory of the units
    // (its token sequence continues, as the service's database keeps it).
    stop_slurmctld(&base, "alpha");
    let mut d = SlurmDriver::new(map(), &work, stratus_control::slurm::DEFAULT_JOB, &fleet);
    let mut c = Controller::new(fleet.clone(), Strategy::Stratus, config);
    c.token_prefix = "r1-".into();
    c.set_journal(Box::new(stratus_control::MemoryJournal::after(1000)));
    let mut log = Vec::new();
    for _ in 0..5 {
        log.extend(c.tick(now(), &w, &mut d));
        assert!(!c.adoption_pending().is_empty(), "alpha was never read");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        log.iter().all(|a| a.kind != ActionKind::Launch),
        "launched while alpha could not be read: {log:#?}"
    );
    assert!(
        squeue(&beta)
            .iter()
            .all(|(_, s)| s != "RUNNING" && s != "PENDING"),
        "{:?}",
        squeue(&beta)
    );
    // Alpha answers again: its jobs are adopted, nothing is launched.
    start_slurmctld(&base, "alpha");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !c.adoption_pending().is_empty() {
        assert!(
            Instant::now() < deadline,
            "alpha's jobs were not adopted: {log:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
        log.extend(c.tick(now(), &w, &mut d));
    }
    for _ in 0..3 {
        log.extend(c.tick(now(), &w, &mut d));
    }
    let story: Vec<String> = log
        .iter()
        .map(|a| {
            format!(
                "{:.1} {:?} {} {}: {}",
                a.at.0, a.kind, a.unit, a.token, a.reason
            )
        })
        .collect();
    assert!(
        log.iter().all(|a| a.kind != ActionKind::Launch),
        "{story:#?}"
    );
    assert_eq!(
        log.iter().filter(|a| a.kind == ActionKind::Adopt).count(),
        3,
        "{log:#?}"
    );
    assert_eq!(running(&alpha), 3, "{:?}", squeue(&alpha));
    let _ = std::fs::remove_dir_all(&work);
}

/// Issue 15, item 4: a workload name went unescaped into `sbatch --export`, so a name with a
/// comma set variables in cluster jobs. The driver is handed such a name directly (the name
/// grammar refuses it at every door the service has).
#[test]
fn a_workload_name_with_a_comma_sets_no_variable_in_the_job() {
    let Some((_turn, base)) = clusters() else {
        return;
    };
    let _cleanup = Cleanup(base.clone());
    let fleet: Fleet = from_str("fleet.yaml", FLEET, Format::Yaml).unwrap();
    let work = std::env::temp_dir().join(format!("stratus-slurm-inject-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let job = "env | grep '^STRATUS_\\|^INJECTED' > \"$STRATUS_WORKDIR/env\"; sleep 30";
    let mut d = SlurmDriver::new(
        BTreeMap::from([("beta".to_string(), base.join("beta/slurm.conf"))]),
        &work,
        job,
        &fleet,
    );
    let name = "x,INJECTED=1";
    let req = stratus_control::LaunchRequest {
        token: "inject~1".into(),
        unit: name.into(),
        workload: name.into(),
        pool: "beta:site:gpu8".into(),
        region: "beta:site".into(),
        category: stratus_plan::Category::OnDemand,
        nodes: 1,
        committed_nodes: 0,
        replicas: 1,
    };
    use stratus_control::Driver;
    d.launch(Time(0.0), &req).unwrap();
    let env = d.workdir(name).join("env");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&env).is_ok_and(|t| t.contains("STRATUS_TOKEN")) {
        assert!(Instant::now() < deadline, "the job did not run");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(
        !text.lines().any(|l| l.starts_with("INJECTED=")),
        "a variable was set: {text}"
    );
    assert!(text.contains("STRATUS_WORKLOAD=x,INJECTED=1"), "{text}");
    let _ = d.stop(Time(1.0), "inject~1");
    let _ = std::fs::remove_dir_all(&work);
}
