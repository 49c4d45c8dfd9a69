//! A fault-injecting, OpenAI-compatible mock replica: configurable time to first token,
//! inter-token delay, error rate and abrupt disconnects, switchable at run time (in process,
//! or by `POST /admin/faults` with the same JSON). The gateway's tests and `stratus bench
//! gateway` run against it; `stratus mock-replica` runs it alone.
//!
//! It reports usage the way OpenAI-compatible servers do (with `stream_options.include_usage`
//! for streams), counts a prompt's words as its tokens, and reports prompt tokens as
//! `cached_tokens` when it has seen the prompt's first 256 bytes before (a small prefix cache),
//! so prefix-affinity routing is visible in its answers, as it is in llama.cpp's.

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use stratus_gateway::proxy::{full, json_response, serve_connection, Body, BoxError};

/// Behaviour; every field can change while the replica runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Milliseconds before the first token.
    pub ttft_ms: u64,
    /// Milliseconds between tokens.
    pub itl_ms: u64,
    /// Tokens per answer (capped by the request's `max_tokens`).
    pub tokens: u32,
    /// Probability of answering 500 instead.
    pub error_rate: f64,
    /// Probability of cutting a stream abruptly after half its tokens.
    pub disconnect_rate: f64,
    /// Whether `/health` answers 200 (else 503).
    pub healthy: bool,
    /// Queue depth reported in `/metrics` (requests waiting, not those being served).
    pub extra_queue: u32,
    /// Completions served at once (continuous-batching slots); more wait in a queue, which
    /// `/metrics` reports. 0: no limit.
    pub slots: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            ttft_ms: 0,
            itl_ms: 0,
            tokens: 8,
            error_rate: 0.0,
            disconnect_rate: 0.0,
            healthy: true,
            extra_queue: 0,
            slots: 0,
        }
    }
}

/// A running mock replica's shared state.
#[derive(Debug)]
pub struct Mock {
    /// Model name it serves.
    pub model: String,
    /// Current behaviour.
    pub faults: Mutex<Faults>,
    seed: u64,
    draws: AtomicU64,
    /// Completion requests received.
    pub requests: AtomicU64,
    /// Requests in progress.
    pub in_progress: AtomicU64,
    /// Completions holding a slot, and those waiting for one.
    busy: Mutex<(u32, u32)>,
    freed: tokio::sync::Notify,
    prefixes: Mutex<HashSet<u64>>,
}

/// A held slot, given back when the answer ends or is dropped.
struct Slot(Arc<Mock>);
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.busy.lock().expect("slot lock").0 -= 1;
        self.0.freed.notify_one();
    }
}

impl Mock {
    /// Wait for one of `slots` slots (none with 0).
    async fn slot(self: &Arc<Self>, slots: u32) -> Option<Slot> {
        if slots == 0 {
            return None;
        }
        let mut queued = false;
        loop {
            {
                let mut b = self.busy.lock().expect("slot lock");
                if b.0 < slots {
                    b.0 += 1;
                    if queued {
                        b.1 -= 1;
                    }
                    return Some(Slot(self.clone()));
                }
                if !queued {
                    b.1 += 1;
                    queued = true;
                }
            }
            // A release while no one waits leaves a permit, so no wake-up is missed.
            self.freed.notified().await;
        }
    }
}

/// Prefixes the mock's cache holds before it is cleared (bounded memory).
const PREFIX_CACHE: usize = 4096;

impl Mock {
    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Change the behaviour.
    pub fn set(&self, f: Faults) {
        *self.faults.lock().expect("faults lock") = f;
    }

    /// The behaviour now.
    pub fn get(&self) -> Faults {
        self.faults.lock().expect("faults lock").clone()
    }
}

