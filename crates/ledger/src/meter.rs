//! Metering: what each launched instance was billed for, from a harness's observations of
//! its driver. The simulator feeds it after every change, the service after every
//! reconcile; both then hand the same [`Usage`] records to the ledger, so a simulated bill
//! and a live one are built by the same code.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use stratus_control::{Instance, InstanceState, Time};
use stratus_plan::Category;

/// One instance's billed stretch: from its launch until it was released or lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// The launch's client token: unique per instance, the FOCUS `ResourceId`.
    pub token: String,
    /// Workload name.
    pub workload: String,
    /// Unit key from the plan.
    pub unit: String,
    /// Pool id (`provider:region:instance-type`).
    pub pool: String,
    /// How the nodes were bought.
    pub category: Category,
    /// Nodes.
    pub nodes: u32,
    /// Of which drawn from the pool's reservation.
    pub committed_nodes: u32,
    /// Start, seconds on the harness's clock (see [`crate::Options::epoch`]).
    pub start_s: f64,
    /// End (exclusive), seconds on the same clock.
    pub end_s: f64,
}

/// Turns successive driver observations into [`Usage`] records.
#[derive(Debug, Default)]
pub struct Meter {
    /// Open records and the observation that last saw each.
    open: BTreeMap<String, (Usage, u64)>,
    closed: Vec<Usage>,
    /// Tokens of `closed`, so a record reported again is reopened instead of doubled.
    closed_tokens: std::collections::HashSet<String>,
    round: u64,
    /// Tokens of open records that changed since [`Meter::take_changed`] last ran.
    changed: std::collections::BTreeSet<String>,
    /// Records closed since then that had changed before closing.
    changed_closed: Vec<Usage>,
}

impl Meter {
    /// A meter with nothing seen yet.
    pub fn new() -> Meter {
        Meter::default()
    }

    /// A meter that carries on from records stored before a restart: an instance the driver
    /// still reports extends its record; the others are closed at the first observation.
    pub fn resume(records: Vec<Usage>) -> Meter {
        let mut m = Meter::default();
        for u in records {
            m.open.insert(u.token.clone(), (u, 0));
        }
        m
    }

    /// The records that changed since the last call (new or extended; closing a record does
    /// not change it), for a harness that stores them as it goes.
    pub fn take_changed(&mut self) -> Vec<Usage> {
        let tokens = std::mem::take(&mut self.changed);
        let mut out = std::mem::take(&mut self.changed_closed);
        out.extend(
            tokens
                .iter()
                .filter_map(|t| self.open.get(t))
                .map(|(u, _)| u.clone()),
        );
        out
    }

    /// Hand back records a harness took but could not store, so the next
    /// [`Meter::take_changed`] returns them again.
    pub fn requeue(&mut self, records: Vec<Usage>) {
        for u in records {
            if self.open.contains_key(&u.token) {
                self.changed.insert(u.token);
            } else {
                self.changed_closed.push(u);
            }
        }
    }

    /// Record what the driver reports at `now`. Pending, running and stopping instances are
    /// billed (a stopping one until its release time); a lost one until it was lost. A
    /// record stays open while the driver reports its instance (a lost one too, until the
    /// driver forgets it) and is closed, as last billed, once it does not. Called after every
    /// change by the simulator, so an instance already open costs a map lookup.
    pub fn observe<'a>(&mut self, now: Time, instances: impl IntoIterator<Item = &'a Instance>) {
        self.observe_partial(now, instances, |_| true);
    }

    /// [`Meter::observe`] for a driver that could read only part of its world: `read(pool)`
    /// says whether the pool's region or provider was read. A record of a pool that was not
    /// is left as it stands, neither extended nor closed, since its instance is unknown, not
    /// gone. A closed record whose instance is reported again is reopened, never doubled.
    pub fn observe_partial<'a>(
        &mut self,
        now: Time,
        instances: impl IntoIterator<Item = &'a Instance>,
        read: impl Fn(&str) -> bool,
    ) {
        self.round += 1;
        let round = self.round;
        let mut seen = 0usize;
        for inst in instances {
            seen += 1;
            let r = &inst.request;
            let end = match inst.state {
                InstanceState::Pending { .. } | InstanceState::Running => now.0,
                InstanceState::Stopping { done_at } => done_at.0,
                InstanceState::Lost(_) => inst.since.0,
            };
            let grew = match self.open.get_mut(&r.token) {
                Some((u, at)) => {
                    *at = round;
                    let grew = end > u.end_s;
                    if grew {
                        u.end_s = end;
                    }
                    grew
                }
                None => {
                    let mut u = Meter::record(inst, end);
                    if self.closed_tokens.remove(&r.token) {
                        if let Some(i) = self.closed.iter().position(|c| c.token == r.token) {
                            let old = self.closed.remove(i);
                            u.start_s = u.start_s.min(old.start_s);
                            u.end_s = u.end_s.max(old.end_s);
                        }
                    }
                    self.open.insert(r.token.clone(), (u, round));
                    true
                }
            };
            if grew && !self.changed.contains(&r.token) {
                self.changed.insert(r.token.clone());
            }
        }
        if seen != self.open.len() {
            let gone: Vec<String> = self
                .open
                .iter()
                .filter(|(_, (u, at))| *at != round && read(&u.pool))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                let (u, _) = self.open.remove(&k).expect("listed");
                if self.changed.remove(&k) {
                    self.changed_closed.push(u.clone());
                }
                self.closed_tokens.insert(u.token.clone());
                self.closed.push(u);
            }
        }
    }

    /// A new record for `inst`, billed until `end`.
    fn record(inst: &Instance, end: f64) -> Usage {
        let r = &inst.request;
        Usage {
            token: r.token.clone(),
            workload: r.workload.clone(),
            unit: r.unit.clone(),
            pool: r.pool.clone(),
            category: r.category,
            nodes: r.nodes,
            committed_nodes: stratus_control::PoolCapacity::of(r).committed,
            start_s: inst.launched_at.0,
            end_s: end.max(inst.launched_at.0),
        }
    }

    /// Every record so far, the open ones billed up to their last observation, in start
    /// order (ties by token) so the same run gives the same ledger.
    pub fn usage(&self) -> Vec<Usage> {
        let mut v: Vec<Usage> = self
            .closed
            .iter()
            .chain(self.open.values().map(|(u, _)| u))
            .filter(|u| u.end_s > u.start_s)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.token.cmp(&b.token)));
        v
    }
}

