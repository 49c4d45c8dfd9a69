//! `stratus serve` as a process: the CLI client against it, and crash safety (kill -9 while it
//! reconciles, restart on the same SQLite file: no lost workload, plan history intact).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "serve-test-admin";

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
