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
    /// Start, seconds on the harness's clock (see [`crate::Ledger::epoch`]).
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
    round: u64,
    /// Tokens whose record changed since [`Meter::take_changed`] last ran.
    changed: std::collections::BTreeSet<String>,
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

    /// The records that changed since the last call (new, extended or closed), for a harness
    /// that stores them as it goes.
    pub fn take_changed(&mut self) -> Vec<Usage> {
        let tokens = std::mem::take(&mut self.changed);
        let mut out: Vec<Usage> = self
            .open
            .iter()
            .filter(|(k, _)| tokens.contains(*k))
            .map(|(_, (u, _))| u.clone())
            .collect();
        out.extend(
            self.closed
                .iter()
                .filter(|u| tokens.contains(&u.token))
                .cloned(),
        );
        out
    }

    /// Record what the driver reports at `now`. Pending, running and stopping instances are
    /// billed (a stopping one until its release time); a lost one is billed until it was
    /// lost; one no longer reported is closed at the last time it was billed. Called after
    /// every change by the simulator, so an instance already open costs a map lookup.
    pub fn observe<'a>(&mut self, now: Time, instances: impl IntoIterator<Item = &'a Instance>) {
        self.round += 1;
        let round = self.round;
        let mut seen = 0usize;
        for inst in instances {
            let r = &inst.request;
            let (end, lost) = match inst.state {
                InstanceState::Pending { .. } | InstanceState::Running => (now.0, false),
                InstanceState::Stopping { done_at } => (done_at.0, false),
                InstanceState::Lost(_) => (inst.since.0, true),
            };
            match self.open.get_mut(&r.token) {
                Some((u, at)) => {
                    if end > u.end_s {
                        u.end_s = end;
                        self.changed.insert(r.token.clone());
                    }
                    *at = round;
                }
                None => {
                    let u = Meter::record(inst, end);
                    self.open.insert(r.token.clone(), (u, round));
                    self.changed.insert(r.token.clone());
                }
            }
            if lost {
                let (u, _) = self.open.remove(&r.token).expect("just seen");
                self.changed.insert(u.token.clone());
                self.closed.push(u);
            } else {
                seen += 1;
            }
        }
        if seen != self.open.len() {
            let gone: Vec<String> = self
                .open
                .iter()
                .filter(|(_, (_, at))| *at != round)
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                let (u, _) = self.open.remove(&k).expect("listed");
                self.changed.insert(k);
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
            committed_nodes: r.committed_nodes.min(r.nodes),
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
}