/// Usage of a plan held unchanged for `hours` from time 0: what a plan commits the lab to,
/// for the ledger's default run and for forecasting.
pub fn from_plan(plan: &stratus_plan::Plan, hours: f64) -> Vec<Usage> {
    plan.placements
        .iter()
        .enumerate()
        .map(|(i, p)| Usage {
            token: format!("plan-{i:05}-{}", p.unit),
            workload: p.workload.clone(),
            unit: p.unit.clone(),
            pool: p.pool.clone(),
            category: p.category,
            nodes: p.nodes,
            committed_nodes: p.committed_nodes.min(p.nodes),
            start_s: 0.0,
            end_s: hours * 3600.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_control::{LaunchRequest, LossCause};

    fn inst(token: &str, state: InstanceState, launched: f64) -> Instance {
        Instance {
            request: LaunchRequest {
                token: token.into(),
                unit: "u".into(),
                workload: "w".into(),
                pool: "p:r:t".into(),
                region: "p:r".into(),
                category: Category::OnDemand,
                nodes: 2,
                committed_nodes: 0,
                replicas: 1,
            },
            state,
            launched_at: Time(launched),
            since: Time(launched),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn bills_from_launch_to_release_or_loss() {
        let mut m = Meter::new();
        let a = inst(
            "a",
            InstanceState::Pending {
                ready_at: Time(60.0),
            },
            0.0,
        );
        let b = inst("b", InstanceState::Running, 100.0);
        m.observe(Time(100.0), [&a, &b]);
        let a2 = inst(
            "a",
            InstanceState::Stopping {
                done_at: Time(400.0),
            },
            0.0,
        );
        let mut b2 = inst("b", InstanceState::Lost(LossCause::Preempted), 100.0);
        b2.since = Time(250.0);
        m.observe(Time(300.0), [&a2, &b2]);
        // `a` released between observations: billed until its release time.
        m.observe(Time(500.0), []);
        let u = m.usage();
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].token.as_str(), u[0].start_s, u[0].end_s),
            ("a", 0.0, 400.0)
        );
        assert_eq!(
            (u[1].token.as_str(), u[1].start_s, u[1].end_s),
            ("b", 100.0, 250.0)
        );
    }

    #[test]
    fn a_lost_instance_reported_again_is_billed_once() {
        let mut m = Meter::new();
        let mut lost = inst("x", InstanceState::Lost(LossCause::Preempted), 0.0);
        lost.since = Time(90.0);
        // The driver keeps reporting a lost instance until the harness reaps it.
        m.observe(Time(100.0), [&lost]);
        m.observe(Time(130.0), [&lost]);
        m.observe(Time(160.0), []);
        let u = m.usage();
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!((u[0].start_s, u[0].end_s), (0.0, 90.0));
    }

    #[test]
    fn only_new_or_extended_records_are_handed_out_and_failed_writes_come_back() {
        let mut m = Meter::resume(vec![
            Meter::record(&inst("old", InstanceState::Running, 0.0), 50.0),
            Meter::record(&inst("kept", InstanceState::Running, 0.0), 50.0),
        ]);
        let kept = inst("kept", InstanceState::Running, 0.0);
        let new = inst("new", InstanceState::Running, 60.0);
        m.observe(Time(70.0), [&kept, &new]);
        // `old` is closed as stored, so nothing about it needs writing again.
        let mut got: Vec<(String, f64)> = m
            .take_changed()
            .into_iter()
            .map(|u| (u.token, u.end_s))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, [("kept".to_string(), 70.0), ("new".to_string(), 70.0)]);
        assert!(m.take_changed().is_empty());
        // Extended, then gone before it was taken: handed out once, as closed.
        m.observe(Time(80.0), [&kept]);
        m.observe(Time(90.0), []);
        let taken = m.take_changed();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].token.as_str(), taken[0].end_s), ("kept", 80.0));
        m.requeue(taken);
        assert_eq!(
            m.take_changed().len(),
            1,
            "a failed write is handed out again"
        );
        assert_eq!(m.usage().len(), 3);
    }

    /// See issue 15: a region that could not be observed closed its records, and the same
    /// token seen again later was billed twice.
    #[test]
    fn a_record_whose_region_was_not_read_is_kept_open_and_never_doubled() {
        let mut m = Meter::new();
        let a = inst("a", InstanceState::Running, 0.0);
        m.observe(Time(100.0), [&a]);
        // Its region could not be read: neither closed nor extended.
        m.observe_partial(Time(200.0), [], |pool| pool != "p:r:t");
        assert_eq!(m.usage()[0].end_s, 100.0);
        m.observe(Time(300.0), [&a]);
        let u = m.usage();
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!((u[0].start_s, u[0].end_s), (0.0, 300.0));
        // Closed, then reported again: reopened, one record.
        m.observe(Time(400.0), []);
        m.observe(Time(500.0), [&a]);
        let u = m.usage();
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!((u[0].start_s, u[0].end_s), (0.0, 500.0));
    }
}