/// A mock replica running on the current runtime.
pub struct MockServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Shared state.
    pub mock: Arc<Mock>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Kill it: stop accepting and drop every open connection mid-flight, as a crashed
    /// process would.
    pub fn kill(self) {
        self.task.abort();
    }
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Two mock replicas of `model` (quick answers, no faults), placed in `aws:us-east-1` and
/// `gcp:europe-west4`, behind a stratus gateway on a free loopback port: live inference
/// traffic for `stratus demo --serve` and the dashboard's browser test. Everything stops
/// when the returned values are dropped.
pub async fn behind_gateway(
    model: &str,
    fleet: &stratus_model::Fleet,
) -> std::io::Result<(stratus_gateway::Running, [MockServer; 2])> {
    let faults = Faults {
        ttft_ms: 20,
        itl_ms: 2,
        tokens: 8,
        ..Default::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().expect("constant address");
    let east = start(any, model, faults.clone(), 1).await?;
    let west = start(any, model, faults, 2).await?;
    let yaml = format!(
        "listen: 127.0.0.1:0\nreplicas:\n  - id: east\n    url: {}\n    region: aws:us-east-1\n    models: [{model}]\n  - id: west\n    url: {}\n    region: gcp:europe-west4\n    models: [{model}]\n",
        east.url(),
        west.url()
    );
    let cfg =
        stratus_gateway::Config::parse("gateway.yaml", &yaml, stratus_model::parse::Format::Yaml)
            .map_err(std::io::Error::other)?;
    Ok((stratus_gateway::start(cfg, fleet).await?, [east, west]))
}

/// Start a mock replica on `addr` (port 0 for any).
pub async fn start(
    addr: SocketAddr,
    model: &str,
    faults: Faults,
    seed: u64,
) -> std::io::Result<MockServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let mock = Arc::new(Mock {
        model: model.to_string(),
        faults: Mutex::new(faults),
        seed,
        draws: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        in_progress: AtomicU64::new(0),
        busy: Mutex::new((0, 0)),
        freed: tokio::sync::Notify::new(),
        prefixes: Mutex::new(HashSet::new()),
    });
    let m = mock.clone();
    // Connections are tracked in a JoinSet owned by the accept task, so aborting that task
    // (a "kill") drops every connection at once.
    let acceptor = stratus_gateway::listen::Acceptor::new(
        listener,
        stratus_gateway::listen::ConnLimits::default(),
    );
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        let header_timeout = acceptor.limits.header_timeout;
        loop {
            tokio::select! {
                (stream, _, slot) = acceptor.next() => {
                    let m = m.clone();
                    conns.spawn(async move {
                        serve_connection(stream, header_timeout, move |req| handle(m.clone(), req)).await;
                        drop(slot);
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(MockServer { addr, mock, task })
}

async fn handle(m: Arc<Mock>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/health") => {
            if m.get().healthy {
                Response::new(full("{\"status\":\"ok\"}"))
            } else {
                json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "down"}))
            }
        }
        (Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": m.model, "object": "model", "owned_by": "mock"}]}),
        ),
        (Method::GET, "/metrics") => {
            let f = m.get();
            // Like vLLM's `num_requests_waiting`, the queue excludes requests being served.
            Response::new(full(format!(
                "# TYPE stratus_mock_queue_depth gauge\nstratus_mock_queue_depth {}\n# TYPE stratus_mock_running gauge\nstratus_mock_running {}\n# TYPE stratus_mock_requests_total counter\nstratus_mock_requests_total {}\n",
                f.extra_queue + m.busy.lock().expect("slot lock").1,
                m.in_progress.load(Ordering::Relaxed),
                m.requests.load(Ordering::Relaxed)
            )))
        }
        (Method::POST, "/admin/faults") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": "body"})),
            };
            match serde_json::from_slice::<Faults>(&body) {
                Ok(f) => {
                    m.set(f);
                    json_response(StatusCode::OK, &json!({"ok": true}))
                }
                Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
            }
        }
        (Method::POST, "/v1/chat/completions") | (Method::POST, "/v1/completions") => {
            let chat = path == "/v1/chat/completions";
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": "body"})),
            };
            complete(m, chat, &body).await
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": "not found"}}),
        ),
    }
}

