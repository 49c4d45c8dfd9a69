//! The proxy: accepts client requests, checks the key and its limits, asks [`crate::route`]
//! for a replica, forwards, and streams the answer back frame by frame as it arrives.
//!
//! Failure rules: a replica that fails before the first response byte has reached the client
//! (refused connection, timeout, 5xx, 429, a cut before the first body bytes) is marked and the
//! request goes to another replica, so a client never sees the failure of a request that had
//! not started. Once bytes have gone out, the request cannot be replayed: a cut stream ends with
//! an OpenAI-style `error` event and the replica is marked.

use crate::config::{parse_base_url, Cidr, Config, ReplicaConfig};
use crate::layer::{AdmitError, AuthError, Refused, RouteError};
use crate::limit::{retry_after_header, Limiter};
use crate::metrics::Metrics;
pub use crate::replica::{Replica, ReplicaLabel, ReplicaSet};
use crate::route::{self, Candidate, Params};
use crate::upstream::Read;
use crate::usage::{self, Scanner, Usage};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stratus_model::LatencyTable;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Errors a response body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Largest request body accepted (prompts are text; 16 MiB is generous).
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// A key's identity and limits.
struct KeyState {
    /// Index into the metrics' key names.
    index: u16,
    name: String,
    models: Vec<String>,
    /// Whether any limit is set (else the limiter is never locked).
    limited: bool,
    limiter: Mutex<Limiter>,
}

/// The running gateway's shared state.
pub struct Gateway {
    pub(crate) cfg: Config,
    /// The replicas now (see [`ReplicaSet`]).
    set: RwLock<Arc<ReplicaSet>>,
    latency: Arc<LatencyTable>,
    networks: Vec<(Cidr, String)>,
    /// Keys in configuration order; with none configured, one `anonymous` key for everyone.
    keys: Vec<KeyState>,
    /// Key hash → index into `keys` (empty when the gateway is open).
    key_index: HashMap<String, usize>,
    /// hyper's client, for health probes and metric scrapes (requests use `upstream`).
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    /// Counters and histograms behind `/metrics`.
    pub metrics: Metrics,
    /// Requests admitted and not yet answered in full (bounded by `max_in_flight`).
    pub in_flight: std::sync::atomic::AtomicUsize,
    usage_tx: Option<mpsc::Sender<String>>,
    epoch: Instant,
}

/// Usage records waiting for the writer; past this many (a disk that does not keep up) new
/// records are counted in `stratus_gateway_usage_log_dropped_total` and dropped rather than
/// held in memory without bound.
pub const USAGE_QUEUE: usize = 16_384;

