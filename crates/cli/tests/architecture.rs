//! The architecture's invariants (ARCHITECTURE.md), checked on the sources: each test fails
//! when code that breaks one is written, naming the file and line.

use std::path::{Path, PathBuf};

fn crates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, recursively, in order.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Lines of code (comments dropped, and everything from a `#[cfg(test)]` module on).
fn code(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match l.find("//") {
            Some(j) if !l[..j].contains('"') => &l[..j],
            _ => l,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// Places in `krate`'s sources (except files named in `allowed`) that use any of `banned`.
fn uses(krate: &str, banned: &[&str], allowed: &[&str]) -> Vec<String> {
    let root = crates().join(krate).join("src");
    let mut found = Vec::new();
    for f in sources(&root) {
        let name = f.strip_prefix(&root).unwrap().display().to_string();
        if allowed.contains(&name.as_str()) {
            continue;
        }
        for (n, l) in code(&f) {
            for b in banned {
                if l.contains(b) {
                    found.push(format!(
                        "crates/{krate}/src/{name}:{n}: `{b}` in `{}`",
                        l.trim()
                    ));
                }
            }
        }
    }
    found
}

const CLOCKS: &[&str] = &["Instant", "SystemTime", "UNIX_EPOCH", "chrono::"];
const RANDOM: &[&str] = &[
    "rand::",
    "thread_rng",
    "getrandom",
    "RandomState::new",
    "/dev/urandom",
];
const IO: &[&str] = &["std::fs", "std::net", "std::process", "std::env", "tokio::"];

#[test]
fn the_planner_does_no_io_reads_no_clock_and_draws_nothing_at_random() {
    let mut banned = Vec::new();
    banned.extend_from_slice(CLOCKS);
    banned.extend_from_slice(RANDOM);
    banned.extend_from_slice(IO);
    let found = uses("plan", &banned, &[]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_studies_read_no_clock_and_draw_nothing_at_random() {
    let mut banned = Vec::new();
    banned.extend_from_slice(CLOCKS);
    banned.extend_from_slice(RANDOM);
    let found = uses("studies", &banned, &[]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_model_reads_only_the_file_it_is_asked_to_parse_and_no_clock() {
    let mut banned = Vec::new();
    banned.extend_from_slice(CLOCKS);
    banned.extend_from_slice(RANDOM);
    banned.extend_from_slice(&["std::net", "std::process", "std::env", "tokio::"]);
    let found = uses("model", &banned, &[]);
    assert!(found.is_empty(), "{}", found.join("\n"));
    let fs = uses("model", &["std::fs"], &["parse.rs"]);
    assert!(fs.is_empty(), "{}", fs.join("\n"));
}

#[test]
fn the_controller_reads_no_clock_and_draws_nothing_at_random() {
    // The drivers talk to the world (processes, files, Slurm's commands, EC2) and may time
    // their calls; the loop itself, its strategies and the simulated provider may not.
    let mut banned = Vec::new();
    banned.extend_from_slice(CLOCKS);
    banned.extend_from_slice(RANDOM);
    banned.extend_from_slice(IO);
    let found = uses(
        "control",
        &banned,
        &["local.rs", "slurm.rs", "aws.rs", "k8s.rs", "fault.rs"],
    );
    assert!(found.is_empty(), "{}", found.join("\n"));
    // The fault injector draws only from its seeded stream.
    let random = uses("control", RANDOM, &[]);
    assert!(random.is_empty(), "{}", random.join("\n"));
}

#[test]
fn the_ledger_reads_no_clock_and_draws_nothing_at_random() {
    let mut banned = Vec::new();
    banned.extend_from_slice(CLOCKS);
    banned.extend_from_slice(RANDOM);
    banned.extend_from_slice(&["std::net", "std::process", "tokio::"]);
    let found = uses("ledger", &banned, &[]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_simulator_keeps_wall_time_out_of_its_results() {
    // The engine times its own control phase for the benchmark; nothing else reads a clock.
    let found = uses("sim", CLOCKS, &["engine.rs"]);
    assert!(found.is_empty(), "{}", found.join("\n"));
    let random = uses("sim", RANDOM, &[]);
    assert!(random.is_empty(), "{}", random.join("\n"));
}

/// The crates a crate's manifest depends on (normal dependencies only).
fn deps(krate: &str) -> Vec<String> {
    let text = std::fs::read_to_string(crates().join(krate).join("Cargo.toml")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            inside =
                t == "[dependencies]" || t.starts_with("[target.") && t.ends_with(".dependencies]");
            continue;
        }
        if inside {
            if let Some((name, _)) = t.split_once('=') {
                // `name = …` or `name.workspace = true`.
                let name = name.trim().split('.').next().unwrap_or("");
                if !name.is_empty() && !name.starts_with('#') {
                    out.push(name.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn only_the_server_knows_sql_and_the_lower_crates_no_http() {
    for krate in [
        "model", "catalog", "plan", "studies", "control", "ledger", "sim", "gateway", "cli",
    ] {
        let d = deps(krate);
        assert!(!d.iter().any(|x| x == "sqlx"), "{krate} depends on sqlx");
    }
    for krate in [
        "model", "catalog", "plan", "studies", "control", "ledger", "sim",
    ] {
        let d = deps(krate);
        for http in ["axum", "hyper", "hyper-util", "ureq"] {
            assert!(!d.iter().any(|x| x == http), "{krate} depends on {http}");
        }
    }
}

#[test]
fn data_flows_one_way() {
    // Each crate may depend only on the crates before it.
    let order = [
        "model", "catalog", "plan", "studies", "control", "ledger", "sim", "server", "cli",
    ];
    for (i, krate) in order.iter().enumerate() {
        for d in deps(krate) {
            let Some(name) = d.strip_prefix("stratus-") else {
                continue;
            };
            let pos = order.iter().position(|k| *k == name);
            if let Some(p) = pos {
                assert!(p < i, "{krate} depends on {name}, which comes after it");
            }
        }
    }
    // The gateway reads the model and the catalog (the latency table) only.
    let gw: Vec<String> = deps("gateway")
        .into_iter()
        .filter(|d| d.starts_with("stratus-"))
        .collect();
    assert_eq!(gw, ["stratus-model", "stratus-catalog"]);
    // The test kit sits on the gateway; only tests, the demo and the benchmark use it.
    let kit: Vec<String> = deps("testkit")
        .into_iter()
        .filter(|d| d.starts_with("stratus-"))
        .collect();
    assert_eq!(kit, ["stratus-model", "stratus-gateway"]);
}

#[test]
fn the_scanner_sees_what_it_must() {
    // A check that finds nothing must be able to find something.
    let found = uses("control", &["Instant"], &[]);
    assert!(found.iter().any(|f| f.contains("slurm.rs")), "{found:?}");
}

#[test]
fn the_gateways_replica_state_depends_on_no_other_part_of_the_request_path() {
    // `replica` is what `proxy`, `health`, `metrics` and `follow` share; none of them is
    // imported by another's state, so the request path has no import loop.
    let dir = crates().join("gateway/src");
    let mut found = Vec::new();
    for (file, banned) in [
        (
            "replica.rs",
            &[
                "crate::proxy",
                "crate::health",
                "crate::metrics",
                "crate::follow",
            ][..],
        ),
        (
            "metrics.rs",
            &["crate::health", "crate::follow", "proxy::Replica"][..],
        ),
        (
            "health.rs",
            &["crate::metrics", "crate::follow", "proxy::Replica"][..],
        ),
    ] {
        for (n, line) in code(&dir.join(file)) {
            for b in banned {
                if line.contains(b) {
                    found.push(format!("gateway/src/{file}:{n}: {b}"));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
