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
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            db,
            "--tick",
            "0.05",
            "--boot",
            "0.2",
        ])
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

#[test]
fn serve_survives_kill_9_without_losing_workloads_or_history() {
    let dir = std::env::temp_dir().join(format!("stratus-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/s.db", dir.display());
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
    std::fs::remove_dir_all(&dir).unwrap();
}