/// Where a running gateway listens, and how to stop it.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The shared state, for inspection.
    pub gateway: Arc<Gateway>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, end the background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // The accept loop and the health checker end on the signal; the usage writer flushes
        // after every batch and is simply stopped.
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Gateway {
    /// State for `cfg`; RTTs come from `fleet`'s latency table.
    pub fn new(cfg: Config, fleet: &stratus_model::Fleet) -> Arc<Gateway> {
        let latency = LatencyTable::cached(fleet);
        let replicas: Vec<Arc<Replica>> = cfg
            .replicas
            .iter()
            .map(|r| Arc::new(Replica::new(r, &latency).expect("validated")))
            .collect();
        let set = RwLock::new(Arc::new(ReplicaSet::new(0, replicas)));
        let networks = cfg
            .client_networks
            .iter()
            .map(|n| (Cidr::parse(&n.cidr).expect("validated"), n.location.clone()))
            .collect();
        let mut key_index = HashMap::new();
        let mut keys: Vec<KeyState> = cfg
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let h = match (&k.key, &k.key_sha256) {
                    (Some(clear), _) => sha256_hex(clear),
                    (_, Some(h)) => h.to_ascii_lowercase(),
                    _ => unreachable!("validated"),
                };
                key_index.insert(h, i);
                KeyState {
                    index: i as u16,
                    name: k.name.clone(),
                    models: k.models.clone(),
                    limited: k.rpm.is_some() || k.tpm.is_some(),
                    limiter: Mutex::new(Limiter::new(k.rpm, k.tpm, 0.0)),
                }
            })
            .collect();
        if keys.is_empty() {
            keys.push(KeyState {
                index: 0,
                name: "anonymous".into(),
                models: Vec::new(),
                limited: false,
                limiter: Mutex::new(Limiter::new(None, None, 0.0)),
            });
        }
        let mut key_names: Vec<String> = cfg.keys.iter().map(|k| k.name.clone()).collect();
        if key_names.is_empty() {
            key_names.push("anonymous".into());
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4096)
            .build(http);
        let metrics = Metrics::new(key_names);
        Arc::new(Gateway {
            cfg,
            set,
            latency,
            networks,
            keys,
            key_index,
            client,
            metrics,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            usage_tx: None,
            epoch: Instant::now(),
        })
    }

    /// The replica set now: a snapshot that stays valid however the set changes.
    pub fn replicas(&self) -> Arc<ReplicaSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in the replicas `list` (the control plane's version `version`): a replica whose
    /// id and URL stay the same keeps its state; a new one starts healthy (the control plane
    /// advertises a replica only once its health check passed) and is probed from then on;
    /// one that is gone receives no new requests, and its requests in flight finish on the
    /// snapshot they hold. Entries whose URL is not `http://host:port` are skipped.
    pub fn set_replicas(&self, version: u64, list: &[ReplicaConfig]) {
        let old = self.replicas();
        let replicas: Vec<Arc<Replica>> = list
            .iter()
            .filter_map(|r| {
                let base = parse_base_url(&r.url)?.1;
                match old
                    .replicas
                    .iter()
                    .find(|o| o.id == r.id && o.base == base && o.region == r.region)
                {
                    Some(o) => {
                        o.draining.store(r.draining, Ordering::Relaxed);
                        Some(o.clone())
                    }
                    None => Replica::new(r, &self.latency).map(Arc::new),
                }
            })
            .collect();
        *self.set.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(ReplicaSet::new(version, replicas));
    }

    /// Seconds since start: the limiters' clock.
    fn clock(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Milliseconds since start: the ejection clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The user's location: the header, else a configured address range, else the default.
    fn location(&self, req: &Request<Incoming>, peer: IpAddr) -> Option<String> {
        if let Some(v) = req
            .headers()
            .get(self.cfg.user_region_header.as_str())
            .and_then(|v| v.to_str().ok())
        {
            return Some(v.trim().to_string());
        }
        self.networks
            .iter()
            .find(|(n, _)| n.contains(peer))
            .map(|(_, l)| l.clone())
            .or_else(|| self.cfg.default_location.clone())
    }

    /// Record a request's outcome on a replica for passive ejection.
    fn outcome(&self, r: &Replica, ok: bool) {
        if ok && !r.failing.load(Ordering::Relaxed) {
            return; // the common case: nothing to clear, no lock
        }
        let mut e = r.eject.lock().expect("ejection lock");
        if ok {
            e.failures = 0;
            e.streak = 0;
            r.failing.store(false, Ordering::Relaxed);
            return;
        }
        r.failing.store(true, Ordering::Relaxed);
        e.failures += 1;
        let now = self.now_ms();
        if e.failures >= self.cfg.ejection.consecutive_failures && !r.ejected(now) {
            let ms = self
                .cfg
                .ejection
                .base_ms
                .saturating_mul(1u64 << e.streak.min(16))
                .min(self.cfg.ejection.max_ms);
            r.ejected_until_ms.store(now + ms, Ordering::Relaxed);
            e.streak += 1;
            e.failures = 0;
            r.ejections.fetch_add(1, Ordering::Relaxed);
            self.metrics.ejections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The eligible replicas for `model`, minus those `tried`, as routing candidates.
    fn candidates(
        &self,
        set: &ReplicaSet,
        model: &str,
        location: Option<&str>,
        tried: &[usize],
    ) -> Vec<Candidate> {
        let now = self.now_ms();
        let from = location.and_then(|l| self.latency.index_of(l));
        set.replicas
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                !tried.contains(i) && r.models.iter().any(|m| m == model) && r.available(now)
            })
            .map(|(i, r)| Candidate {
                index: i,
                rtt_ms: match (from, r.region_index) {
                    (Some(a), Some(b)) => self.latency.rtt(a, b).0,
                    (None, _) => 0.0,
                    // A replica in a region the fleet does not know: last among the near.
                    (Some(_), None) => 1e6,
                },
                load: r.in_flight.load(Ordering::Relaxed) + r.queue.load(Ordering::Relaxed),
                cost: r.cost,
            })
            .collect()
    }

    /// Serve one client request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::POST, "/v1/chat/completions") | (&Method::POST, "/v1/completions") => {
                self.proxy(req, peer).await
            }
            (&Method::GET, "/v1/models") => self.models(&req),
            (&Method::GET, "/metrics") => {
                let set = self.replicas();
                let mut r = Response::new(full(self.metrics.render(&set.replicas, self.now_ms())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            (&Method::GET, "/health") => Response::new(full("ok\n")),
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {path}"),
            ),
        }
    }

    /// The auth layer: whose key.
    fn authenticate(&self, req: &Request<Incoming>) -> Result<&KeyState, AuthError> {
        if self.key_index.is_empty() {
            return Ok(&self.keys[0]);
        }
        let key = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(key) = key else {
            return Err(AuthError::Missing);
        };
        self.key_index
            .get(&sha256_hex(key))
            .map(|&i| &self.keys[i])
            .ok_or(AuthError::Unknown)
    }

    fn models(&self, req: &Request<Incoming>) -> Response<Body> {
        let key = match self.authenticate(req) {
            Ok(k) => k,
            Err(e) => return self.refuse(e.into()),
        };
        let set = self.replicas();
        let mut names: Vec<&str> = set
            .models
            .iter()
            .map(|m| &**m)
            .filter(|m| key.models.is_empty() || key.models.iter().any(|k| k == m))
            .collect();
        names.sort_unstable();
        names.dedup();
        let data: Vec<serde_json::Value> = names
            .iter()
            .map(|m| serde_json::json!({"id": m, "object": "model", "owned_by": "stratus"}))
            .collect();
        json_response(
            StatusCode::OK,
            &serde_json::json!({"object": "list", "data": data}),
        )
    }

    /// A request the gateway answers itself: counted by layer and reason, then answered.
    fn refuse(&self, r: Refused) -> Response<Body> {
        self.metrics.refused(r.layer(), r.reason());
        r.response()
    }

    async fn proxy(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let start = Instant::now();
        let key = match self.authenticate(&req) {
            Ok(k) => k,
            Err(e) => return self.refuse(e.into()),
        };
        let admitted = match self.admit(key, req, peer).await {
            Ok(a) => a,
            Err(e) => return self.refuse(e.into()),
        };
        match self.clone().route(key, admitted, start).await {
            Ok(r) => r,
            Err(e) => self.refuse(e.into()),
        }
    }

    /// The admit layer: a readable, well-formed request for a model the key may use and some
    /// replica serves, within the key's limits and the bound on requests in flight.
    async fn admit(
        self: &Arc<Self>,
        key: &KeyState,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Admitted, AdmitError> {
        let slot = Admission::take(self)?;
        let location = self.location(&req, peer.ip());
        let path_q = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        let (parts, body) = req.into_parts();
        // The body must arrive within the same deadline as the head: a client that sends it
        // slowly, or never finishes it, does not hold a connection for long.
        let read = tokio::time::timeout(
            Duration::from_millis(self.cfg.header_timeout_ms),
            http_body_util::Limited::new(body, MAX_REQUEST_BYTES).collect(),
        )
        .await;
        let bytes = match read {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => return Err(AdmitError::BodyUnreadable(e.to_string())),
            Err(_) => return Err(AdmitError::BodyTimeout(self.cfg.header_timeout_ms)),
        };
        let info = usage::inspect(&bytes, self.cfg.prefix_bytes).map_err(AdmitError::Invalid)?;
        if !key.models.is_empty() && !key.models.contains(&info.model) {
            return Err(AdmitError::ModelNotAllowed {
                key: key.name.clone(),
                model: info.model,
            });
        }
        // One snapshot for the whole request: retries, the ring and the model agree.
        let set = self.replicas();
        let Some(model) = set.model(&info.model) else {
            return Err(AdmitError::ModelNotFound(info.model));
        };
        let admitted = key
            .limiter
            .lock()
            .expect("limiter lock")
            .admit(self.clock());
        if let Err(refusal) = admitted {
            self.metrics.limited(key.index, refusal.limit);
            return Err(AdmitError::RateLimited {
                key: key.name.clone(),
                limit: refusal.limit,
                retry_after_s: retry_after_header(&refusal),
            });
        }
        let located = location
            .as_deref()
            .filter(|l| self.latency.index_of(l).is_some())
            .unwrap_or("unknown");
        self.metrics.demand(&model, located);
        let prompt_estimate = info.prompt_tokens_estimate();
        let forward: Bytes = match info.forward {
            Some(v) => Bytes::from(v),
            None => bytes,
        };
        Ok(Admitted {
            slot,
            set,
            model,
            prefix: info.prefix,
            location,
            path_q,
            headers: parts.headers,
            forward,
            prompt_estimate,
        })
    }

    /// The route layer: the policy picks a replica; one that fails before the first byte is
    /// marked and another is tried (the state machine: choose → send → first byte, or the
    /// next attempt). The first bytes hand the request to forwarding and accounting.
    async fn route(
        self: Arc<Self>,
        key: &KeyState,
        a: Admitted,
        start: Instant,
    ) -> Result<Response<Body>, RouteError> {
        let Admitted {
            slot,
            set,
            model,
            prefix,
            location,
            path_q,
            headers: client_headers,
            forward,
            prompt_estimate,
        } = a;
        let params = Params {
            policy: self.cfg.policy,
            near_slack_ms: self.cfg.near_slack_ms,
            load_factor: self.cfg.load_factor,
        };
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = String::from("no healthy replica serves this model");
        // Failures after the request reached a replica (a timeout, a 5xx, a cut) use up the
        // `retries` budget; a refused connection does not, since nothing was sent and trying
        // the next replica costs nothing: when a whole region dies at once, a request tries
        // every replica it has before giving up.
        let mut sent_failures = 0;
        while sent_failures <= self.cfg.retries {
            let cands = self.candidates(&set, &model, location.as_deref(), &tried);
            let Some(i) = route::choose(&params, &set.ring, &cands, prefix) else {
                break;
            };
            if !tried.is_empty() {
                self.metrics.retries.fetch_add(1, Ordering::Relaxed);
            }
            tried.push(i);
            let replica = &set.replicas[i];
            replica.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight {
                gw: self.clone(),
                replica: replica.clone(),
            };
            // The request head, written by hand: the client's headers minus hop-by-hop ones
            // and its key.
            let mut head = Vec::with_capacity(512);
            head.extend_from_slice(b"POST ");
            head.extend_from_slice(path_q.as_str().as_bytes());
            head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
            head.extend_from_slice(replica.pool.authority.as_bytes());
            head.extend_from_slice(b"\r\ncontent-length: ");
            head.extend_from_slice(forward.len().to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
            for (name, value) in client_headers.iter() {
                if matches!(
                    name.as_str(),
                    "host"
                        | "connection"
                        | "keep-alive"
                        | "transfer-encoding"
                        | "content-length"
                        | "authorization"
                        | "te"
                        | "upgrade"
                        | "expect"
                        | "proxy-connection"
                ) {
                    continue;
                }
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            let deadline = Duration::from_millis(self.cfg.first_byte_timeout_ms);
            let first = tokio::time::timeout(deadline, async {
                let mut resp = replica.pool.send(&head, &forward).await.map_err(|e| {
                    (
                        e.to_string(),
                        e.kind() == std::io::ErrorKind::ConnectionRefused,
                    )
                })?;
                if resp.status >= 500 || resp.status == 429 {
                    return Err((format!("replica answered {}", resp.status), false));
                }
                // Wait for the first body bytes: until they reach the client, the request can
                // still go elsewhere. One read brings everything the replica sent together.
                match resp.body.next().await {
                    Ok(Read::Data(d)) => Ok((resp, d, false)),
                    Ok(Read::End(conn)) => {
                        if let Some(c) = conn {
                            replica.pool.put(c);
                        }
                        Ok((resp, Bytes::new(), true))
                    }
                    Err(e) => Err((format!("cut before the first byte: {e}"), false)),
                }
            })
            .await;
            let (mut resp, first, ended) = match first {
                Ok(Ok(x)) => x,
                Ok(Err((e, unsent))) => {
                    last_error = format!("replica {}: {e}", replica.id);
                    drop(guard);
                    self.outcome(replica, false);
                    if !unsent {
                        sent_failures += 1;
                    }
                    continue;
                }
                Err(_) => {
                    sent_failures += 1;
                    last_error = format!(
                        "replica {}: no first byte within {} ms",
                        replica.id, self.cfg.first_byte_timeout_ms
                    );
                    drop(guard);
                    self.outcome(replica, false);
                    continue;
                }
            };
            let ttft = start.elapsed();
            let sse = resp
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let status = resp.status;
            let headers = std::mem::take(&mut resp.headers);
            let mut scanner = Scanner::new(sse);
            scanner.feed(&first);
            let mut body = ProxyBody {
                first: (!first.is_empty()).then_some(first),
                upstream: (!ended).then_some(resp.body),
                scanner,
                sse,
                record: Some(Record {
                    guard,
                    _slot: slot,
                    prompt_estimate,
                    key: key.index,
                    model: model.clone(),
                    start,
                    ttft,
                    status,
                }),
            };
            if ended {
                body.end(End::Complete);
            }
            let mut out = Response::new(UnsyncBoxBody::new(body));
            *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            *out.headers_mut() = headers;
            return Ok(out);
        }
        Err(RouteError {
            model: model.to_string(),
            last_error,
            tried: tried.len(),
        })
    }

    /// A request finished (or was abandoned): account it everywhere. `usage` is what the
    /// replica reported, or (`Err`) an estimate.
    fn finish(&self, rec: &Record, usage: Result<Usage, Usage>, end: End) {
        let replica = &rec.guard.replica;
        match end {
            End::Complete => self.outcome(replica, rec.status < 500),
            End::Cut => self.outcome(replica, false),
            End::ClientGone => {}
        }
        let estimated = usage.is_err();
        if estimated {
            self.metrics.usage_estimated.fetch_add(1, Ordering::Relaxed);
        }
        let u = usage.unwrap_or_else(|e| e);
        let key = &self.keys[rec.key as usize];
        if key.limited {
            key.limiter
                .lock()
                .expect("limiter lock")
                .debit_tokens(u.total(), self.clock());
        }
        let duration = rec.start.elapsed();
        self.metrics.request(
            rec.key,
            &rec.model,
            &replica.label,
            end,
            rec.status,
            &u,
            rec.ttft,
            duration,
        );
        if let Some(tx) = &self.usage_tx {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let line = serde_json::json!({
                "ts": ts,
                "key": key.name,
                "model": &*rec.model,
                "replica": replica.id,
                "provider": replica.provider,
                "region": replica.region,
                "status": rec.status,
                "end": end.name(),
                "prompt_tokens": u.prompt,
                "completion_tokens": u.completion,
                "cached_tokens": u.cached,
                "estimated": estimated,
                "ttft_ms": rec.ttft.as_secs_f64() * 1e3,
                "duration_ms": duration.as_secs_f64() * 1e3,
            });
            if tx.try_send(line.to_string()).is_err() {
                self.metrics
                    .usage_log_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How a proxied request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The replica's body ended normally.
    Complete,
    /// The replica cut the body after bytes had gone to the client.
    Cut,
    /// The client went away first.
    ClientGone,
}

impl End {
    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::Cut => "cut",
            End::ClientGone => "client_gone",
        }
    }
}

/// Decrements the replica's in-flight count however the request ends.
struct InFlight {
    gw: Arc<Gateway>,
    replica: Arc<Replica>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What admit hands to route: the request, read and checked, and its place in the bound on
/// requests in flight.
struct Admitted {
    slot: Admission,
    set: Arc<ReplicaSet>,
    model: Arc<str>,
    prefix: Option<u64>,
    location: Option<String>,
    path_q: hyper::http::uri::PathAndQuery,
    headers: hyper::HeaderMap,
    forward: Bytes,
    prompt_estimate: u64,
}

/// One of the gateway's `max_in_flight` places, held from admission until the answer ends
/// (its body included) or is abandoned.
struct Admission(Arc<Gateway>);

impl Admission {
    fn take(gw: &Arc<Gateway>) -> Result<Admission, AdmitError> {
        let bound = gw.cfg.max_in_flight.unwrap_or(gw.cfg.max_connections);
        let was = gw.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Admission(gw.clone());
        if was >= bound {
            return Err(AdmitError::Busy(bound));
        }
        Ok(slot)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Record {
    guard: InFlight,
    _slot: Admission,
    /// Prompt tokens estimated from the request's text.
    prompt_estimate: u64,
    /// Index into `Gateway::keys`.
    key: u16,
    /// The model, as the replica set names it.
    model: Arc<str>,
    start: Instant,
    ttft: Duration,
    status: u16,
}

/// The response body: the first bytes (read while the replica could still be swapped), then
/// whatever each read of the replica's connection brings, passed on at once.
struct ProxyBody {
    first: Option<Bytes>,
    upstream: Option<crate::upstream::Reader>,
    scanner: Scanner,
    sse: bool,
    record: Option<Record>,
}

impl ProxyBody {
    fn end(&mut self, end: End) {
        self.upstream = None;
        if let Some(rec) = self.record.take() {
            self.scanner.finish();
            let gw = rec.guard.gw.clone();
            // A client that went before the replica's usage event (or a replica that never
            // sends one) is charged what it received, estimated, never nothing.
            let usage = match self.scanner.usage {
                Some(u) => Ok(u),
                None => Err(Usage {
                    prompt: rec.prompt_estimate,
                    completion: self.scanner.events,
                    cached: 0,
                }),
            };
            gw.finish(&rec, usage, end);
        }
    }
}

impl HttpBody for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(d) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        let Some(up) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        match up.poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Read::Data(d))) => {
                this.scanner.feed(&d);
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            Poll::Ready(Ok(Read::End(conn))) => {
                if let (Some(c), Some(rec)) = (conn, this.record.as_ref()) {
                    rec.guard.replica.pool.put(c);
                }
                this.end(End::Complete);
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                let replica = this
                    .record
                    .as_ref()
                    .map(|r| r.guard.replica.id.clone())
                    .unwrap_or_default();
                this.end(End::Cut);
                if this.sse {
                    let msg = format!("replica {replica} failed mid-stream: {e}");
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(
                        usage::stream_error_event(&msg),
                    )))))
                } else {
                    // Not a stream: the client's connection is aborted, as the replica's was.
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.upstream.is_none()
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if self.record.is_some() {
            self.end(End::ClientGone);
        }
    }
}

/// Serve one accepted connection with hyper's HTTP/1 server, `handle` answering each request
/// (the gateway's and the mock replica's connections alike). A request's head must arrive
/// within `header_timeout`.
pub async fn serve_connection<F, Fut>(
    stream: tokio::net::TcpStream,
    header_timeout: Duration,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let svc = hyper::service::service_fn(move |req| {
        let answer = handle(req);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// A whole body from bytes.
pub fn full(s: impl Into<Bytes>) -> Body {
    UnsyncBoxBody::new(Full::new(s.into()).map_err(|never| match never {}))
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An OpenAI-shaped error response.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({"error": {"message": message, "type": code, "code": code}}),
    )
}

/// Hex SHA-256 (keys are compared by hash only).
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Start the gateway on the current tokio runtime: bind, spawn the accept loop, the health
/// checker and the usage writer.
pub async fn start(cfg: Config, fleet: &stratus_model::Fleet) -> std::io::Result<Running> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let usage_file = match &cfg.usage_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("usage_log {p}: {e}")))?,
        ),
        None => None,
    };
    let follow = match &cfg.control_plane {
        Some(cp) => Some((
            cp.clone(),
            crate::follow::read_token(&cp.token_file).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let mut gw = Gateway::new(cfg, fleet);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(file) = usage_file {
        let (tx, rx) = mpsc::channel(USAGE_QUEUE);
        Arc::get_mut(&mut gw).expect("not shared yet").usage_tx = Some(tx);
        tasks.push(tokio::spawn(write_usage(file, rx)));
    }
    tasks.push(tokio::spawn(crate::health::run(
        gw.clone(),
        stop_rx.clone(),
    )));
    if let Some((cp, token)) = follow {
        tasks.push(tokio::spawn(crate::follow::run(
            gw.clone(),
            cp,
            token,
            stop_rx.clone(),
        )));
    }
    let accept_gw = gw.clone();
    let mut stop = stop_rx;
    let acceptor = crate::listen::Acceptor::new(
        listener,
        crate::listen::ConnLimits {
            max_connections: gw.cfg.max_connections,
            header_timeout: Duration::from_millis(gw.cfg.header_timeout_ms),
        },
    );
    tasks.push(tokio::spawn(async move {
        let header_timeout = acceptor.limits.header_timeout;
        loop {
            tokio::select! {
                (stream, peer, slot) = acceptor.next() => {
                    let gw = accept_gw.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, header_timeout, move |req| gw.clone().handle(req, peer)).await;
                        drop(slot);
                    });
                }
                _ = stop.changed() => break,
            }
        }
    }));
    Ok(Running {
        addr,
        gateway: gw,
        stop: stop_tx,
        tasks,
    })
}

async fn write_usage(file: std::fs::File, mut rx: mpsc::Receiver<String>) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(file);
    while let Some(line) = rx.recv().await {
        let _ = writeln!(w, "{line}");
        while let Ok(more) = rx.try_recv() {
            let _ = writeln!(w, "{more}");
        }
        let _ = w.flush();
    }
}
