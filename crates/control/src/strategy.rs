//! The four placement strategies behind one trait. A strategy decides only where units go;
//! the loop that observes, launches, stops and retries is the same for all of them, so a
//! comparison in the simulator differs only in decisions.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use stratus_model::WorkloadSet;
use stratus_plan::{Algorithm, Constraint, Placement, Plan, Policy, UnitKind};

/// How the controller decides placements. `Stratus` is the product; the others are the
/// baselines the simulator compares it with, run by the same loop so only the decision differs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The global planner, re-optimising everything on a period and on events.
    Stratus,
    /// SkyPilot-like: each workload to its cheapest option in arrival order, failing over to the
    /// next cheapest on capacity errors; running work is never moved for cost.
    CheapestFirst,
    /// Everything on one cloud (the global planner restricted to that provider).
    SingleProvider(String),
    /// New workloads dealt to providers in turn, cheapest option within the provider, failing
    /// over to the next provider.
    RoundRobin,
}

impl Strategy {
    /// Short name for reports.
    pub fn name(&self) -> String {
        self.placer().name()
    }

    /// The strategy's decision maker.
    pub fn placer(&self) -> Box<dyn Placer> {
        match self {
            Strategy::Stratus => Box::new(Global { only: None }),
            Strategy::SingleProvider(p) => Box::new(Global {
                only: Some(p.clone()),
            }),
            Strategy::CheapestFirst => Box::new(Cheapest),
            Strategy::RoundRobin => Box::new(RoundRobin::default()),
        }
    }
}

/// What the planner is asked through: the fleet as plans should see it (believed-down
/// regions, remembered capacity errors, capacity held by units kept in place, and by
/// `holding`) restricted to one provider's pools when `only` is set.
pub trait PlanContext {
    /// Plan `workloads` on the current view of the fleet.
    fn plan(&mut self, only: Option<&str>, workloads: &WorkloadSet, holding: &[Placement]) -> Plan;
    /// Provider names, in fleet order.
    fn providers(&self) -> Vec<String>;
}

/// What a strategy decided for a set of workloads.
#[derive(Debug, Default)]
pub struct Placed {
    /// Units placed.
    pub placements: Vec<Placement>,
    /// Workloads with at least one unit left out, and why (one line).
    pub unplaced: BTreeMap<String, String>,
    /// The planner's whole output, for a global re-optimisation.
    pub plan: Option<Plan>,
    /// Services placed below their redundancy because the providers or regions they need
    /// were unavailable.
    pub degraded: u64,
}

/// One placement strategy.
pub trait Placer: Send + std::fmt::Debug {
    /// Short name for reports.
    fn name(&self) -> String;
    /// Whether it re-optimises everything on a period and after events, and may move
    /// running work for cost (with hysteresis); otherwise it plans only new, lost and
    /// failed work and a running unit keeps its pool.
    fn global(&self) -> bool;
    /// The planner policy it plans with.
    fn policy(&self) -> Policy;
    /// Whether a service's units must sit on one provider each (its cross-provider
    /// redundancy cannot hold, so it is kept across regions only).
    fn one_provider_per_workload(&self) -> bool {
        false
    }
    /// Place `subset`.
    fn place(&mut self, subset: &WorkloadSet, cx: &mut dyn PlanContext) -> Placed;
}

/// Workload names in file order (arrival order for the simulator's sets).
pub fn names(w: &WorkloadSet) -> impl Iterator<Item = &str> {
    w.training
        .iter()
        .map(|t| t.name.as_str())
        .chain(w.inference.iter().map(|s| s.name.as_str()))
        .chain(w.batch.iter().map(|b| b.name.as_str()))
}

/// The workloads whose name passes `keep`.
pub fn filter(w: &WorkloadSet, keep: impl Fn(&str) -> bool) -> WorkloadSet {
    WorkloadSet {
        training: w
            .training
            .iter()
            .filter(|t| keep(&t.name))
            .cloned()
            .collect(),
        inference: w
            .inference
            .iter()
            .filter(|s| keep(&s.name))
            .cloned()
            .collect(),
        batch: w.batch.iter().filter(|b| keep(&b.name)).cloned().collect(),
    }
}

fn unplaced_reasons(plan: &Plan) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for u in &plan.unplaced {
        out.entry(u.workload.clone())
            .or_insert_with(|| format!("{}: {}", u.unit, u.reason));
    }
    out
}

