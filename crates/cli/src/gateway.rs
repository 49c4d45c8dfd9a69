//! `stratus gateway`, `stratus mock-replica` and `stratus bench gateway`.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stratus_model::Fleet;
use stratus_testkit::loadgen::{self, Report, Target};

/// Run the gateway until interrupted.
pub fn run(cfg: stratus_gateway::Config, fleet: &Fleet, threads: Option<usize>) -> Result<()> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        b.worker_threads(t.max(1));
    }
    let rt = b
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let replicas = match &cfg.control_plane {
            Some(cp) => format!("{} replicas + those of {}", cfg.replicas.len(), cp.url),
            None => format!("{} replicas", cfg.replicas.len()),
        };
        let keys = cfg.keys.len();
        let policy = cfg.policy.name();
        let running = stratus_gateway::start(cfg, fleet)
            .await
            .context("starting the gateway")?;
        // A closed standard output must not end a server.
        let _ = writeln!(
            std::io::stdout(),
            "stratus gateway listening on http://{} ({replicas}, {keys} keys, policy {policy})",
            running.addr
        );
        tokio::signal::ctrl_c().await.ok();
        running.shutdown().await;
        Ok(())
    })
}

/// Run a mock replica until interrupted.
pub fn mock(
    listen: SocketAddr,
    model: &str,
    faults: stratus_testkit::mock::Faults,
    seed: u64,
) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let m = stratus_testkit::mock::start(listen, model, faults, seed)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        // A closed standard output must not end a server.
        let _ = writeln!(
            std::io::stdout(),
            "mock replica of `{model}` listening on {}",
            m.url()
        );
        tokio::signal::ctrl_c().await.ok();
        m.kill();
        Ok(())
    })
}

/// Arguments of `stratus bench gateway`.
pub struct BenchArgs {
    pub rates: Vec<f64>,
    pub seconds: f64,
    pub connections: usize,
    pub nginx: PathBuf,
    pub prefixes: u64,
    pub workers: usize,
}

/// A child process stopped when dropped: SIGTERM first (nginx's master then stops its
/// workers, which a SIGKILL would orphan), SIGKILL after two seconds.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for(addr: SocketAddr, what: &str) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not start listening on {addr} within 10 s")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn nginx_conf(dir: &Path, listen: u16, upstream: u16, workers: usize) -> String {
    // As root, nginx's workers would switch to `nobody`, which cannot use the temp paths here.
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    #[cfg(not(unix))]
    let user = "";
    let d = dir.display();
    format!(
        "{user}worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
events {{ worker_connections 8192; }}\n\
http {{\n  access_log off;\n  keepalive_requests 100000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  upstream replica {{ server 127.0.0.1:{upstream}; keepalive 512; keepalive_requests 100000000; }}\n\
  server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      proxy_pass http://replica;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n      proxy_request_buffering off;\n    }}\n  }}\n}}\n"
    )
}

/// Closed-loop runs per target, taken in turns so drifts in the machine's load hit all alike.
const ROUNDS: usize = 3;

const BODY: &str = r#"{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"Say eight words."}]}"#;
const DISTINCT_BODY: &str = r#"{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"conversation {n}: say eight words."}]}"#;

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1e3)
}

