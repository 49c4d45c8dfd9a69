//! The gateway against mock replicas on loopback: streaming, failover, cut streams, limits,
//! ejection and recovery, region failover, prefix affinity, accounting.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use stratus_gateway::{Config, Running};
use stratus_model::Format;
use stratus_testkit::mock::{self, Faults, MockServer};

/// A response as the client saw it: status, headers, and body chunks with arrival times.
struct Seen {
    status: u16,
    headers: hyper::HeaderMap,
    chunks: Vec<(Instant, Bytes)>,
    /// Whether the body ended with a transport error.
    broken: bool,
}

impl Seen {
    fn text(&self) -> String {
        self.chunks
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.text()).expect("JSON body")
    }
    /// SSE `data:` payloads.
    fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_string))
            .collect()
    }
}

/// POST with optional extra headers, reading the body frame by frame; `on_first` runs when
/// the first body bytes arrive.
async fn post_with(
    addr: SocketAddr,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
    mut on_first: impl FnMut(),
) -> Seen {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut b = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = send
        .send_request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut chunks = Vec::new();
    let mut broken = false;
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    if chunks.is_empty() {
                        on_first();
                    }
                    chunks.push((Instant::now(), d));
                }
            }
            Some(Err(_)) => {
                broken = true;
                break;
            }
            None => break,
        }
    }
    Seen {
        status,
        headers,
        chunks,
        broken,
    }
}

async fn post(addr: SocketAddr, body: Value, headers: &[(&str, &str)]) -> Seen {
    post_with(addr, "/v1/chat/completions", body, headers, || {}).await
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get(path)
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

fn chat(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "tiny",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are a terse assistant for the stratus tests."},
            {"role": "user", "content": prompt}
        ]
    })
}

async fn replica(faults: Faults, seed: u64) -> MockServer {
    mock::start("127.0.0.1:0".parse().unwrap(), "tiny", faults, seed)
        .await
        .unwrap()
}

