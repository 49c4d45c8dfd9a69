//! A fault-injecting driver for deterministic simulation tests: [`FaultyDriver`] wraps the
//! simulated provider and, from one seeded random stream, answers launches and stops with
//! timeouts after the call took effect, drops calls before they do, refuses launches for
//! capacity, fails observations of single regions or of everything, hides instances for a
//! while after their launch (as EC2's eventually consistent `DescribeInstances` does), and
//! can "crash" the caller after a given number of calls. It records what the controller sent
//! so a harness can check that no token is reused and that stray instances are stopped.

use crate::driver::{
    Driver, DriverError, Instance, InstanceState, LaunchRequest, Observation, PoolCapacity, Time,
    Unobserved,
};
use crate::simprovider::SimProvider;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// splitmix64: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream for `seed` and `purpose`, independent of the streams of other purposes.
    pub fn new(seed: u64, purpose: &str) -> Rng {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in purpose.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.f64() < p
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
}

/// How often each fault happens, per call (or per region and observation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRates {
    /// A launch takes effect, then the answer is lost (a timeout after submission).
    pub launch_timeout: f64,
    /// A launch is lost before it takes effect, and the caller sees a timeout.
    pub launch_dropped: f64,
    /// A launch is refused for capacity although the pool has room.
    pub capacity_refusal: f64,
    /// A stop takes effect, then the answer is lost.
    pub stop_timeout: f64,
    /// A stop is lost before it takes effect, and the caller sees a timeout.
    pub stop_dropped: f64,
    /// One region cannot be read by an observation.
    pub observe_region: f64,
    /// Nothing can be read by an observation.
    pub observe_all: f64,
    /// Seconds an instance stays out of observations (and stops) after its launch.
    pub visibility_lag_s: f64,
}

impl FaultRates {
    /// Every rate drawn from `rng` ("swarm testing": each seed is a different world, and
    /// a fault is absent altogether in about a third of the seeds).
    pub fn draw(rng: &mut Rng) -> FaultRates {
        let mut p = |max: f64| {
            if rng.chance(1.0 / 3.0) {
                0.0
            } else {
                rng.range(0.0, max)
            }
        };
        FaultRates {
            launch_timeout: p(0.3),
            launch_dropped: p(0.2),
            capacity_refusal: p(0.2),
            stop_timeout: p(0.3),
            stop_dropped: p(0.3),
            observe_region: p(0.3),
            observe_all: p(0.15),
            visibility_lag_s: p(150.0),
        }
    }
}

/// What the controller sent, for the harness's invariants.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    /// Every token a launch was sent for, with the request first sent with it.
    pub launched: BTreeMap<String, LaunchRequest>,
    /// Every token sequence number seen, with the token that carried it.
    pub seqs: BTreeMap<u64, String>,
    /// Launches that carried a known token with a different request, or a known sequence
    /// number with a different token.
    pub reused: Vec<String>,
    /// The last time a stop was sent for each token.
    pub stopped_at: BTreeMap<String, Time>,
    /// The last observation answered: when, and what it showed.
    pub last_observation: (Time, Vec<Instance>),
}

/// The simulated provider behind injected faults.
#[derive(Debug)]
pub struct FaultyDriver {
    /// The world: what really runs.
    pub world: SimProvider,
    /// Fault rates; all zero turns faults off.
    pub rates: FaultRates,
    rng: Rng,
    /// After this many more calls, the caller is "crashed": `halt` is set and every later
    /// call fails without reaching the world.
    pub crash_after: Option<u32>,
    /// Set when the crash point was reached.
    pub halt: Arc<AtomicBool>,
    /// What the controller sent.
    pub log: CallLog,
}

impl FaultyDriver {
    /// `world` behind faults drawn from `rng`.
    pub fn new(world: SimProvider, rates: FaultRates, rng: Rng) -> FaultyDriver {
        FaultyDriver {
            world,
            rates,
            rng,
            crash_after: None,
            halt: Arc::new(AtomicBool::new(false)),
            log: CallLog::default(),
        }
    }

