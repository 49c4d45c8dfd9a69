//! The routing decision: pure and deterministic, over a snapshot of the replicas' state, so it
//! is tested without sockets and the proxy only gathers the snapshot and acts on the answer.
//!
//! Prefix affinity is consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
//! 2018): a prompt prefix hashes to a point on a ring of virtual nodes and takes the first
//! replica clockwise whose load is under `load_factor` times the mean. It keeps no per-prefix
//! state, so memory is the ring's (replicas × [`VNODES`]) however many distinct prefixes pass.

use serde::Deserialize;

/// Virtual nodes per replica on the affinity ring.
pub const VNODES: usize = 100;

/// A named routing policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Nearest replicas (within `near_slack_ms` of the nearest), then prefix affinity with
    /// bounded load among them, else the least loaded; cost breaks ties.
    #[default]
    Balanced,
    /// Lowest RTT from the user; load, then cost, break ties.
    Nearest,
    /// Fewest in-flight plus queued requests; RTT, then cost, break ties.
    LeastLoad,
    /// Prefix affinity with bounded load over every eligible replica, ignoring distance.
    Prefix,
    /// Lowest $/h; load, then RTT, break ties.
    Cheapest,
}

impl Policy {
    /// Its name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Balanced => "balanced",
            Policy::Nearest => "nearest",
            Policy::LeastLoad => "least-load",
            Policy::Prefix => "prefix",
            Policy::Cheapest => "cheapest",
        }
    }
}

/// One eligible replica as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index of the replica in the gateway's list (and on the ring).
    pub index: usize,
    /// RTT from the user's location, milliseconds.
    pub rtt_ms: f64,
    /// In-flight requests through this gateway plus the replica's reported queue depth.
    pub load: u32,
    /// $/h.
    pub cost: f64,
}

/// Tunables of the decision.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Which policy.
    pub policy: Policy,
    /// RTT slack that still counts as nearest.
    pub near_slack_ms: f64,
    /// Bounded-load factor (≥ 1).
    pub load_factor: f64,
}

