//! `stratus serve` as a process: the CLI client against it, and crash safety (kill -9 while it
//! reconciles, restart on the same SQLite file: no lost workload, plan history intact).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "serve-test-admin";

/// The tests of this file start servers, clusters' jobs and process trees, and time their
/// reconciles: they run one at a time so they do not starve each other on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(db: &str, port: u16) -> Child {
    spawn_with(db, port, &[])
}

fn spawn_with(db: &str, port: u16, extra: &[&str]) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--listen",
        listen.as_str(),
        "--db",
        db,
        "--tick",
        "0.05",
        "--boot",
        "0.2",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(&args)
        .env("STRATUS_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = agent.get(&format!("http://127.0.0.1:{port}/readyz")).call() {
            if r.status() == 200 {
                return child;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("stratus serve did not become ready");
}

/// The billed records the service reports: (client token, start).
fn usage(port: u16) -> Vec<(String, f64)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}/v1/usage"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    r.body_mut()
        .read_to_string()
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["token"].as_str().unwrap().to_string(),
                v["start_s"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn cli(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(args)
        .env("STRATUS_SERVER", format!("http://127.0.0.1:{port}"))
        .env("STRATUS_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wait_for(port: u16, args: &[&str], needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, out) = cli(port, args);
        if out.contains(needle) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh PostgreSQL database when `STRATUS_TEST_POSTGRES` names a server (`.ci/run` does).
fn postgres_db(name: &str) -> Option<String> {
    let Ok(url) = std::env::var("STRATUS_TEST_POSTGRES") else {
        eprintln!("STRATUS_TEST_POSTGRES not set: the PostgreSQL half of this test is skipped");
        return None;
    };
    let db = format!("stratus_{name}_{}", std::process::id());
    let out = Command::new("psql")
        .args([&url, "-c", &format!("CREATE DATABASE {db}")])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(url);
    Some(format!("{base}/{db}"))
}

#[test]
fn serve_survives_kill_9_without_losing_workloads_or_history() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("stratus-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    crash_restart(&format!("sqlite://{}/s.db", dir.display()), &dir);
    if let Some(db) = postgres_db("crash") {
        crash_restart(&db, &dir);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn crash_restart(db: &str, dir: &Path) {
    let db = db.to_string();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let port = free_port();
    let mut child = spawn(&db, port);

    let (ok, out) = cli(
        port,
        &[
            "apply",
            "-f",
            examples.join("small-workloads.yaml").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("created"), "{out}");
    let plan = wait_for(port, &["get", "plan"], "placements");
    assert!(plan.contains("llm-finetune"), "{plan}");
    let actions = wait_for(port, &["get", "actions"], "launch");
    assert!(actions.contains("launch"), "{actions}");
    let (_, plans_before) = cli(port, &["get", "plans"]);
    // Tokens through the CLI: made, listed (never shown again), revoked; every write audited.
    let (ok, out) = cli(
        port,
        &["tokens", "create", "--name", "ci", "--role", "viewer"],
    );
    assert!(ok, "{out}");
    let id = out
        .split("(id ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_string();
    let (ok, list) = cli(port, &["tokens", "list"]);
    assert!(
        ok && list.contains(&id) && list.contains("bootstrap-admin"),
        "{list}"
    );
    let (ok, out) = cli(port, &["tokens", "revoke", &id]);
    assert!(ok, "{out}");
    let (ok, audit) = cli(port, &["get", "audit"]);
    assert!(
        ok && audit.contains("/v1/workloads")
            && audit.contains(&format!("revoked token ci (viewer, {id})")),
        "{audit}"
    );

    // Bad input through the client: an error naming the field, nothing stored changes.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "training:\n  - name: x\n    chips: 8\n    colour: red\n",
    )
    .unwrap();
    let (ok, out) = cli(port, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        !ok && out.contains("colour") && out.contains("400"),
        "{out}"
    );

    // What ran so far is billed, and the bill survives the crashes below.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut billed = usage(port);
    while billed.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        billed = usage(port);
    }
    assert!(!billed.is_empty(), "no usage recorded");

    // kill -9 while the loop reconciles every 50 ms, three times over.
    for round in 0..3 {
        child.kill().unwrap();
        child.wait().unwrap();
        let port2 = free_port();
        child = spawn(&db, port2);
        let (_, w) = cli(port2, &["get", "workloads"]);
        for name in ["llm-finetune", "chat", "nightly-eval"] {
            assert!(w.contains(name), "round {round}: {name} lost: {w}");
        }
        assert!(
            !w.contains(" x "),
            "round {round}: rejected input stored: {w}"
        );
        let (_, plans) = cli(port2, &["get", "plans"]);
        for line in plans_before.lines() {
            assert!(
                plans.contains(line),
                "round {round}: history lost `{line}`: {plans}"
            );
        }
        let (ok, status) = cli(port2, &["status"]);
        assert!(ok && status.contains("\"workloads\": 3"), "{status}");
        let after = usage(port2);
        for (token, start) in &billed {
            assert!(
                after.iter().any(|(t, s)| t == token && s == start),
                "round {round}: usage of {token} lost: {after:?}"
            );
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Ends every job process the local driver started under `dir`, even when a test fails.
struct Jobs(std::path::PathBuf);

impl Jobs {
    fn records(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.join("instances"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".json"))
            .collect();
        v.sort();
        v
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        for e in std::fs::read_dir(self.0.join("instances"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Ok(pid) = std::fs::read_to_string(e.path()) {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", pid.trim())])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

fn launches(port: u16) -> usize {
    cli(port, &["get", "actions"])
        .1
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("launch"))
        .count()
}

#[test]
fn local_processes_survive_a_kill_9_of_the_server_and_are_never_launched_twice() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("stratus-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    local_restart(
        &format!("sqlite://{}/s.db", dir.display()),
        &dir.join("sqlite"),
    );
    if let Some(db) = postgres_db("local") {
        local_restart(&db, &dir.join("postgres"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn local_restart(db: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let state = dir.join("state");
    let jobs = Jobs(state.clone());
    let db = db.to_string();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let extra = ["--driver", "local", "--state-dir", state.to_str().unwrap()];
    let port = free_port();
    let mut child = spawn_with(&db, port, &extra);
    let (ok, out) = cli(
        port,
        &[
            "apply",
            "-f",
            examples.join("small-workloads.yaml").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    // Four units (a job, a batch job, a service in two locations): four processes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while jobs.records().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = jobs.records();
    assert_eq!(before.len(), 4, "{before:?}");
    assert_eq!(launches(port), 4);
    let progress = |w: &str| {
        let name: String = w.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::read_to_string(state.join("work").join(name).join("progress"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    for round in 0..3 {
        child.kill().unwrap();
        child.wait().unwrap();
        let port2 = free_port();
        child = spawn_with(&db, port2, &extra);
        // Many reconciles later, the same instances run and nothing was launched again.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(jobs.records(), before, "round {round}");
        let (_, acts) = cli(port2, &["get", "actions"]);
        assert_eq!(launches(port2), 4, "round {round}: {acts}");
        let (_, status) = cli(port2, &["status"]);
        assert!(status.contains("\"running\": 4"), "round {round}: {status}");
    }
    // The training job's process kept counting its progress throughout.
    assert!(
        progress("llm-finetune") >= 3,
        "{}",
        progress("llm-finetune")
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(jobs);
}

/// Restarts a killed slurmctld and cancels the test's jobs, whatever the outcome.
struct SlurmCleanup(std::path::PathBuf);

impl Drop for SlurmCleanup {
    fn drop(&mut self) {
        for c in ["alpha", "beta"] {
            let conf = self.0.join(c).join("slurm.conf");
            let up = Command::new("scontrol")
                .arg("ping")
                .env("SLURM_CONF", &conf)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("UP"))
                .unwrap_or(false);
            if !up {
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

fn running_on(conf: &Path) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "--states=RUNNING", "-o", "%k"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn through_the_api_jobs_fail_over_between_slurm_clusters() {
    let _serial = serial();
    let Ok(base) = std::env::var("STRATUS_TEST_SLURM") else {
        eprintln!("STRATUS_TEST_SLURM not set: .ci/run starts two Slurm clusters and sets it");
        return;
    };
    let base = std::path::PathBuf::from(base);
    let _cleanup = SlurmCleanup(base.clone());
    let (alpha, beta) = (base.join("alpha/slurm.conf"), base.join("beta/slurm.conf"));
    let dir = std::env::temp_dir().join(format!("stratus-serve-slurm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fleet = dir.join("fleet.yaml");
    std::fs::write(
        &fleet,
        r#"
name: two-slurm-clusters
providers:
  - name: alpha
    regions:
      - {name: site, lat: 50.1, lon: 8.7, carbon_g_per_kwh: 300, pue: 1.2, power_cap_mw: 5,
         pools: [{id: "alpha:site:gpu8", instance_type: gpu8, accelerator: H100, chips_per_node: 8, nodes: 3, on_demand_per_node_hour: 20, domain_chips: 8}]}
  - name: beta
    regions:
      - {name: site, lat: 48.9, lon: 2.3, carbon_g_per_kwh: 60, pue: 1.2, power_cap_mw: 5,
         pools: [{id: "beta:site:gpu8", instance_type: gpu8, accelerator: H100, chips_per_node: 8, nodes: 3, on_demand_per_node_hour: 40, domain_chips: 8}]}
"#,
    )
    .unwrap();
    let workloads = dir.join("w.yaml");
    std::fs::write(
        &workloads,
        r#"
training:
  - {name: pretrain, chips: 8, accelerators: [H100], images: {cuda: img}, work_chip_hours: 100000}
  - {name: ft-a, chips: 4, accelerators: [H100], images: {cuda: img}, work_chip_hours: 4000}
  - {name: ft-b, chips: 4, accelerators: [H100], images: {cuda: img}, work_chip_hours: 4000}
"#,
    )
    .unwrap();
    let db = format!("sqlite://{}/s.db", dir.display());
    let work = dir.join("work");
    let a = format!("alpha={}", alpha.display());
    let b = format!("beta={}", beta.display());
    let port = free_port();
    let extra = [
        "--driver",
        "slurm",
        "--slurm-cluster",
        a.as_str(),
        "--slurm-cluster",
        b.as_str(),
        "--state-dir",
        work.to_str().unwrap(),
        "--fleet",
        fleet.to_str().unwrap(),
    ];
    let mut child = spawn_with(&db, port, &extra);
    let (ok, out) = cli(port, &["apply", "-f", workloads.to_str().unwrap()]);
    assert!(ok, "{out}");
    let wait = |conf: &Path, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while running_on(conf).len() < n {
            assert!(Instant::now() < deadline, "{:?}", running_on(conf));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(&alpha, 3);
    std::thread::sleep(Duration::from_secs(3));
    let progress = |w: &str| {
        let name: String = w.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::read_to_string(work.join(name).join("progress"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before: Vec<u64> = ["pretrain", "ft-a", "ft-b"]
        .iter()
        .map(|w| progress(w))
        .collect();
    assert!(before.iter().all(|&p| p >= 2), "{before:?}");

    // alpha's controller dies; the service notices and moves everything to beta.
    let pid = std::fs::read_to_string(base.join("alpha/slurmctld.pid")).unwrap();
    assert!(Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap()
        .success());
    wait(&beta, 3);
    std::thread::sleep(Duration::from_secs(3));
    for (w, p0) in ["pretrain", "ft-a", "ft-b"].iter().zip(&before) {
        assert!(progress(w) > *p0, "{w} did not resume past {p0}");
    }
    // The actions log tells the story (once the reconcile that moved them is recorded), and
    // nothing was launched twice.
    wait_for(port, &["get", "actions"], "beta:site:gpu8");
    std::thread::sleep(Duration::from_secs(1));
    let (_, log) = cli(port, &["get", "actions"]);
    let launches: Vec<&str> = log
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("launch"))
        .collect();
    assert_eq!(launches.len(), 6, "{log}");
    for unit in ["pretrain", "ft-a", "ft-b"] {
        let pools: Vec<&str> = launches
            .iter()
            .filter(|l| l.split_whitespace().nth(2) == Some(unit))
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(
            pools,
            vec!["alpha:site:gpu8", "beta:site:gpu8"],
            "{unit}: {log}"
        );
    }
    assert!(log.contains(" lost "), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The flow through `stratus serve --driver aws` against a moto server: apply launches EC2
/// instances, a restarted server (which replays the same decisions) creates no second
/// instance, and deleting the workload terminates them.
#[cfg(feature = "aws")]
#[test]
fn through_the_api_work_runs_on_ec2_and_a_restart_launches_nothing_twice() {
    let _serial = serial();
    use stratus_control::aws::{AwsConfig, AwsDriver};
    use stratus_control::{Driver, InstanceState, Time};
    struct Moto(Child);
    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mport = free_port();
    let _moto = Moto(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &mport.to_string()])
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (.ci/run installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", mport)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let endpoint = format!("http://127.0.0.1:{mport}");
    let dir = std::env::temp_dir().join(format!("stratus-serve-aws-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The built-in fleet's AWS part.
    let mut fleet = stratus_catalog::builtin().clone();
    fleet.providers.retain(|p| p.name == "aws");
    fleet.latency.clear();
    let fleet_file = dir.join("aws.json");
    std::fs::write(&fleet_file, serde_json::to_string(&fleet).unwrap()).unwrap();
    let workloads = dir.join("w.yaml");
    std::fs::write(
        &workloads,
        "training:\n  - {name: ft, chips: 16, accelerators: [H100], images: {cuda: img}, work_chip_hours: 1600}\n",
    )
    .unwrap();
    let db = format!("sqlite://{}/s.db", dir.display());
    let extra = [
        "--driver",
        "aws",
        "--aws-endpoint",
        endpoint.as_str(),
        "--fleet",
        fleet_file.to_str().unwrap(),
    ];
    let regions: Vec<String> = fleet.providers[0]
        .regions
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let mut ec2 = AwsDriver::new(AwsConfig::new(
        Some(endpoint.clone()),
        "testing".into(),
        "testing".into(),
        "ami-760aaa0f".into(),
        regions,
    ));
    let live = |ec2: &mut AwsDriver| -> Vec<(String, u32)> {
        ec2.observe(Time(0.0))
            .instances
            .into_iter()
            .filter(|i| {
                !matches!(
                    i.state,
                    InstanceState::Lost(_) | InstanceState::Stopping { .. }
                )
            })
            .map(|i| (i.request.token, i.request.nodes))
            .collect()
    };
    // The child is returned to the caller, who kills and waits for it.
    #[allow(clippy::zombie_processes)]
    let spawn_aws = |port: u16| {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "serve",
            "--listen",
            listen.as_str(),
            "--db",
            db.as_str(),
            "--tick",
            "0.2",
        ];
        args.extend_from_slice(&extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args(&args)
            .env("STRATUS_ADMIN_TOKEN", TOKEN)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if cli(port, &["status"]).0 {
                return child;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let port = free_port();
    let mut child = spawn_aws(port);
    let (ok, out) = cli(port, &["apply", "-f", workloads.to_str().unwrap()]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while live(&mut ec2).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no EC2 instance launched: {}",
            cli(port, &["get", "actions"]).1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let first = live(&mut ec2);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].1, 2, "16 H100 = two p5.48xlarge");

    // kill -9 and restart: the new server adopts the instances; EC2 holds the same ones.
    child.kill().unwrap();
    child.wait().unwrap();
    let port = free_port();
    child = spawn_aws(port);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(live(&mut ec2), first);
    let (_, acts) = cli(port, &["get", "actions"]);
    let launches = acts
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("launch"))
        .count();
    assert_eq!(launches, 1, "{acts}");

    // Deleting the workload terminates its instances.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .delete(&format!("http://127.0.0.1:{port}/v1/workloads/ft"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live(&mut ec2).is_empty() {
        assert!(
            Instant::now() < deadline,
            "not terminated: {:?}",
            live(&mut ec2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
