//! Prometheus text exposition of the gateway's counters: requests and tokens per key and
//! model (what the ledger bills), latency histograms per model, and each replica's state.

use crate::limit::Limit;
use crate::proxy::End;
use crate::replica::{Replica, ReplicaLabel};
use crate::usage::Usage;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Histogram bucket bounds, milliseconds.
const BUCKETS_MS: [f64; 14] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

#[derive(Debug, Clone, Default)]
struct Hist {
    counts: [u64; BUCKETS_MS.len()],
    count: u64,
    sum_ms: f64,
}

impl Hist {
    fn observe(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1e3;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum_ms += ms;
    }
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{}\"}} {}",
                b / 1e3,
                self.counts[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_ms / 1e3);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// (key, model, replica, how it ended, status).
type RequestKey = (u16, Arc<str>, Arc<ReplicaLabel>, &'static str, u16);

/// Counters keyed by indices into `keys` and by shared names (no allocation per request;
/// a replica's counters outlive its place in the replica set).
#[derive(Debug, Default)]
struct Inner {
    /// (key, model, replica, end, status) → requests.
    requests: BTreeMap<RequestKey, u64>,
    /// (key, model, kind) → tokens.
    tokens: BTreeMap<(u16, Arc<str>, &'static str), u64>,
    /// (key, limit) → refusals.
    limited: BTreeMap<(u16, &'static str), u64>,
    /// (layer, reason) → requests the gateway answered itself.
    refused: BTreeMap<(&'static str, &'static str), u64>,
    /// model → user location → requests admitted (what the control plane sizes replicas by).
    demand: BTreeMap<Arc<str>, BTreeMap<String, u64>>,
    /// Per model.
    ttft: BTreeMap<Arc<str>, Hist>,
    /// Per model.
    duration: BTreeMap<Arc<str>, Hist>,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Passive ejections.
    pub ejections: AtomicU64,
    /// Requests sent to a second (or later) replica.
    pub retries: AtomicU64,
    /// Usage records dropped because the usage log's writer fell behind.
    pub usage_log_dropped: AtomicU64,
    /// Requests whose client went before the replica reported usage, charged an estimate.
    pub usage_estimated: AtomicU64,
    /// Replica lists taken from the control plane.
    pub control_plane_updates: AtomicU64,
    /// Watch requests to the control plane that failed (the last list kept serving).
    pub control_plane_errors: AtomicU64,
    inner: Mutex<Inner>,
    started: Instant,
    keys: Vec<String>,
}

impl Metrics {
    /// Empty metrics for these key names (indices refer to them).
    pub fn new(keys: Vec<String>) -> Metrics {
        Metrics {
            ejections: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            usage_log_dropped: AtomicU64::new(0),
            usage_estimated: AtomicU64::new(0),
            control_plane_updates: AtomicU64::new(0),
            control_plane_errors: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
            started: Instant::now(),
            keys,
        }
    }

    /// A request refused by a limit.
    pub fn limited(&self, key: u16, limit: Limit) {
        let l = match limit {
            Limit::Requests => "rpm",
            Limit::Tokens => "tpm",
        };
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .limited
            .entry((key, l))
            .or_default() += 1;
    }

    /// A request refused by `layer` for `reason` (see [`crate::layer::Refused`]).
    pub fn refused(&self, layer: &'static str, reason: &'static str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .refused
            .entry((layer, reason))
            .or_default() += 1;
    }

    /// Requests refused by `layer` for `reason` so far.
    pub fn refusals(&self, layer: &str, reason: &str) -> u64 {
        let m = self.inner.lock().expect("metrics lock");
        m.refused
            .iter()
            .filter(|((l, r), _)| *l == layer && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    /// A request for `model` from `location` (a region id of the fleet, or `unknown`) was
    /// admitted: the demand the control plane sizes replicas by. Locations are only the
    /// fleet's, so the series stay bounded whatever clients send.
    pub fn demand(&self, model: &Arc<str>, location: &str) {
        let mut m = self.inner.lock().expect("metrics lock");
        let by = m.demand.entry(model.clone()).or_default();
        match by.get_mut(location) {
            Some(n) => *n += 1,
            None => {
                by.insert(location.to_string(), 1);
            }
        }
    }

    /// A proxied request ended.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        key: u16,
        model: &Arc<str>,
        replica: &Arc<ReplicaLabel>,
        end: End,
        status: u16,
        usage: &Usage,
        ttft: Duration,
        duration: Duration,
    ) {
        let mut m = self.inner.lock().expect("metrics lock");
        *m.requests
            .entry((key, model.clone(), replica.clone(), end.name(), status))
            .or_default() += 1;
        for (kind, n) in [
            ("prompt", usage.prompt),
            ("completion", usage.completion),
            ("cached", usage.cached),
        ] {
            if n > 0 {
                *m.tokens.entry((key, model.clone(), kind)).or_default() += n;
            }
        }
        m.ttft.entry(model.clone()).or_default().observe(ttft);
        m.duration
            .entry(model.clone())
            .or_default()
            .observe(duration);
    }

    /// Tokens counted so far for (key name, model, kind), for tests and reports.
    pub fn tokens(&self, key: &str, model: &str, kind: &str) -> u64 {
        let m = self.inner.lock().expect("metrics lock");
        m.tokens
            .iter()
            .filter(|((k, mo, ki), _)| {
                self.keys[*k as usize] == key && &**mo == model && *ki == kind
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// Requests that ended on the replica with id `replica` (any key, model, status).
    pub fn requests_on(&self, replica: &str) -> u64 {
        let m = self.inner.lock().expect("metrics lock");
        m.requests
            .iter()
            .filter(|((_, _, r, _, _), _)| r.id == replica)
            .map(|(_, v)| *v)
            .sum()
    }

    /// The text exposition.
    pub fn render(&self, replicas: &[Arc<Replica>], now_ms: u64) -> String {
        let mut out = String::new();
        let m = self.inner.lock().expect("metrics lock");
        let _ = writeln!(out, "# HELP stratus_gateway_requests_total Proxied requests by key, model, replica, how they ended and status.");
        let _ = writeln!(out, "# TYPE stratus_gateway_requests_total counter");
        for ((key, model, r, end, status), n) in &m.requests {
            let rp = r;
            let key = &self.keys[*key as usize];
            let _ = writeln!(
                out,
                "stratus_gateway_requests_total{{key=\"{}\",model=\"{}\",replica=\"{}\",provider=\"{}\",region=\"{}\",end=\"{end}\",status=\"{status}\"}} {n}",
                esc(key), esc(model), esc(&rp.id), esc(&rp.provider), esc(&rp.region)
            );
        }
        let _ = writeln!(out, "# HELP stratus_gateway_tokens_total Tokens the replicas reported, by key, model and kind (prompt, completion, cached).");
        let _ = writeln!(out, "# TYPE stratus_gateway_tokens_total counter");
        for ((key, model, kind), n) in &m.tokens {
            let key = &self.keys[*key as usize];
            let _ = writeln!(
                out,
                "stratus_gateway_tokens_total{{key=\"{}\",model=\"{}\",kind=\"{kind}\"}} {n}",
                esc(key),
                esc(model)
            );
        }
        let _ = writeln!(out, "# HELP stratus_gateway_rate_limited_total Requests refused with 429, by key and limit.");
        let _ = writeln!(out, "# TYPE stratus_gateway_rate_limited_total counter");
        for ((key, limit), n) in &m.limited {
            let key = &self.keys[*key as usize];
            let _ = writeln!(
                out,
                "stratus_gateway_rate_limited_total{{key=\"{}\",limit=\"{limit}\"}} {n}",
                esc(key)
            );
        }
        let _ = writeln!(out, "# HELP stratus_gateway_refused_total Requests the gateway answered itself, by the layer that refused them and why.");
        let _ = writeln!(out, "# TYPE stratus_gateway_refused_total counter");
        for ((layer, reason), n) in &m.refused {
            let _ = writeln!(
                out,
                "stratus_gateway_refused_total{{layer=\"{layer}\",reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP stratus_gateway_demand_total Requests admitted, by model and user location (a region id, or unknown).");
        let _ = writeln!(out, "# TYPE stratus_gateway_demand_total counter");
        for (model, by) in &m.demand {
            for (location, n) in by {
                let _ = writeln!(
                    out,
                    "stratus_gateway_demand_total{{model=\"{}\",location=\"{}\"}} {n}",
                    esc(model),
                    esc(location)
                );
            }
        }
        let _ = writeln!(out, "# HELP stratus_gateway_ttft_seconds Time from the client's request to the first response bytes.");
        let _ = writeln!(out, "# TYPE stratus_gateway_ttft_seconds histogram");
        for (model, h) in m.ttft.iter().filter(|(_, h)| h.count > 0) {
            h.render(
                &mut out,
                "stratus_gateway_ttft_seconds",
                &format!("model=\"{}\"", esc(model)),
            );
        }
        let _ = writeln!(out, "# HELP stratus_gateway_request_duration_seconds Time from the client's request to the end of the response.");
        let _ = writeln!(
            out,
            "# TYPE stratus_gateway_request_duration_seconds histogram"
        );
        for (model, h) in m.duration.iter().filter(|(_, h)| h.count > 0) {
            h.render(
                &mut out,
                "stratus_gateway_request_duration_seconds",
                &format!("model=\"{}\"", esc(model)),
            );
        }
        drop(m);
        let per_replica: [(&str, &str, &ReplicaValue<'_>); 4] = [
            ("stratus_gateway_replica_in_flight", "gauge", &|r| {
                r.in_flight.load(Ordering::Relaxed) as u64
            }),
            ("stratus_gateway_replica_queue_depth", "gauge", &|r| {
                r.queue.load(Ordering::Relaxed) as u64
            }),
            ("stratus_gateway_replica_up", "gauge", &|r| {
                u64::from(r.available(now_ms))
            }),
            ("stratus_gateway_replica_ejections_total", "counter", &|r| {
                r.ejections.load(Ordering::Relaxed)
            }),
        ];
        for (name, kind, value) in per_replica {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for r in replicas {
                let _ = writeln!(
                    out,
                    "{name}{{replica=\"{}\"}} {}",
                    esc(&r.id),
                    value(r.as_ref())
                );
            }
        }
        let _ = writeln!(out, "# TYPE stratus_gateway_retries_total counter");
        let _ = writeln!(
            out,
            "stratus_gateway_retries_total {}",
            self.retries.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE stratus_gateway_unroutable_total counter");
        let _ = writeln!(
            out,
            "stratus_gateway_unroutable_total {}",
            self.refusals("route", "no_replica")
        );
        for (name, v) in [
            (
                "stratus_gateway_usage_log_dropped_total",
                &self.usage_log_dropped,
            ),
            (
                "stratus_gateway_usage_estimated_total",
                &self.usage_estimated,
            ),
            (
                "stratus_gateway_control_plane_updates_total",
                &self.control_plane_updates,
            ),
            (
                "stratus_gateway_control_plane_errors_total",
                &self.control_plane_errors,
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# TYPE stratus_gateway_uptime_seconds gauge");
        let _ = writeln!(
            out,
            "stratus_gateway_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        out
    }
}

/// Reads one per-replica metric.
type ReplicaValue<'a> = dyn Fn(&Replica) -> u64 + 'a;

/// Escape a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
