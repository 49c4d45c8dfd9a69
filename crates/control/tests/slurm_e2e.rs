//! End to end on real Slurm: two clusters (alpha and beta, started by `.ci/slurm.sh`) stand for
//! two clouds. A training job and two smaller jobs run where the plan puts them; then alpha's
//! slurmctld is killed, and within a bounded number of reconciles the jobs run on beta,
//! resuming from the last checkpoint marker, with nothing launched twice.

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

#[test]
fn jobs_fail_over_to_the_other_cluster_when_a_slurmctld_dies() {
    let Ok(base) = std::env::var("STRATUS_TEST_SLURM") else {
        eprintln!("STRATUS_TEST_SLURM not set: .ci/run starts two Slurm clusters and sets it");
        return;
    };
    let base = PathBuf::from(base);
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
    let config = ControllerConfig {
        tick_s: 1.0,
        react_s: 1.0,
        probe_s: 3600.0,
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
    let pid = std::fs::read_to_string(base.join("alpha/slurmctld.pid")).unwrap();
    assert!(Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(500));

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