/// Plan on the fleet (one provider's pools when `only`), then run services whose redundancy
/// cannot hold now (an outage took the providers they need) degraded, on what is left,
/// rather than not at all.
fn plan_with_degraded(
    only: Option<&str>,
    subset: &WorkloadSet,
    cx: &mut dyn PlanContext,
) -> Placed {
    let plan = cx.plan(only, subset, &[]);
    let degraded: BTreeSet<String> = plan
        .unplaced
        .iter()
        .filter(|u| u.kind == UnitKind::Inference && u.constraint == Constraint::Redundancy)
        .map(|u| u.workload.clone())
        .collect();
    let mut placed = Placed {
        unplaced: unplaced_reasons(&plan),
        placements: plan.placements.clone(),
        plan: Some(plan),
        degraded: 0,
    };
    if degraded.is_empty() {
        return placed;
    }
    let mut part = filter(subset, |n| degraded.contains(n));
    for s in &mut part.inference {
        s.min_providers = 1;
        s.min_regions = 1;
    }
    let plan = cx.plan(only, &part, &placed.placements);
    let got: BTreeSet<&str> = plan
        .placements
        .iter()
        .map(|p| p.workload.as_str())
        .collect();
    placed.degraded += got.len() as u64;
    for w in &got {
        // Still short of redundancy: retried as capacity comes back.
        placed.unplaced.insert(
            w.to_string(),
            "running degraded: the providers or regions its redundancy needs are unavailable"
                .into(),
        );
    }
    placed.placements.extend(plan.placements);
    placed
}

/// The global planner, over every provider or one.
#[derive(Debug)]
struct Global {
    only: Option<String>,
}

impl Placer for Global {
    fn name(&self) -> String {
        match &self.only {
            None => "stratus".into(),
            Some(p) => format!("single-provider:{p}"),
        }
    }
    fn global(&self) -> bool {
        true
    }
    fn policy(&self) -> Policy {
        Policy {
            budget: CONTROLLER_BUDGET,
            ..Policy::default()
        }
    }
    fn one_provider_per_workload(&self) -> bool {
        self.only.is_some()
    }
    fn place(&mut self, subset: &WorkloadSet, cx: &mut dyn PlanContext) -> Placed {
        plan_with_degraded(self.only.as_deref(), subset, cx)
    }
}

/// The planner's work budget when the controller re-plans: none, so no LP prices, neighbourhood
/// search or packing bound. It re-plans every hour and after every event, and with the default
/// budget the week's simulation spent 7× as long planning (`stratus bench sim`: 78 s against
/// 11 s, even at a budget of 20,000, since the LP prices and the packing bound alone cost most
/// of it); `stratus plan` gets the default.
pub const CONTROLLER_BUDGET: u64 = 0;

/// Cheapest option first, per workload in arrival order.
#[derive(Debug)]
struct Cheapest;

impl Placer for Cheapest {
    fn name(&self) -> String {
        "cheapest-first".into()
    }
    fn global(&self) -> bool {
        false
    }
    fn policy(&self) -> Policy {
        Policy::with_algorithm(Algorithm::CheapestFirst)
    }
    fn place(&mut self, subset: &WorkloadSet, cx: &mut dyn PlanContext) -> Placed {
        plan_with_degraded(None, subset, cx)
    }
}

/// New workloads dealt to providers in turn; a workload that does not fit on its provider
/// fails over to the next.
#[derive(Debug, Default)]
struct RoundRobin {
    next: usize,
    of: BTreeMap<String, usize>,
}

impl Placer for RoundRobin {
    fn name(&self) -> String {
        "round-robin".into()
    }
    fn global(&self) -> bool {
        false
    }
    fn policy(&self) -> Policy {
        Policy::with_algorithm(Algorithm::CheapestFirst)
    }
    fn one_provider_per_workload(&self) -> bool {
        true
    }
    fn place(&mut self, subset: &WorkloadSet, cx: &mut dyn PlanContext) -> Placed {
        let providers = cx.providers();
        let n = providers.len().max(1);
        for w in names(subset) {
            if !self.of.contains_key(w) {
                self.of.insert(w.to_string(), self.next % n);
                self.next += 1;
            }
        }
        let mut out = Placed::default();
        let mut left: BTreeSet<String> = names(subset).map(String::from).collect();
        for attempt in 0..providers.len() {
            if left.is_empty() {
                break;
            }
            let mut placed_now: Vec<Placement> = Vec::new();
            for (pi, pname) in providers.iter().enumerate() {
                let group: BTreeSet<String> = left
                    .iter()
                    .filter(|w| (self.of[*w] + attempt) % n == pi)
                    .cloned()
                    .collect();
                if group.is_empty() {
                    continue;
                }
                let part = filter(subset, |w| group.contains(w));
                let plan = cx.plan(Some(pname), &part, &out.placements);
                // A workload placed in part stays with this provider; its units that found
                // no room are retried at later reconciles.
                let got: BTreeSet<String> =
                    plan.placements.iter().map(|p| p.workload.clone()).collect();
                for (w, why) in unplaced_reasons(&plan) {
                    if got.contains(&w) {
                        out.unplaced.insert(w, why);
                    }
                }
                placed_now.extend(plan.placements);
                for g in &group {
                    if got.contains(g) {
                        left.remove(g);
                    }
                }
            }
            out.placements.extend(placed_now);
        }
        for w in left {
            out.unplaced.insert(
                w,
                format!("no provider of {} had room for it", providers.join(", ")),
            );
        }
        out
    }
}