/// Counts the in-progress request down when the answer ends or is dropped.
struct Progress(Arc<Mock>);
impl Drop for Progress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn complete(m: Arc<Mock>, chat: bool, body: &[u8]) -> Response<Body> {
    m.requests.fetch_add(1, Ordering::Relaxed);
    m.in_progress.fetch_add(1, Ordering::Relaxed);
    let progress = Progress(m.clone());
    let f = m.get();
    let slot = m.slot(f.slots).await;
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "body is not JSON", "type": "invalid_request_error"}}),
        );
    };
    if m.draw() < f.error_rate {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": {"message": "injected failure", "type": "server_error"}}),
        );
    }
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage_wanted = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max = v
        .get("max_tokens")
        .or_else(|| v.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let n = (f.tokens as u64).min(max).max(1);
    let prompt = prompt_text(&v);
    let prompt_tokens = prompt.split_whitespace().count() as u64;
    let cached = {
        let mut end = prompt.len().min(256);
        while !prompt.is_char_boundary(end) {
            end -= 1;
        }
        let key = stratus_gateway::route::hash_bytes(&prompt.as_bytes()[..end]);
        let mut cache = m.prefixes.lock().expect("prefix lock");
        if cache.contains(&key) {
            prompt_tokens
        } else {
            if cache.len() >= PREFIX_CACHE {
                cache.clear();
            }
            cache.insert(key);
            0
        }
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n,
        "total_tokens": prompt_tokens + n,
        "prompt_tokens_details": {"cached_tokens": cached},
    });
    let model = m.model.clone();
    let id = format!("mock-{}", m.requests.load(Ordering::Relaxed));
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    if !stream {
        let wait = f.ttft_ms + f.itl_ms * (n - 1);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let text: String = (0..n).map(|i| format!("t{i} ")).collect();
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": text, "finish_reason": "length"})
        };
        drop(slot);
        drop(progress);
        return json_response(
            StatusCode::OK,
            &json!({"id": id, "object": object, "model": model, "choices": [choice], "usage": usage}),
        );
    }
    let cut_after = (m.draw() < f.disconnect_rate).then_some(n / 2);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(async move {
        let _progress = progress;
        let _slot = slot;
        let chunk_object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        for i in 0..n {
            let d = if i == 0 { f.ttft_ms } else { f.itl_ms };
            if d > 0 {
                tokio::time::sleep(Duration::from_millis(d)).await;
            }
            if cut_after == Some(i) {
                let _ = tx.send(Err("injected disconnect".into())).await;
                return;
            }
            let choice = if chat {
                json!({"index": 0, "delta": {"content": format!("t{i} ")}, "finish_reason": Value::Null})
            } else {
                json!({"index": 0, "text": format!("t{i} "), "finish_reason": Value::Null})
            };
            let ev = json!({"id": id, "object": chunk_object, "model": model, "choices": [choice]});
            if tx
                .send(Ok(Frame::data(Bytes::from(format!("data: {ev}\n\n")))))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
        if usage_wanted {
            let ev = json!({"id": id, "object": chunk_object, "model": model, "choices": [], "usage": usage});
            let _ = tx
                .send(Ok(Frame::data(Bytes::from(format!("data: {ev}\n\n")))))
                .await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let mut r = Response::new(UnsyncBoxBody::new(ChannelBody(rx)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn prompt_text(v: &Value) -> String {
    let mut s = String::new();
    if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
        for m in msgs {
            match m.get("content") {
                Some(Value::String(c)) => {
                    s.push_str(c);
                    s.push(' ');
                }
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            s.push_str(t);
                            s.push(' ');
                        }
                    }
                }
                _ => {}
            }
        }
    } else if let Some(p) = v.get("prompt").and_then(Value::as_str) {
        s.push_str(p);
    }
    s
}

/// A body fed by a channel; an `Err` item aborts the connection (an abrupt disconnect).
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}
