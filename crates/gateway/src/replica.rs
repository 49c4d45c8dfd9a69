//! What the gateway knows of each replica (health, load, ejection, its connections) and the
//! replica set requests are routed over: an immutable snapshot swapped whole. Kept apart from
//! the request path so that `proxy`, `health`, `metrics` and `follow` all depend on it and not
//! on each other.

use crate::config::{parse_base_url, ReplicaConfig};
use crate::route::Ring;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stratus_model::LatencyTable;

/// One replica and what the gateway knows of it right now.
#[derive(Debug)]
pub struct Replica {
    /// From the configuration.
    pub id: String,
    /// `http://host:port`.
    pub base: String,
    /// Region id.
    pub region: String,
    /// Provider (the part of the region id before `:`).
    pub provider: String,
    /// Models served.
    pub models: Vec<String>,
    /// $/h.
    pub cost: f64,
    /// Whether `/metrics` is scraped.
    pub scrape: bool,
    /// Its labels in the request metrics (kept by the counters after it leaves the set).
    pub label: Arc<ReplicaLabel>,
    /// Taking no new requests (the control plane is retiring it); requests in flight finish.
    pub draining: AtomicBool,
    pub(crate) region_index: Option<usize>,
    /// Requests in flight through this gateway.
    pub in_flight: AtomicU32,
    /// Queue depth the replica last reported.
    pub queue: AtomicU32,
    /// Active health state.
    pub healthy: AtomicBool,
    pub(crate) probes: Mutex<Probes>,
    pub(crate) eject: Mutex<Ejection>,
    /// Milliseconds since the gateway's start until which the replica is ejected (0: never),
    /// read without a lock on every routing decision.
    pub(crate) ejected_until_ms: AtomicU64,
    /// Whether `eject` holds failures or a streak (a success then takes the lock to clear it).
    pub(crate) failing: AtomicBool,
    /// Keep-alive connections to it.
    pub(crate) pool: crate::upstream::Pool,
    /// Times this replica was ejected.
    pub ejections: AtomicU64,
}

/// Consecutive probe results.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    pub(crate) good: u32,
    pub(crate) bad: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Ejection {
    pub(crate) failures: u32,
    /// Ejections without a success in between: each doubles the next one.
    pub(crate) streak: u32,
}

impl Replica {
    /// Whether routing may pick it at `now_ms` (milliseconds since the gateway started).
    pub fn available(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && !self.ejected(now_ms)
    }

    /// Whether passive ejection holds it out at `now_ms`.
    pub fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub(crate) fn new(r: &ReplicaConfig, latency: &LatencyTable) -> Option<Replica> {
        let (authority, base) = parse_base_url(&r.url)?;
        let provider = r.region.split(':').next().unwrap_or("").to_string();
        Some(Replica {
            id: r.id.clone(),
            base,
            label: Arc::new(ReplicaLabel {
                id: r.id.clone(),
                provider: provider.clone(),
                region: r.region.clone(),
            }),
            region: r.region.clone(),
            provider,
            models: r.models.clone(),
            cost: r.cost_per_hour,
            scrape: r.metrics,
            draining: AtomicBool::new(r.draining),
            region_index: latency.index_of(&r.region),
            in_flight: AtomicU32::new(0),
            queue: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            probes: Mutex::new(Probes::default()),
            eject: Mutex::new(Ejection::default()),
            ejections: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            pool: crate::upstream::Pool::new(&authority),
        })
    }
}

/// A replica's identity in the request metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReplicaLabel {
    /// Replica id.
    pub id: String,
    /// Provider.
    pub provider: String,
    /// Region id.
    pub region: String,
}

/// The replicas requests are routed to, as one immutable snapshot: a request takes the
/// snapshot once and keeps it (indices, the ring and the models agree with each other for
/// its whole life), and a new set is swapped in whole, so a change never blocks or breaks
/// the request path. A replica that stays from one set to the next is the same `Arc`, with
/// its health, load, ejection state and connections.
pub struct ReplicaSet {
    /// The control plane's version of the list (0 for a static file).
    pub version: u64,
    /// The replicas (indices refer to this order).
    pub replicas: Vec<Arc<Replica>>,
    pub(crate) ring: Ring,
    /// Every model some replica serves, sorted.
    pub models: Vec<Arc<str>>,
}

impl ReplicaSet {
    pub(crate) fn new(version: u64, replicas: Vec<Arc<Replica>>) -> ReplicaSet {
        let ring = Ring::new(&replicas.iter().map(|r| r.id.as_str()).collect::<Vec<_>>());
        let mut models: Vec<&str> = replicas
            .iter()
            .flat_map(|r| r.models.iter().map(String::as_str))
            .collect();
        models.sort_unstable();
        models.dedup();
        ReplicaSet {
            version,
            models: models.into_iter().map(Arc::from).collect(),
            replicas,
            ring,
        }
    }

    /// The shared name of `model`, if some replica serves it.
    pub(crate) fn model(&self, model: &str) -> Option<Arc<str>> {
        self.models
            .binary_search_by(|m| (**m).cmp(model))
            .ok()
            .map(|i| self.models[i].clone())
    }
}