/// A gateway over `replicas` (url, region) with extra YAML appended.
async fn gateway(replicas: &[(String, &str)], extra: &str) -> Running {
    let mut y = String::from("listen: 127.0.0.1:0\nhealth:\n  interval_ms: 50\n  timeout_ms: 200\nejection:\n  consecutive_failures: 2\n  base_ms: 300\n  max_ms: 5000\n");
    y.push_str(extra);
    y.push_str("replicas:\n");
    for (i, (url, region)) in replicas.iter().enumerate() {
        y.push_str(&format!(
            "  - id: r{i}\n    url: {url}\n    region: {region}\n    models: [tiny]\n    cost_per_hour: {}\n    metrics: true\n",
            10 + i
        ));
    }
    let cfg = Config::parse("test-gateway.yaml", &y, Format::Yaml).unwrap();
    stratus_gateway::start(cfg, stratus_catalog::builtin())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_passes_through_token_by_token() {
    let m = replica(
        Faults {
            ttft_ms: 30,
            itl_ms: 120,
            tokens: 6,
            ..Faults::default()
        },
        1,
    )
    .await;
    let gw = gateway(&[(m.url(), "aws:us-east-1")], "").await;
    let mock = m.mock.clone();
    let mut in_progress_at_first = None;
    let seen = post_with(
        gw.addr,
        "/v1/chat/completions",
        chat("hello", true),
        &[],
        || in_progress_at_first = Some(mock.in_progress.load(std::sync::atomic::Ordering::SeqCst)),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.headers["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    // The first token reached the client while the replica was still generating.
    assert_eq!(in_progress_at_first, Some(1));
    // Tokens arrived as separate chunks over time, not as one buffered body.
    assert!(seen.chunks.len() >= 6, "{} chunks", seen.chunks.len());
    let ev = seen.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let contents: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        contents
            .iter()
            .filter(|v| !v["choices"].as_array().unwrap().is_empty())
            .count(),
        6
    );
    // The gateway asked for usage, so the final chunk carries it and the key is debited.
    let usage = &contents.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert_eq!(
        gw.gateway.metrics.tokens("anonymous", "tiny", "completion"),
        6
    );
    gw.shutdown().await;
    m.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dying_before_the_first_byte_is_invisible_to_clients() {
    let slow = replica(
        Faults {
            ttft_ms: 400,
            tokens: 3,
            ..Faults::default()
        },
        2,
    )
    .await;
    let other = replica(Faults::default(), 3).await;
    // The slow replica is nearest, so requests go there first.
    let gw = gateway(
        &[
            (slow.url(), "aws:us-east-1"),
            (other.url(), "aws:us-west-2"),
        ],
        "policy: nearest\nretries: 2\n",
    )
    .await;
    let addr = gw.addr;
    let inflight = tokio::spawn(async move {
        post(
            addr,
            chat("in flight", true),
            &[("x-user-region", "aws:us-east-1")],
        )
        .await
    });
    // Kill the nearest replica while the request waits for its first token.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        slow.mock
            .in_progress
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    slow.kill();
    let seen = inflight.await.unwrap();
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.events().last().map(String::as_str), Some("[DONE]"));
    // Requests that arrive after the death never see it either.
    for i in 0..20 {
        let s = post(
            gw.addr,
            chat(&format!("after {i}"), i % 2 == 0),
            &[("x-user-region", "aws:us-east-1")],
        )
        .await;
        assert_eq!(s.status, 200, "request {i}: {}", s.text());
    }
    assert!(
        gw.gateway
            .metrics
            .retries
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    assert_eq!(
        other
            .mock
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        21
    );
    gw.shutdown().await;
    other.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_way_ends_with_an_error_event() {
    let m = replica(
        Faults {
            tokens: 10,
            itl_ms: 5,
            disconnect_rate: 1.0,
            ..Faults::default()
        },
        4,
    )
    .await;
    let gw = gateway(&[(m.url(), "aws:us-east-1")], "").await;
    let seen = post(gw.addr, chat("cut me", true), &[]).await;
    assert_eq!(seen.status, 200);
    assert!(
        !seen.broken,
        "the client gets a clean end, not a broken connection"
    );
    let ev = seen.events();
    assert_eq!(ev.len(), 6, "{ev:?}"); // five tokens, then the error
    let err: Value = serde_json::from_str(ev.last().unwrap()).unwrap();
    assert_eq!(err["error"]["code"], "replica_disconnected");
    assert!(err["error"]["message"].as_str().unwrap().contains("r0"));
    assert!(!ev.iter().any(|e| e == "[DONE]"));
    let metrics = get(gw.addr, "/metrics").await;
    assert!(metrics.contains("end=\"cut\""), "{metrics}");
    gw.shutdown().await;
    m.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_their_request_and_token_limits_are_enforced() {
    let m = replica(
        Faults {
            tokens: 40,
            ..Faults::default()
        },
        5,
    )
    .await;
    let log = std::env::temp_dir().join(format!("stratus-usage-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let extra = format!(
        "usage_log: {}\nkeys:\n  - name: team-a\n    key: sk-a\n    rpm: 3\n  - name: team-b\n    key_sha256: {}\n    tpm: 60\n  - name: team-c\n    key: sk-c\n    models: [other]\n",
        log.display(),
        stratus_gateway::proxy::sha256_hex("sk-b")
    );
    let gw = gateway(&[(m.url(), "aws:us-east-1")], &extra).await;
    // No key, a wrong key, a model the key may not use.
    assert_eq!(post(gw.addr, chat("x", false), &[]).await.status, 401);
    let wrong = post(
        gw.addr,
        chat("x", false),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    let c = post(
        gw.addr,
        chat("x", false),
        &[("authorization", "Bearer sk-c")],
    )
    .await;
    assert_eq!(c.status, 403);
    // Requests per minute: three pass, the fourth is refused with Retry-After.
    for _ in 0..3 {
        let s = post(
            gw.addr,
            chat("x", false),
            &[("authorization", "Bearer sk-a")],
        )
        .await;
        assert_eq!(s.status, 200);
    }
    let r = post(
        gw.addr,
        chat("x", false),
        &[("authorization", "Bearer sk-a")],
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&after), "retry-after {after}");
    // Tokens per minute: 60; each answer is 40 completion tokens plus the prompt's words.
    let b = [("authorization", "Bearer sk-b")];
    assert_eq!(post(gw.addr, chat("x", true), &b).await.status, 200);
    assert_eq!(post(gw.addr, chat("x", true), &b).await.status, 200);
    let t = post(gw.addr, chat("x", true), &b).await;
    assert_eq!(t.status, 429);
    assert!(t.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute"));
    // Accounting: per key and model in /metrics, and one usage record per request.
    let metrics = get(gw.addr, "/metrics").await;
    assert!(
        metrics.contains(
            "stratus_gateway_tokens_total{key=\"team-b\",model=\"tiny\",kind=\"completion\"} 80"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("stratus_gateway_rate_limited_total{key=\"team-a\",limit=\"rpm\"} 1"));
    assert!(metrics.contains("stratus_gateway_rate_limited_total{key=\"team-b\",limit=\"tpm\"} 1"));
    gw.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 5);
    assert!(recs
        .iter()
        .all(|r| r["provider"] == "aws" && r["model"] == "tiny"));
    assert_eq!(
        recs.iter()
            .filter(|r| r["key"] == "team-b")
            .map(|r| r["completion_tokens"].as_u64().unwrap())
            .sum::<u64>(),
        80
    );
    assert!(!text.contains("sk-"), "keys never reach the log");
    let _ = std::fs::remove_file(&log);
    m.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_replica_is_ejected_and_comes_back() {
    let flaky = replica(Faults::default(), 6).await;
    let steady = replica(Faults::default(), 7).await;
    let gw = gateway(
        &[
            (flaky.url(), "aws:us-east-1"),
            (steady.url(), "aws:us-east-1"),
        ],
        "policy: least-load\n",
    )
    .await;
    let g = gw.gateway.clone();
    let ord = std::sync::atomic::Ordering::SeqCst;
    // Flap 1: the flaky replica answers 500s. Clients see none of them (retried), and two
    // failures in a row eject it.
    flaky.mock.set(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for i in 0..10 {
        let s = post(gw.addr, chat(&format!("p{i}"), false), &[]).await;
        assert_eq!(s.status, 200);
    }
    assert_eq!(g.replicas().replicas[0].ejections.load(ord), 1);
    let sent_while_ejected = flaky.mock.requests.load(ord);
    for i in 0..10 {
        assert_eq!(
            post(gw.addr, chat(&format!("q{i}"), false), &[])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        flaky.mock.requests.load(ord),
        sent_while_ejected,
        "ejected: no traffic"
    );
    // Recovered: after the ejection time it takes traffic again.
    flaky.mock.set(Faults::default());
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 0..10 {
        assert_eq!(
            post(gw.addr, chat(&format!("r{i}"), false), &[])
                .await
                .status,
            200
        );
    }
    assert!(flaky.mock.requests.load(ord) > sent_while_ejected + 2);
    // Flap 2, through active health checks this time: /health fails, the replica is marked
    // down without a single client request failing, then back up when /health recovers.
    flaky.mock.set(Faults {
        healthy: false,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!g.replicas().replicas[0].healthy.load(ord));
    let before = flaky.mock.requests.load(ord);
    for i in 0..5 {
        assert_eq!(
            post(gw.addr, chat(&format!("s{i}"), false), &[])
                .await
                .status,
            200
        );
    }
    assert_eq!(flaky.mock.requests.load(ord), before);
    flaky.mock.set(Faults::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(g.replicas().replicas[0].healthy.load(ord));
    let metrics = get(gw.addr, "/metrics").await;
    assert!(metrics.contains("stratus_gateway_replica_ejections_total{replica=\"r0\"} 1"));
    assert!(metrics.contains("stratus_gateway_replica_up{replica=\"r0\"} 1"));
    gw.shutdown().await;
    flaky.kill();
    steady.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dark_region_fails_over_to_the_next_nearest() {
    let east_a = replica(Faults::default(), 8).await;
    let east_b = replica(Faults::default(), 9).await;
    let europe = replica(Faults::default(), 10).await;
    let gw = gateway(
        &[
            (east_a.url(), "aws:us-east-1"),
            (east_b.url(), "aws:us-east-1"),
            (europe.url(), "gcp:europe-west4"),
        ],
        "",
    )
    .await;
    let ord = std::sync::atomic::Ordering::SeqCst;
    let user = [("x-user-region", "aws:us-east-2")];
    for i in 0..10 {
        assert_eq!(
            post(gw.addr, chat(&format!("a{i}"), false), &user)
                .await
                .status,
            200
        );
    }
    // Near users are served near.
    assert_eq!(europe.mock.requests.load(ord), 0);
    assert_eq!(
        east_a.mock.requests.load(ord) + east_b.mock.requests.load(ord),
        10
    );
    // The whole region goes dark: every request still succeeds, from Europe.
    east_a.kill();
    east_b.kill();
    for i in 0..10 {
        let s = post(gw.addr, chat(&format!("b{i}"), i % 2 == 0), &user).await;
        assert_eq!(s.status, 200, "{}", s.text());
    }
    assert_eq!(europe.mock.requests.load(ord), 10);
    gw.shutdown().await;
    europe.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sharing_a_prefix_share_a_replica_and_its_cache() {
    let reps = [
        replica(Faults::default(), 11).await,
        replica(Faults::default(), 12).await,
        replica(Faults::default(), 13).await,
    ];
    let list: Vec<(String, &str)> = reps.iter().map(|r| (r.url(), "aws:us-east-1")).collect();
    let gw = gateway(&list, "").await;
    let ord = std::sync::atomic::Ordering::SeqCst;
    // Ten conversations with one long system prompt (longer than the 256 bytes that key the
    // affinity), one after another.
    let system = "You answer questions about the fleet of the lab in great detail. ".repeat(6);
    let mut cached = 0;
    for i in 0..10 {
        let body = json!({"model": "tiny", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("question {i}")}]});
        let s = post(gw.addr, body, &[]).await;
        assert_eq!(s.status, 200);
        cached += s.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
    }
    let counts: Vec<u64> = reps.iter().map(|r| r.mock.requests.load(ord)).collect();
    assert_eq!(counts.iter().filter(|&&c| c == 10).count(), 1, "{counts:?}");
    assert!(cached > 0, "the replica's prefix cache was hit");
    // Distinct prefixes spread over all three.
    for i in 0..60 {
        let s = post(
            gw.addr,
            chat(&format!("{i} distinct opening words"), false),
            &[],
        )
        .await;
        assert_eq!(s.status, 200);
    }
    let after: Vec<u64> = reps.iter().map(|r| r.mock.requests.load(ord)).collect();
    assert!(after.iter().zip(&counts).all(|(a, b)| a > b), "{after:?}");
    gw.shutdown().await;
    for r in reps {
        r.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_errors_are_openai_shaped() {
    let m = replica(Faults::default(), 14).await;
    let gw = gateway(&[(m.url(), "aws:us-east-1")], "").await;
    let models: Value = serde_json::from_str(&get(gw.addr, "/v1/models").await).unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    let unknown = post(gw.addr, json!({"model": "huge", "prompt": "x"}), &[]).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "model_not_found");
    let bad = post(gw.addr, json!(["not", "an", "object"]), &[]).await;
    assert_eq!(bad.status, 400);
    // Completions (not chat) work too.
    let c = post_with(
        gw.addr,
        "/v1/completions",
        json!({"model": "tiny", "prompt": "once upon"}),
        &[],
        || {},
    )
    .await;
    assert_eq!(c.status, 200);
    assert_eq!(c.json()["object"], "text_completion");
    // Every replica gone: 503 with the reason.
    m.kill();
    let s = post(gw.addr, chat("x", false), &[]).await;
    assert_eq!(s.status, 503);
    assert_eq!(s.json()["error"]["code"], "no_replica_available");
    gw.shutdown().await;
}

/// Issue 15, item 6: a client that disconnected just before the final usage event was charged
/// 0 tokens, bypassing its token limit and the bill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_the_usage_event_is_charged_what_it_received() {
    let m = replica(
        Faults {
            itl_ms: 20,
            tokens: 400,
            ..Faults::default()
        },
        11,
    )
    .await;
    let gw = gateway(
        &[(m.url(), "aws:us-east-1")],
        "keys:\n  - name: team\n    key: sk-t\n    tpm: 100000\n",
    )
    .await;
    // Read the head and a few events, then hang up.
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let body = chat("count to four hundred for me please", true).to_string();
    let resp = send
        .send_request(
            Request::post("/v1/chat/completions")
                .header("host", gw.addr.to_string())
                .header("content-type", "application/json")
                .header("authorization", "Bearer sk-t")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut events = 0;
    while events < 10 {
        let f = body.frame().await.unwrap().unwrap();
        if let Ok(d) = f.into_data() {
            events += d.windows(5).filter(|w| w == b"data:").count();
        }
    }
    drop(body);
    drop(send);
    conn.abort();
    // The gateway notices when it next writes; then the request is accounted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.gateway.metrics.tokens("team", "tiny", "completion") == 0 {
        assert!(Instant::now() < deadline, "never accounted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let completion = gw.gateway.metrics.tokens("team", "tiny", "completion");
    let prompt = gw.gateway.metrics.tokens("team", "tiny", "prompt");
    assert!(completion >= 10, "{completion} completion tokens");
    assert!(
        completion < 400,
        "{completion}: charged past what it received"
    );
    assert!(prompt > 0, "the prompt is charged too");
    let metrics = get(gw.addr, "/metrics").await;
    assert!(
        metrics.contains("stratus_gateway_usage_estimated_total 1"),
        "{metrics}"
    );
    gw.shutdown().await;
    m.kill();
}

/// Issue 15, item 5: a request head left unfinished held its connection open (75 s in the
/// audit); now the gateway drops it after `header_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_left_unfinished_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = replica(Faults::default(), 12).await;
    let gw = gateway(&[(m.url(), "aws:us-east-1")], "header_timeout_ms: 200\n").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // The gateway ends the connection by itself (the wait only bounds a broken test).
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the connection was held open");
    gw.shutdown().await;
    m.kill();
}

/// Issue 15, item 5: nothing capped the connections a client could hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_answered_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = replica(Faults::default(), 13).await;
    let gw = gateway(&[(m.url(), "aws:us-east-1")], "max_connections: 2\n").await;
    let _a = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Give the accept loop both before the third arrives (it takes connections in order).
    let mut tries = 0;
    let c = loop {
        tries += 1;
        assert!(tries < 1000, "the third connection was served");
        let mut c = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        c.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).await.unwrap();
        if &head == b"HTTP/1.1 503" {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(c);
    gw.shutdown().await;
    m.kill();
}

/// Issue 15, item 5: a body sent slowly, or never finished, held its connection as long as
/// the client liked; it gets the head's deadline too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_left_unfinished_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = replica(Faults::default(), 14).await;
    let gw = gateway(&[(m.url(), "aws:us-east-1")], "header_timeout_ms: 200\n").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    let r = tokio::time::timeout(Duration::from_secs(60), s.read_exact(&mut head)).await;
    assert!(r.is_ok(), "the connection was held open");
    assert_eq!(&head, b"HTTP/1.1 408");
    assert_eq!(m.mock.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    gw.shutdown().await;
    m.kill();
}

fn replica_cfg(
    id: &str,
    url: &str,
    region: &str,
    draining: bool,
) -> stratus_gateway::config::ReplicaConfig {
    stratus_gateway::config::ReplicaConfig {
        id: id.into(),
        url: url.into(),
        region: region.into(),
        models: vec!["tiny".into()],
        cost_per_hour: 1.0,
        metrics: false,
        draining,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_replica_set_never_cuts_a_stream_and_draining_takes_no_new_requests() {
    let slow = Faults {
        ttft_ms: 20,
        itl_ms: 60,
        tokens: 8,
        ..Faults::default()
    };
    let (a, b) = (replica(slow.clone(), 1).await, replica(slow, 2).await);
    let gw = gateway(&[(a.url(), "aws:us-east-1")], "").await;
    let g = gw.gateway.clone();
    assert_eq!(g.replicas().version, 0);

    // A stream starts on `r0`; the set is replaced by one without it while the stream runs.
    let addr = gw.addr;
    let stream = tokio::spawn(async move { post(addr, chat("long answer", true), &[]).await });
    while a.mock.in_progress.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    g.set_replicas(1, &[replica_cfg("new", &b.url(), "aws:us-east-1", false)]);
    assert_eq!(g.replicas().version, 1);
    // New requests go to the new replica at once ...
    let seen = post(gw.addr, chat("hi", false), &[]).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(g.metrics.requests_on("new"), 1);
    // ... while the stream on the removed one finishes whole.
    let seen = stream.await.unwrap();
    assert_eq!(seen.status, 200);
    assert!(!seen.broken);
    assert_eq!(seen.events().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(g.metrics.requests_on("r0"), 1);

    // A draining replica keeps its state but takes no new requests; the same id coming back
    // serving is the same replica (its counters go on).
    g.set_replicas(
        2,
        &[
            replica_cfg("new", &b.url(), "aws:us-east-1", true),
            replica_cfg("r0", &a.url(), "aws:us-east-1", false),
        ],
    );
    for _ in 0..5 {
        assert_eq!(post(gw.addr, chat("hi", false), &[]).await.status, 200);
    }
    assert_eq!(g.metrics.requests_on("new"), 1, "draining took nothing");
    assert_eq!(g.metrics.requests_on("r0"), 6);
    // With every replica draining, requests are refused before any byte, and a model no
    // replica serves any more is unknown.
    g.set_replicas(3, &[replica_cfg("new", &b.url(), "aws:us-east-1", true)]);
    assert_eq!(post(gw.addr, chat("hi", false), &[]).await.status, 503);
    g.set_replicas(4, &[]);
    assert_eq!(post(gw.addr, chat("hi", false), &[]).await.status, 404);
    let metrics = get(gw.addr, "/metrics").await;
    assert!(
        metrics.contains("replica=\"r0\""),
        "counters outlive the set: {metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_bound_of_requests_in_flight_the_gateway_answers_503_before_reading_the_body() {
    let m = replica(
        Faults {
            ttft_ms: 300,
            itl_ms: 50,
            tokens: 4,
            ..Faults::default()
        },
        1,
    )
    .await;
    let gw = gateway(&[(m.url(), "aws:us-east-1")], "max_in_flight: 1\n").await;
    let g = gw.gateway.clone();
    let addr = gw.addr;
    // One request holds the only place until its stream has ended.
    let first = tokio::spawn(async move { post(addr, chat("long", true), &[]).await });
    while m.mock.in_progress.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = post(gw.addr, chat("hi", false), &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["code"], "overloaded");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(g.metrics.refusals("admit", "busy"), 1);
    let first = first.await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.events().last().map(String::as_str), Some("[DONE]"));
    // The place is free again once the answer has ended.
    assert_eq!(post(gw.addr, chat("hi", false), &[]).await.status, 200);
    assert_eq!(g.in_flight.load(std::sync::atomic::Ordering::SeqCst), 0);
    let metrics = get(gw.addr, "/metrics").await;
    assert!(
        metrics.contains("stratus_gateway_refused_total{layer=\"admit\",reason=\"busy\"} 1"),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_do_not_use_up_the_retries_so_a_dead_region_never_fails_a_request() {
    // Two replicas whose processes are gone (their ports refuse) ahead of a live one, and no
    // retries: a request still reaches the live one, since nothing was sent to the dead.
    let (dead1, dead2, live) = (
        replica(Faults::default(), 1).await,
        replica(Faults::default(), 2).await,
        replica(Faults::default(), 3).await,
    );
    let (u1, u2) = (dead1.url(), dead2.url());
    dead1.kill();
    dead2.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Health probes far apart, so only the request path sees the dead ones.
    let mut y = String::from(
        "listen: 127.0.0.1:0\npolicy: cheapest\nretries: 0\nhealth:\n  interval_ms: 600000\nreplicas:\n",
    );
    for (i, url) in [u1, u2, live.url()].iter().enumerate() {
        y.push_str(&format!(
            "  - id: r{i}\n    url: {url}\n    region: aws:us-east-1\n    models: [tiny]\n    cost_per_hour: {}\n",
            10 + i
        ));
    }
    let cfg = Config::parse("test-gateway.yaml", &y, Format::Yaml).unwrap();
    let gw = stratus_gateway::start(cfg, stratus_catalog::builtin())
        .await
        .unwrap();
    let seen = post(gw.addr, chat("hi", false), &[]).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(gw.gateway.metrics.requests_on("r2"), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_that_answers_without_end_costs_a_bounded_buffer_and_nothing_else() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A hostile or broken control plane: every watch gets a chunked body that never ends.
    let cp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = cp.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = [b'x'; 65536];
                loop {
                    let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                    c.extend_from_slice(&chunk);
                    c.extend_from_slice(b"\r\n");
                    if s.write_all(&c).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let dir = std::env::temp_dir().join(format!("stratus-gw-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "viewer-token\n").unwrap();
    let m = replica(Faults::default(), 1).await;
    let extra = format!(
        "control_plane:\n  url: http://{cp_addr}\n  token_file: {}\n  watch_s: 1\n",
        dir.join("token").display()
    );
    let gw = gateway(&[(m.url(), "aws:us-east-1")], &extra).await;
    // The watch fails as soon as the body passes the bound, not when its 11 s deadline runs
    // out with the body in memory, and is retried; the static replica serves.
    let deadline = Instant::now() + Duration::from_secs(8);
    while gw
        .gateway
        .metrics
        .control_plane_errors
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the watch never gave up on the body"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(post(gw.addr, chat("hi", false), &[]).await.status, 200);
    assert_eq!(
        gw.gateway.replicas().version,
        0,
        "no list was taken from the junk"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
