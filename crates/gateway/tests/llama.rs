//! End to end against real OpenAI-compatible servers: two llama.cpp servers (`llama-server`)
//! with a tiny random-weight model, behind the gateway. Streaming, prefix reuse seen in the
//! replicas' own cache accounting, and failover when one is killed.
//!
//! `.ci/llama.sh` builds the server and the model and sets STRATUS_TEST_LLAMA_SERVER and
//! STRATUS_TEST_LLAMA_MODEL; without them the test says so and does nothing.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stratus_gateway::Config;
use stratus_model::Format;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_llama(bin: &str, model: &str, log: &std::path::Path) -> Server {
    let port = free_port();
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(bin)
        .args([
            "-m",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        // One slot: its KV cache keeps the last prompt, which the next one can reuse.
        .args(["-c", "2048", "-np", "1", "-t", "1", "--seed", "7"])
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("llama-server starts");
    Server { child, port }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    let mut frames = 0;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            frames += 1;
            text.extend_from_slice(&d);
        }
    }
    (status, String::from_utf8_lossy(&text).into_owned(), frames)
}

async fn wait_ready(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, _, _) = request(addr, "GET", "/health", None).await;
            if status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("llama-server on port {port} not ready within 60 s");
}

fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_streams_reuses_prefixes_and_fails_over_on_llama_cpp() {
    let (Ok(bin), Ok(model)) = (
        std::env::var("STRATUS_TEST_LLAMA_SERVER"),
        std::env::var("STRATUS_TEST_LLAMA_MODEL"),
    ) else {
        eprintln!("STRATUS_TEST_LLAMA_SERVER/MODEL not set: .ci/llama.sh builds llama.cpp's server and a tiny model and sets them");
        return;
    };
    let logs = std::env::temp_dir().join(format!("stratus-llama-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let a = start_llama(&bin, &model, &logs.join("a.log"));
    let b = start_llama(&bin, &model, &logs.join("b.log"));
    wait_ready(a.port).await;
    wait_ready(b.port).await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nhealth:\n  interval_ms: 100\n  timeout_ms: 1000\nreplicas:\n  - id: a\n    url: http://127.0.0.1:{}\n    region: aws:us-east-1\n    models: [tiny]\n  - id: b\n    url: http://127.0.0.1:{}\n    region: aws:us-east-1\n    models: [tiny]\n",
        a.port, b.port
    );
    let cfg = Config::parse("llama-gateway.yaml", &yaml, Format::Yaml).unwrap();
    let gw = stratus_gateway::start(cfg, stratus_catalog::builtin())
        .await
        .unwrap();
    let system =
        "You are the assistant of the stratus operators. You answer about pools, regions, \
                  prices, power and carbon of the fleet, briefly and precisely, and you always \
                  name the pool and the region you mean. "
            .repeat(2);
    let ask = |q: &str, stream: bool| {
        json!({
            "model": "tiny",
            "stream": stream,
            "max_tokens": 12,
            "temperature": 0.0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]
        })
    };

    // 1. Streaming passes through: many events, the usage the gateway asked for, [DONE].
    // A long answer (EOS ignored): the tiny model writes a dozen tokens in about a millisecond,
    // which a reader can take in one read however the gateway forwards them.
    let mut long = ask("Which pool?", true);
    long["max_tokens"] = json!(256);
    long["ignore_eos"] = json!(true);
    let (status, text, frames) = request(gw.addr, "POST", "/v1/chat/completions", Some(long)).await;
    assert_eq!(status, 200, "{text}");
    let ev = events(&text);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.len() >= 100, "{} events", chunks.len());
    assert!(
        frames >= 2,
        "{} events arrived in one piece: the gateway buffered the stream",
        chunks.len()
    );
    let usage = chunks.iter().rev().find_map(|c| c.get("usage")).unwrap();
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 1);

    // 2. Prefix reuse: the same long system prompt goes to the same replica, whose KV cache
    // then serves most of the prompt (llama.cpp reports what it evaluated in timings.prompt_n).
    let mut cached = Vec::new();
    for q in ["Which region?", "What does it cost?", "How much power?"] {
        let (status, text, _) =
            request(gw.addr, "POST", "/v1/chat/completions", Some(ask(q, false))).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
        let evaluated = v["timings"]["prompt_n"].as_u64().unwrap();
        cached.push(prompt - evaluated);
    }
    assert!(
        cached.iter().all(|&c| c > 50),
        "prompt tokens served from the replica's cache: {cached:?}"
    );
    assert!(gw.gateway.metrics.tokens("anonymous", "tiny", "cached") >= cached.iter().sum::<u64>());
    let served: Vec<u64> = ["a", "b"]
        .iter()
        .map(|id| gw.gateway.metrics.requests_on(id))
        .collect();
    assert!(
        served.contains(&0),
        "one replica took the whole conversation: {served:?}"
    );
    let home = served.iter().position(|&n| n > 0).unwrap();
    eprintln!("llama.cpp e2e: prompt tokens from cache per request {cached:?}, requests per replica {served:?}");

    // 3. Failover: kill the replica holding the prefix; requests keep succeeding on the other.
    let (victim, survivor) = if home == 0 { (a, b) } else { (b, a) };
    drop(victim);
    for q in ["And now?", "Still there?", "Which pool again?"] {
        let (status, text, _) =
            request(gw.addr, "POST", "/v1/chat/completions", Some(ask(q, true))).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(events(&text).last().map(String::as_str), Some("[DONE]"));
    }
    assert_eq!(gw.gateway.metrics.requests_on(["a", "b"][1 - home]), 3);
    gw.shutdown().await;
    drop(survivor);
    let _ = std::fs::remove_dir_all(&logs);
}