/// The affinity ring: sorted (point, replica index).
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// A ring for replicas named `ids` (a replica keeps its points when others come or go).
    pub fn new<S: AsRef<str>>(ids: &[S]) -> Ring {
        let mut points = Vec::with_capacity(ids.len() * VNODES);
        for (i, id) in ids.iter().enumerate() {
            let base = hash_bytes(id.as_ref().as_bytes());
            for v in 0..VNODES {
                points.push((
                    mix(base ^ (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    i as u32,
                ));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// Bytes the ring holds: the whole of the affinity state.
    pub fn memory_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<(u64, u32)>()
    }

    /// Replica indices clockwise from `key`'s point, each once.
    fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < key);
        let n = self.points.len();
        (0..n).map(move |k| self.points[(start + k) % n].1 as usize)
    }
}

/// 64-bit FNV-1a, finished with a mixer: stable across runs and platforms.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Choose a replica among `cands` (already filtered to healthy replicas serving the model and
/// not yet tried for this request); `None` when there is none.
pub fn choose(
    params: &Params,
    ring: &Ring,
    cands: &[Candidate],
    prefix: Option<u64>,
) -> Option<usize> {
    if cands.is_empty() {
        return None;
    }
    let by = |key: fn(&Candidate) -> (f64, f64, f64)| {
        cands
            .iter()
            .min_by(|a, b| {
                let (ka, kb) = (key(a), key(b));
                ka.0.total_cmp(&kb.0)
                    .then(ka.1.total_cmp(&kb.1))
                    .then(ka.2.total_cmp(&kb.2))
                    .then(a.index.cmp(&b.index))
            })
            .map(|c| c.index)
    };
    match params.policy {
        Policy::Nearest => by(|c| (c.rtt_ms, c.load as f64, c.cost)),
        Policy::LeastLoad => by(|c| (c.load as f64, c.rtt_ms, c.cost)),
        Policy::Cheapest => by(|c| (c.cost, c.load as f64, c.rtt_ms)),
        Policy::Prefix => match prefix {
            Some(h) => bounded(ring, cands, h, params.load_factor),
            None => by(|c| (c.load as f64, c.rtt_ms, c.cost)),
        },
        Policy::Balanced => {
            let nearest = cands.iter().map(|c| c.rtt_ms).fold(f64::INFINITY, f64::min);
            let tier: Vec<Candidate> = cands
                .iter()
                .filter(|c| c.rtt_ms <= nearest + params.near_slack_ms)
                .copied()
                .collect();
            match prefix {
                Some(h) => bounded(ring, &tier, h, params.load_factor),
                None => tier
                    .iter()
                    .min_by(|a, b| {
                        a.load
                            .cmp(&b.load)
                            .then(a.cost.total_cmp(&b.cost))
                            .then(a.rtt_ms.total_cmp(&b.rtt_ms))
                            .then(a.index.cmp(&b.index))
                    })
                    .map(|c| c.index),
            }
        }
    }
}

/// Load below which a replica keeps its prefixes whatever the mean: under sparse traffic the
/// mean is near zero and one request in flight (or one stale queue reading) would otherwise
/// push a prefix off its home and away from the cache it warmed.
pub const MIN_CAP: u64 = 2;

/// Bounded-load consistent hashing over `cands`: the first replica clockwise from `key` whose
/// load after taking this request stays within `factor` × the mean load (rounded up, and at
/// least [`MIN_CAP`]).
fn bounded(ring: &Ring, cands: &[Candidate], key: u64, factor: f64) -> Option<usize> {
    if cands.is_empty() {
        return None;
    }
    let total: u64 = cands.iter().map(|c| c.load as u64).sum::<u64>() + 1;
    let cap = ((factor * total as f64 / cands.len() as f64).ceil() as u64).max(MIN_CAP);
    let load_of = |i: usize| cands.iter().find(|c| c.index == i).map(|c| c.load as u64);
    let mut first = None;
    for i in ring.walk(key) {
        if let Some(load) = load_of(i) {
            first.get_or_insert(i);
            if load < cap {
                return Some(i);
            }
        }
    }
    // Every eligible replica at the cap cannot happen (the mean is below it), but a replica
    // missing from the ring can: fall back to the first eligible one met, else the least loaded.
    first.or_else(|| {
        cands
            .iter()
            .min_by_key(|c| (c.load, c.index))
            .map(|c| c.index)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(index: usize, rtt_ms: f64, load: u32, cost: f64) -> Candidate {
        Candidate {
            index,
            rtt_ms,
            load,
            cost,
        }
    }

    fn params(policy: Policy) -> Params {
        Params {
            policy,
            near_slack_ms: 20.0,
            load_factor: 1.25,
        }
    }

    #[test]
    fn balanced_stays_near_and_prefers_the_idle_then_the_cheap() {
        let ring = Ring::new(&["a", "b", "c", "d"]);
        let c = [
            cand(0, 5.0, 3, 10.0),
            cand(1, 15.0, 1, 12.0),
            cand(2, 15.0, 1, 11.0),
            cand(3, 90.0, 0, 1.0), // idle and cheap, but far
        ];
        assert_eq!(choose(&params(Policy::Balanced), &ring, &c, None), Some(2));
        assert_eq!(choose(&params(Policy::Nearest), &ring, &c, None), Some(0));
        assert_eq!(choose(&params(Policy::LeastLoad), &ring, &c, None), Some(3));
        assert_eq!(choose(&params(Policy::Cheapest), &ring, &c, None), Some(3));
    }

    #[test]
    fn a_prefix_sticks_to_one_replica_until_it_is_overloaded() {
        let ring = Ring::new(&["a", "b", "c"]);
        let idle = [
            cand(0, 1.0, 0, 0.0),
            cand(1, 1.0, 0, 0.0),
            cand(2, 1.0, 0, 0.0),
        ];
        let p = params(Policy::Balanced);
        let key = hash_bytes(b"You are a helpful assistant.");
        let home = choose(&p, &ring, &idle, Some(key)).unwrap();
        for _ in 0..10 {
            assert_eq!(choose(&p, &ring, &idle, Some(key)), Some(home));
        }
        // The home replica far above the mean: the prefix spills to the next one clockwise.
        let mut busy = idle;
        busy[home].load = 10;
        let spill = choose(&p, &ring, &busy, Some(key)).unwrap();
        assert_ne!(spill, home);
        // Its home back under the cap: it returns.
        busy[home].load = 1;
        busy[spill].load = 1;
        assert_eq!(choose(&p, &ring, &busy, Some(key)), Some(home));
    }

    #[test]
    fn prefixes_spread_evenly_and_removing_a_replica_moves_only_its_share() {
        let ids: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
        let ring = Ring::new(&ids);
        let all: Vec<Candidate> = (0..8).map(|i| cand(i, 1.0, 0, 0.0)).collect();
        let p = params(Policy::Prefix);
        let mut count = [0u32; 8];
        let n = 80_000;
        let mut home = Vec::new();
        for k in 0..n {
            let h = hash_bytes(format!("prompt {k}").as_bytes());
            let r = choose(&p, &ring, &all, Some(h)).unwrap();
            count[r] += 1;
            home.push(r);
        }
        for c in count {
            assert!((7_000..13_000).contains(&c), "uneven spread: {count:?}");
        }
        // Replica 3 gone: only its prefixes move.
        let without: Vec<Candidate> = all.iter().copied().filter(|c| c.index != 3).collect();
        for (k, &h0) in home.iter().enumerate() {
            let h = hash_bytes(format!("prompt {k}").as_bytes());
            let r = choose(&p, &ring, &without, Some(h)).unwrap();
            if h0 != 3 {
                assert_eq!(r, h0);
            } else {
                assert_ne!(r, 3);
            }
        }
    }

    #[test]
    fn bounded_load_never_sends_a_request_to_a_replica_above_the_cap() {
        let ring = Ring::new(&["a", "b", "c", "d"]);
        let p = params(Policy::Prefix);
        // Everyone asks for one prefix: the load must still spread.
        let mut load = [0u32; 4];
        let key = hash_bytes(b"the same system prompt");
        for _ in 0..400 {
            let c: Vec<Candidate> = (0..4).map(|i| cand(i, 1.0, load[i], 0.0)).collect();
            let r = choose(&p, &ring, &c, Some(key)).unwrap();
            let total: u32 = load.iter().sum::<u32>() + 1;
            assert!(load[r] as f64 + 1.0 <= (1.25 * total as f64 / 4.0).ceil() + 1.0);
            load[r] += 1;
        }
        // No replica above 1.25 × the mean (100), and the prefix's home took its full share.
        assert!(load.iter().all(|&l| l <= 125), "{load:?}");
        assert_eq!(load.iter().filter(|&&l| l == 125).count(), 3, "{load:?}");
    }

    #[test]
    fn the_affinity_state_does_not_grow_with_distinct_prefixes() {
        let ids: Vec<String> = (0..16).map(|i| format!("r{i}")).collect();
        let ring = Ring::new(&ids);
        let before = ring.memory_bytes();
        let all: Vec<Candidate> = (0..16).map(|i| cand(i, 1.0, (i % 3) as u32, 0.0)).collect();
        let p = params(Policy::Balanced);
        let mut sum = 0usize;
        for k in 0..2_000_000u64 {
            sum += choose(&p, &ring, &all, Some(mix(k))).unwrap();
        }
        assert!(sum > 0);
        assert_eq!(ring.memory_bytes(), before);
        assert_eq!(before, 16 * VNODES * 16);
    }
}