    /// Whether this call is past the crash point (and counts it).
    fn crashed(&mut self) -> bool {
        if self.halt.load(Ordering::SeqCst) {
            return true;
        }
        match self.crash_after.as_mut() {
            Some(0) => {
                self.halt.store(true, Ordering::SeqCst);
                self.crash_after = None;
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }

    fn hidden(&self, i: &Instance, now: Time) -> bool {
        self.rates.visibility_lag_s > 0.0
            && now.0 - i.launched_at.0 < self.rates.visibility_lag_s
            && matches!(
                i.state,
                InstanceState::Pending { .. } | InstanceState::Running
            )
    }

    fn timeout(region: &str, what: &str) -> DriverError {
        DriverError::Unreachable {
            region: region.to_string(),
            reason: format!("{what}: timed out"),
        }
    }

    fn record_launch(&mut self, req: &LaunchRequest) {
        match self.log.launched.get(&req.token) {
            Some(first) if first != req => self.log.reused.push(format!(
                "token {} sent for {:?} after {:?}",
                req.token, req, first
            )),
            Some(_) => {}
            None => {
                self.log.launched.insert(req.token.clone(), req.clone());
            }
        }
        if let Some(n) = crate::unit::token_seq(&req.token) {
            match self.log.seqs.get(&n) {
                Some(t) if *t != req.token => self
                    .log
                    .reused
                    .push(format!("sequence number {n} in {} and in {t}", req.token)),
                Some(_) => {}
                None => {
                    self.log.seqs.insert(n, req.token.clone());
                }
            }
        }
    }
}

impl Driver for FaultyDriver {
    fn launch(&mut self, now: Time, req: &LaunchRequest) -> Result<(), DriverError> {
        if self.crashed() {
            return Err(Self::timeout(&req.region, "crashed"));
        }
        self.record_launch(req);
        if self.rng.chance(self.rates.launch_dropped) {
            return Err(Self::timeout(&req.region, "launch"));
        }
        let known = self.world.instance(&req.token).is_some();
        if !known && self.rng.chance(self.rates.capacity_refusal) {
            let free = self.world.capacity(now, &req.pool).unwrap_or_default();
            return Err(DriverError::Capacity {
                pool: req.pool.clone(),
                asked: req.nodes,
                free: free.minus(PoolCapacity::of(req)),
            });
        }
        let r = self.world.launch(now, req);
        if r.is_ok() && self.rng.chance(self.rates.launch_timeout) {
            return Err(Self::timeout(&req.region, "launch"));
        }
        r
    }

    fn stop(&mut self, now: Time, token: &str) -> Result<(), DriverError> {
        if self.crashed() {
            return Err(Self::timeout("", "crashed"));
        }
        self.log.stopped_at.insert(token.to_string(), now);
        let region = self
            .world
            .instance(token)
            .map(|i| i.request.region.clone())
            .unwrap_or_default();
        if self.rng.chance(self.rates.stop_dropped) {
            return Err(Self::timeout(&region, "stop"));
        }
        if let Some(i) = self.world.instance(token) {
            if self.hidden(i, now) {
                return Err(DriverError::UnknownToken(token.to_string()));
            }
        }
        let r = self.world.stop(now, token);
        if r.is_ok() && self.rng.chance(self.rates.stop_timeout) {
            return Err(Self::timeout(&region, "stop"));
        }
        r
    }

    fn observe(&mut self, now: Time) -> Observation {
        if self.crashed() || self.rng.chance(self.rates.observe_all) {
            self.log.last_observation = (now, Vec::new());
            return Observation {
                instances: Vec::new(),
                unobserved: vec![Unobserved {
                    scope: String::new(),
                    error: Self::timeout("", "observe"),
                }],
            };
        }
        let mut unobserved = Vec::new();
        for r in self.world.regions() {
            if self.rng.chance(self.rates.observe_region) {
                unobserved.push(Unobserved {
                    error: Self::timeout(&r, "observe"),
                    scope: r,
                });
            }
        }
        let obs = Observation {
            instances: Vec::new(),
            unobserved,
        };
        let instances: Vec<Instance> = self
            .world
            .instances()
            .filter(|i| !obs.unobserved(&i.request.pool) && !self.hidden(i, now))
            .cloned()
            .collect();
        self.log.last_observation = (now, instances.clone());
        Observation { instances, ..obs }
    }

    fn capacity(&mut self, now: Time, pool: &str) -> Result<PoolCapacity, DriverError> {
        if self.crashed() {
            return Err(Self::timeout("", "crashed"));
        }
        self.world.capacity(now, pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_independent() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, "x").next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(7, "x").next_u64(), Rng::new(7, "y").next_u64());
        assert_ne!(Rng::new(7, "x").next_u64(), Rng::new(8, "x").next_u64());
        let mut r = Rng::new(1, "f");
        for _ in 0..1000 {
            let x = r.f64();
            assert!((0.0..1.0).contains(&x));
            assert!(r.below(3) < 3);
        }
    }
}