/// Run the benchmark.
pub fn bench(a: &BenchArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the stratus binary")?;
    let dir = std::env::temp_dir().join(format!("stratus-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (p_mock, p_gw, p_ngx) = (free_port()?, free_port()?, free_port()?);
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    let mut c = Command::new(&exe);
    c.args([
        "mock-replica",
        "--listen",
        &addr(p_mock).to_string(),
        "--tokens",
        "8",
    ]);
    quiet(&mut c);
    let _mock = Proc(c.spawn().context("starting the mock replica")?);
    wait_for(addr(p_mock), "the mock replica")?;
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{p_gw}\nreplicas:\n  - id: mock\n    url: http://127.0.0.1:{p_mock}\n    region: aws:us-east-1\n    models: [tiny]\n"
        ),
    )?;
    let mut c = Command::new(&exe);
    c.args(["gateway", "--threads", &a.workers.to_string(), "--config"])
        .arg(&cfg);
    quiet(&mut c);
    let gw = Proc(c.spawn().context("starting the gateway")?);
    wait_for(addr(p_gw), "stratus gateway")?;
    let nginx = if a.nginx.exists() {
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&dir, p_ngx, p_mock, a.workers))?;
        let mut c = Command::new(&a.nginx);
        c.arg("-c").arg(&conf).arg("-p").arg(&dir);
        quiet(&mut c);
        let p = Proc(c.spawn().context("starting nginx")?);
        wait_for(addr(p_ngx), "nginx")?;
        Some(p)
    } else {
        println!(
            "nginx not found at {} (Debian: apt-get install nginx): its rows are skipped",
            a.nginx.display()
        );
        None
    };
    let mut targets = vec![("direct", p_mock), ("stratus", p_gw)];
    if nginx.is_some() {
        targets.push(("nginx", p_ngx));
    }
    let target = |port: u16, distinct: bool| Target {
        addr: addr(port),
        path: "/v1/chat/completions".into(),
        body: Bytes::from_static(if distinct { DISTINCT_BODY } else { BODY }.as_bytes()),
        auth: None,
        distinct,
    };
    // The load generator gets one thread; the targets share the other core(s).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let secs = Duration::from_secs_f64(a.seconds);
    println!(
        "stratus bench gateway: one mock replica streaming 8 tokens with no delay; {} worker(s) each for stratus and nginx; {} connections, {} s per run; latency = request sent to last byte, ms",
        a.workers, a.connections, a.seconds
    );
    // Warm every path (connection pools, page cache) before measuring.
    for (_, p) in &targets {
        rt.block_on(loadgen::closed_loop(
            &target(*p, false),
            Duration::from_secs(1),
            8,
            None,
        ));
    }
    println!(
        "{:<8} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>11}",
        "target", "rate/s", "done/s", "errors", "p50", "p90", "p99", "p99.9", "max", "late p99"
    );
    let mut open: Vec<(f64, Vec<(&str, Report)>)> = Vec::new();
    for &rate in &a.rates {
        let mut row = Vec::new();
        for (name, p) in &targets {
            let r = rt.block_on(loadgen::open_loop(
                &target(*p, false),
                rate,
                secs,
                a.connections,
            ));
            println!(
                "{:<8} {:>8.0} {:>9.0} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>11}",
                name,
                rate,
                r.rate(),
                r.errors,
                ms(r.latency_us[0]),
                ms(r.latency_us[1]),
                ms(r.latency_us[2]),
                ms(r.latency_us[3]),
                ms(r.latency_us[4]),
                ms(r.late_p99_us)
            );
            row.push((*name, r));
        }
        open.push((rate, row));
    }
    println!("\nadded latency over direct, ms:");
    for (rate, row) in &open {
        let direct = &row[0].1;
        for (name, r) in row.iter().skip(1) {
            println!(
                "  {:<8} at {:>6.0}/s: p50 {:+.3}  p99 {:+.3}",
                name,
                rate,
                (r.latency_us[0] - direct.latency_us[0]) / 1e3,
                (r.latency_us[2] - direct.latency_us[2]) / 1e3
            );
        }
    }
    println!(
        "\nmax throughput (closed loop, {} connections, {} s per run, {ROUNDS} rounds taking turns; median):",
        a.connections, a.seconds
    );
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut errors = vec![0u64; targets.len()];
    for _ in 0..ROUNDS {
        for (k, (_, p)) in targets.iter().enumerate() {
            let r = rt.block_on(loadgen::closed_loop(
                &target(*p, false),
                secs,
                a.connections,
                None,
            ));
            runs[k].push(r.rate());
            errors[k] += r.errors;
        }
    }
    let mut max = Vec::new();
    for (k, (name, _)) in targets.iter().enumerate() {
        let mut v = runs[k].clone();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        println!(
            "  {:<8} {:>9.0} requests/s (runs: {}; {} errors)",
            name,
            median,
            runs[k]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            errors[k]
        );
        max.push((*name, median));
    }
    if let (Some(s), Some(n)) = (
        max.iter().find(|m| m.0 == "stratus"),
        max.iter().find(|m| m.0 == "nginx"),
    ) {
        println!("  stratus / nginx throughput: {:.2}", s.1 / n.1);
    }
    if a.prefixes > 0 {
        let pid = gw.0.id();
        let before = rss_kib(pid);
        let t = Instant::now();
        let r = rt.block_on(loadgen::closed_loop(
            &target(p_gw, true),
            Duration::from_secs(3600),
            a.connections,
            Some(a.prefixes),
        ));
        let after = rss_kib(pid);
        println!(
            "\nmemory: {} requests with distinct prompt prefixes through stratus in {:.1} s ({} errors); resident set {} MiB before, {} MiB after",
            r.ok,
            t.elapsed().as_secs_f64(),
            r.errors,
            before.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            after.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
