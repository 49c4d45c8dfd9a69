//! `sim`: simulated providers in-process. The embedded default driver, and the ground truth
//! the simulator injects faults into (outages, capacity loss, preemptions). The controller sees
//! it only through [`Driver`], exactly as it sees a real cloud.

use crate::driver::{
    Driver, DriverError, Instance, InstanceState, LaunchRequest, LossCause, Observation,
    PoolCapacity, Time,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use stratus_model::fleet::region_id;
use stratus_model::Fleet;

/// Per-pool ground truth.
#[derive(Debug, Clone)]
struct PoolState {
    region: String,
    committed: u32,
    on_demand: u32,
    spot: u32,
    /// Share of the pool still working (1 = all; capacity-loss faults lower it).
    factor: f64,
    used: PoolCapacity,
}

impl PoolState {
    fn total(&self) -> PoolCapacity {
        let f = |n: u32| (n as f64 * self.factor).floor() as u32;
        PoolCapacity {
            committed: f(self.committed),
            on_demand: f(self.on_demand),
            spot: f(self.spot),
        }
    }
    fn free(&self) -> PoolCapacity {
        let t = self.total();
        PoolCapacity {
            committed: t.committed.saturating_sub(self.used.committed),
            on_demand: t.on_demand.saturating_sub(self.used.on_demand),
            spot: t.spot.saturating_sub(self.used.spot),
        }
    }
}

/// Simulated providers: every pool of a fleet, with boot and shutdown delays.
#[derive(Debug, Clone)]
pub struct SimProvider {
    pools: HashMap<String, PoolState>,
    down: BTreeSet<String>,
    instances: BTreeMap<String, Instance>,
    /// Instances whose nodes were released (stopped, or lost), still listed.
    released: BTreeSet<String>,
    /// Seconds from an accepted launch to running.
    pub launch_delay_s: f64,
    /// Seconds from a stop to released nodes.
    pub stop_delay_s: f64,
    /// When set, a stopped instance stays listed (stopping, with its release time) and a lost
    /// one (lost, with its time) for this long after its end, as EC2 lists terminated
    /// instances and `squeue` finished jobs for a while; when unset, a stopped instance
    /// goes at its release and a lost one when [`SimProvider::reap_lost`] is called.
    pub retention_s: Option<f64>,
}

impl SimProvider {
    /// Providers shaped like `fleet`, all healthy and empty.
    pub fn new(fleet: &Fleet, launch_delay_s: f64, stop_delay_s: f64) -> SimProvider {
        let mut pools = HashMap::new();
        for (p, r, pool) in fleet.pools() {
            let all = PoolCapacity::of_pool(pool);
            pools.insert(
                pool.id.clone(),
                PoolState {
                    region: region_id(&p.name, &r.name),
                    committed: all.committed,
                    on_demand: all.on_demand,
                    spot: all.spot,
                    factor: 1.0,
                    used: PoolCapacity::default(),
                },
            );
        }
        SimProvider {
            pools,
            down: BTreeSet::new(),
            instances: BTreeMap::new(),
            released: BTreeSet::new(),
            launch_delay_s,
            stop_delay_s,
            retention_s: None,
        }
    }

    /// Earliest pending state change (boot finished, stop finished), for the event queue.
    pub fn next_transition(&self) -> Option<Time> {
        self.instances
            .iter()
            .filter(|(t, _)| !self.released.contains(*t))
            .filter_map(|(_, i)| match i.state {
                InstanceState::Pending { ready_at } => Some(ready_at),
                InstanceState::Stopping { done_at } => Some(done_at),
                _ => None,
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// Apply every state change due by `now`; returns whether anything changed.
    pub fn advance(&mut self, now: Time) -> bool {
        let mut changed = false;
        let mut gone = Vec::new();
        let mut forget = Vec::new();
        for (tok, i) in self.instances.iter_mut() {
            match i.state {
                InstanceState::Pending { ready_at } if ready_at.0 <= now.0 => {
                    i.state = InstanceState::Running;
                    i.since = ready_at;
                    changed = true;
                }
                InstanceState::Stopping { done_at } if done_at.0 <= now.0 => {
                    if !self.released.contains(tok) {
                        gone.push(tok.clone());
                    }
                    if self.retention_s.is_some_and(|r| done_at.0 + r <= now.0) {
                        forget.push(tok.clone());
                    }
                }
                InstanceState::Lost(_)
                    if self.retention_s.is_some_and(|r| i.since.0 + r <= now.0) =>
                {
                    forget.push(tok.clone());
                }
                _ => {}
            }
        }
        for t in gone {
            self.release(&t);
            if self.retention_s.is_none() {
                self.instances.remove(&t);
                self.released.remove(&t);
            }
            changed = true;
        }
        for t in forget {
            self.instances.remove(&t);
            self.released.remove(&t);
            changed = true;
        }
        changed
    }

    /// Return an instance's nodes to its pool, once.
    fn release(&mut self, token: &str) {
        if !self.released.insert(token.to_string()) {
            return;
        }
        if let Some(i) = self.instances.get(token) {
            let t = PoolCapacity::of(&i.request);
            if let Some(p) = self.pools.get_mut(&i.request.pool) {
                p.used = p.used.minus(t);
            }
        }
    }

    fn lose(&mut self, token: &str, now: Time, cause: LossCause) {
        let live = matches!(
            self.instances.get(token).map(|i| i.state),
            Some(InstanceState::Pending { .. } | InstanceState::Running)
        );
        if live {
            self.release(token);
            let i = self.instances.get_mut(token).expect("checked above");
            i.state = InstanceState::Lost(cause);
            i.since = now;
        }
    }

    /// A region goes dark (`down`) or comes back. Everything in it is lost.
    pub fn set_region_down(&mut self, now: Time, region: &str, down: bool) -> Vec<String> {
        if !down {
            self.down.remove(region);
            return Vec::new();
        }
        self.down.insert(region.to_string());
        let hit: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| i.request.region == region)
            .map(|(t, _)| t.clone())
            .collect();
        for t in &hit {
            self.lose(t, now, LossCause::Outage);
        }
        hit
    }

    /// A pool keeps only `factor` of its nodes; the newest instances beyond that are evicted.
    /// Returns the evicted tokens.
    pub fn set_capacity_factor(&mut self, now: Time, pool: &str, factor: f64) -> Vec<String> {
        let Some(p) = self.pools.get_mut(pool) else {
            return Vec::new();
        };
        p.factor = factor.clamp(0.0, 1.0);
        let mut evicted = Vec::new();
        loop {
            let p = &self.pools[pool];
            let t = p.total();
            let over = p.used.committed > t.committed
                || p.used.on_demand > t.on_demand
                || p.used.spot > t.spot;
            if !over {
                break;
            }
            let newest = self
                .instances
                .iter()
                .filter(|(_, i)| {
                    i.request.pool == pool
                        && matches!(
                            i.state,
                            InstanceState::Pending { .. } | InstanceState::Running
                        )
                })
                .max_by(|a, b| {
                    a.1.launched_at
                        .0
                        .total_cmp(&b.1.launched_at.0)
                        .then(a.0.cmp(b.0))
                })
                .map(|(t, _)| t.clone());
            match newest {
                Some(tok) => {
                    self.lose(&tok, now, LossCause::CapacityLoss);
                    evicted.push(tok);
                }
                None => break,
            }
        }
        evicted
    }

    /// The provider reclaims a spot instance. Returns whether it was live.
    pub fn preempt(&mut self, now: Time, token: &str) -> bool {
        let live = matches!(
            self.instances.get(token).map(|i| i.state),
            Some(InstanceState::Running | InstanceState::Pending { .. })
        );
        self.lose(token, now, LossCause::Preempted);
        live
    }

    /// The instance launched with `token`, if any.
    pub fn instance(&self, token: &str) -> Option<&Instance> {
        self.instances.get(token)
    }

    /// Every instance, in token order, without copying.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// Forget lost instances once the controller has seen them.
    pub fn reap_lost(&mut self) {
        let released = &mut self.released;
        self.instances.retain(|t, i| {
            let keep = !matches!(i.state, InstanceState::Lost(_));
            if !keep {
                released.remove(t);
            }
            keep
        });
    }

    /// Whether `region` is down.
    pub fn region_down(&self, region: &str) -> bool {
        self.down.contains(region)
    }

    /// Region ids, each once.
    pub fn regions(&self) -> BTreeSet<String> {
        self.pools.values().map(|p| p.region.clone()).collect()
    }

    /// Pool ids, in order.
    pub fn pools(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.pools.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

impl Driver for SimProvider {
    fn launch(&mut self, now: Time, req: &LaunchRequest) -> Result<(), DriverError> {
        if self.instances.contains_key(&req.token) {
            return Ok(());
        }
        let Some(pool) = self.pools.get(&req.pool) else {
            return Err(DriverError::UnknownPool(req.pool.clone()));
        };
        if self.down.contains(&pool.region) {
            return Err(DriverError::Down {
                region: pool.region.clone(),
                reason: "the region is down".into(),
            });
        }
        let free = pool.free();
        let t = PoolCapacity::of(req);
        if !t.fits_in(&free) {
            return Err(DriverError::Capacity {
                pool: req.pool.clone(),
                asked: req.nodes,
                free,
            });
        }
        let pool = self.pools.get_mut(&req.pool).expect("looked up above");
        pool.used = pool.used.plus(t);
        self.instances.insert(
            req.token.clone(),
            Instance {
                request: req.clone(),
                state: InstanceState::Pending {
                    ready_at: now.plus(self.launch_delay_s),
                },
                launched_at: now,
                since: now,
                // A synthetic address: the simulated providers serve nothing, but the
                // control plane's endpoint list is the same for every driver.
                endpoints: crate::unit::UnitKey::parse(&req.unit)
                    .is_ok_and(|u| u.is_replicas())
                    .then(|| format!("sim://{}/{}", req.region, req.token))
                    .into_iter()
                    .collect(),
            },
        );
        Ok(())
    }

    fn stop(&mut self, now: Time, token: &str) -> Result<(), DriverError> {
        let delay = self.stop_delay_s;
        match self.instances.get_mut(token) {
            None => Err(DriverError::UnknownToken(token.to_string())),
            Some(i) => {
                if matches!(
                    i.state,
                    InstanceState::Pending { .. } | InstanceState::Running
                ) {
                    i.state = InstanceState::Stopping {
                        done_at: now.plus(delay),
                    };
                    i.since = now;
                }
                Ok(())
            }
        }
    }

    fn observe(&mut self, _now: Time) -> Observation {
        Observation::complete(self.instances.values().cloned().collect())
    }

    fn capacity(&mut self, _now: Time, pool: &str) -> Result<PoolCapacity, DriverError> {
        let p = self
            .pools
            .get(pool)
            .ok_or_else(|| DriverError::UnknownPool(pool.to_string()))?;
        if self.down.contains(&p.region) {
            return Err(DriverError::Down {
                region: p.region.clone(),
                reason: "the region is down".into(),
            });
        }
        Ok(p.free())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_plan::Category;

    fn fleet() -> Fleet {
        serde_json::from_str(include_str!("../tests/two-pool-fleet.json")).unwrap()
    }

    fn req(token: &str, pool: &str, nodes: u32) -> LaunchRequest {
        LaunchRequest {
            token: token.into(),
            unit: "u".into(),
            workload: "w".into(),
            pool: pool.into(),
            region: pool.rsplit_once(':').unwrap().0.into(),
            category: Category::OnDemand,
            nodes,
            committed_nodes: 0,
            replicas: 1,
        }
    }

    #[test]
    fn a_replayed_token_never_launches_twice() {
        let f = fleet();
        let mut d = SimProvider::new(&f, 60.0, 10.0);
        let pool = &f.providers[0].regions[0].pools[0].id;
        let before = d.capacity(Time(0.0), pool).unwrap();
        d.launch(Time(0.0), &req("t1", pool, 2)).unwrap();
        d.launch(Time(1.0), &req("t1", pool, 2)).unwrap();
        assert_eq!(d.observe(Time(1.0)).instances.len(), 1);
        let after = d.capacity(Time(1.0), pool).unwrap();
        assert_eq!(after.on_demand, before.on_demand - 2);
        assert!(d.advance(Time(60.0)));
        assert_eq!(
            d.observe(Time(60.0)).instances[0].state,
            InstanceState::Running
        );
        d.stop(Time(61.0), "t1").unwrap();
        d.stop(Time(62.0), "t1").unwrap();
        d.advance(Time(71.0));
        assert!(d.observe(Time(71.0)).instances.is_empty());
        assert_eq!(d.capacity(Time(71.0), pool).unwrap(), before);
    }

    #[test]
    fn capacity_errors_and_outages_are_reported() {
        let f = fleet();
        let mut d = SimProvider::new(&f, 60.0, 10.0);
        let pool = f.providers[0].regions[0].pools[0].id.clone();
        let all = d.capacity(Time(0.0), &pool).unwrap().on_demand;
        let e = d
            .launch(Time(0.0), &req("big", &pool, all + 1))
            .unwrap_err();
        assert!(matches!(e, DriverError::Capacity { .. }), "{e}");
        d.launch(Time(0.0), &req("a", &pool, 1)).unwrap();
        let region = d.instance("a").unwrap().request.region.clone();
        let hit = d.set_region_down(Time(5.0), &region, true);
        assert_eq!(hit, vec!["a".to_string()]);
        assert_eq!(
            d.instance("a").unwrap().state,
            InstanceState::Lost(LossCause::Outage)
        );
        let e = d.launch(Time(6.0), &req("b", &pool, 1)).unwrap_err();
        assert!(matches!(e, DriverError::Down { .. }));
        d.set_region_down(Time(7.0), &region, false);
        d.reap_lost();
        assert_eq!(d.capacity(Time(7.0), &pool).unwrap().on_demand, all);
    }

    #[test]
    fn capacity_loss_evicts_the_newest() {
        let f = fleet();
        let mut d = SimProvider::new(&f, 0.0, 0.0);
        let pool = f.providers[0].regions[0].pools[0].id.clone();
        let all = d.capacity(Time(0.0), &pool).unwrap().on_demand;
        d.launch(Time(0.0), &req("old", &pool, all / 2)).unwrap();
        d.launch(Time(1.0), &req("new", &pool, all / 2)).unwrap();
        let ev = d.set_capacity_factor(Time(2.0), &pool, 0.6);
        assert_eq!(ev, vec!["new".to_string()]);
        assert_eq!(
            d.instance("old").unwrap().state,
            InstanceState::Pending {
                ready_at: Time(0.0)
            }
        );
    }

    #[test]
    fn with_retention_ended_instances_stay_listed_with_their_end() {
        let f = fleet();
        let mut d = SimProvider::new(&f, 0.0, 10.0);
        d.retention_s = Some(100.0);
        let pool = f.providers[0].regions[0].pools[0].id.clone();
        let all = d.capacity(Time(0.0), &pool).unwrap();
        d.launch(Time(0.0), &req("a", &pool, 2)).unwrap();
        d.stop(Time(5.0), "a").unwrap();
        d.advance(Time(20.0));
        // Released at 15 s, still listed with that time.
        assert_eq!(d.capacity(Time(20.0), &pool).unwrap(), all);
        assert_eq!(
            d.instance("a").unwrap().state,
            InstanceState::Stopping {
                done_at: Time(15.0)
            }
        );
        assert_eq!(d.next_transition(), None);
        d.advance(Time(114.0));
        assert!(d.instance("a").is_some());
        d.advance(Time(115.0));
        assert!(d.instance("a").is_none());
        // A replayed launch of a forgotten token is a new instance; of a listed one, a no-op.
        d.launch(Time(120.0), &req("b", &pool, 1)).unwrap();
        d.preempt(Time(121.0), "b");
        d.launch(Time(122.0), &req("b", &pool, 1)).unwrap();
        assert_eq!(
            d.instance("b").unwrap().state,
            InstanceState::Lost(LossCause::Preempted)
        );
        assert_eq!(d.capacity(Time(122.0), &pool).unwrap(), all);
    }
}
