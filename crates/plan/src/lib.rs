//! The decision core: a pure, deterministic function from (fleet, workloads, previous plan,
//! policy) to a plan.
//!
//! Pipeline (as in Nomad's and Kubernetes' schedulers): `problem::compile` filters every
//! (unit, offer) pair with named constraints and scores the survivors in $/h; `solve` /
//! `exact` select; [`plan`] explains each placement and totals the result.
//!
//! Architecture invariant: no I/O, no clock, no randomness. The CLI, the simulator and the
//! controller all call [`plan`].

pub mod exact;
pub mod filter;
pub mod flow;
pub mod interrupt;
pub mod policy;
pub mod problem;
pub mod solve;

pub use interrupt::{AfterChecks, Interrupt, Never};
pub use policy::{Algorithm, Policy};
pub use problem::{Category, Constraint, UnitKind};

use problem::Problem;
use serde::{Deserialize, Serialize};
use solve::{Choice, Residual, Solved};
use std::collections::{BTreeMap, HashMap};
use stratus_model::{Fleet, WorkloadSet};

/// Where each unit was in the previous plan, so moving it can be charged.
#[derive(Debug, Clone, Default)]
pub struct PreviousPlan {
    /// Unit key → (pool id, category).
    pub placements: HashMap<String, (String, Category)>,
}

impl From<&Plan> for PreviousPlan {
    fn from(p: &Plan) -> Self {
        PreviousPlan {
            placements: p
                .placements
                .iter()
                .map(|x| (x.unit.clone(), (x.pool.clone(), x.category)))
                .collect(),
        }
    }
}

/// One placed unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Workload name.
    pub workload: String,
    /// Unit key (the workload name, or `service@location` for inference).
    pub unit: String,
    /// Workload kind.
    pub kind: UnitKind,
    /// Provider.
    pub provider: String,
    /// Region id (`provider:region`).
    pub region: String,
    /// Pool id.
    pub pool: String,
    /// Accelerator model.
    pub accelerator: String,
    /// How the nodes are bought.
    pub category: Category,
    /// Chips used.
    pub chips: u32,
    /// Nodes used.
    pub nodes: u32,
    /// Of which covered by a commitment.
    pub committed_nodes: u32,
    /// Inference replicas (1 for jobs).
    pub replicas: u32,
    /// Marginal dollars per hour.
    pub cost_per_hour: f64,
    /// Objective contribution per hour (dollars + carbon + latency + locality + migration).
    pub objective_per_hour: f64,
    /// The objective by term (they sum to `objective_per_hour`).
    #[serde(default)]
    pub terms: problem::Terms,
    /// RTT from the users to the region, inference only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Facility power counted against power caps, MW: (chips × TDP × `power_cap_utilisation` + host) × PUE.
    pub power_mw: f64,
    /// One line: why here.
    pub explanation: String,
}

/// A unit that could not be placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unplaced {
    /// Workload name.
    pub workload: String,
    /// Unit key.
    pub unit: String,
    /// Workload kind.
    pub kind: UnitKind,
    /// The constraint that stopped it.
    pub constraint: Constraint,
    /// One line: what stopped it, with counts.
    pub reason: String,
}

/// Totals for one provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderTotals {
    /// Marginal $/h.
    pub cost_per_hour: f64,
    /// Chips used.
    pub chips: u64,
    /// Facility power counted against power caps, MW: (chips × TDP × `power_cap_utilisation` + host) × PUE.
    pub power_mw: f64,
}

/// Plan-wide totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Per provider.
    pub by_provider: BTreeMap<String, ProviderTotals>,
    /// Chips per accelerator model.
    pub chips_by_accelerator: BTreeMap<String, u64>,
    /// Chips used.
    pub chips: u64,
    /// Facility power counted against power caps, MW: (chips × TDP × `power_cap_utilisation` + host) × PUE.
    pub power_mw: f64,
    /// Energy per day at the policy's utilisation, MWh.
    pub energy_mwh_per_day: f64,
    /// Emissions per day, tCO2e.
    pub tco2e_per_day: f64,
    /// Share of inference demand (req/s) placed within its latency SLO.
    pub slo_coverage: f64,
    /// Committed nodes used / available.
    pub committed_nodes_used: u64,
    /// Committed nodes available.
    pub committed_nodes_available: u64,
    /// Units placed / total.
    pub units_placed: usize,
    /// Units in total.
    pub units_total: usize,
}

/// The planner's output. `stratus plan --format json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Policy name.
    pub policy: String,
    /// Solution method.
    pub method: String,
    /// Marginal dollars per hour of all placements.
    pub cost_per_hour: f64,
    /// Objective per hour: dollars (training at H100-equivalent progress) + carbon + latency +
    /// locality + migration + penalties of unplaced units.
    pub objective_per_hour: f64,
    /// Proven lower bound on the objective.
    pub lower_bound_per_hour: f64,
    /// The relaxation that proved it (plans written before this field read as empty).
    #[serde(default)]
    pub lower_bound_by: String,
    /// (objective − bound) / bound.
    pub gap: f64,
    /// Placed units.
    pub placements: Vec<Placement>,
    /// Units left out, with reasons.
    pub unplaced: Vec<Unplaced>,
    /// Totals.
    pub summary: Summary,
    /// Whether the caller's interrupt (`stratus plan --time-limit`) stopped the search before
    /// its budget ran out: the plan keeps every rule but is not the budget's plan, and the
    /// same input may plan differently. Absent from the JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_early: bool,
}

/// Plan all workloads on the fleet. Pure and deterministic.
pub fn plan(
    fleet: &Fleet,
    workloads: &WorkloadSet,
    policy: &Policy,
    previous: Option<&PreviousPlan>,
) -> Plan {
    plan_until(fleet, workloads, policy, previous, &Never)
}

/// [`plan`], asking `interrupt` between steps of the search whether to stop early: the
/// caller's wall-clock safety net (see [`interrupt`]). An interrupt that never fires gives
/// exactly [`plan`]'s plan.
pub fn plan_until(
    fleet: &Fleet,
    workloads: &WorkloadSet,
    policy: &Policy,
    previous: Option<&PreviousPlan>,
    interrupt: &dyn Interrupt,
) -> Plan {
    let problem = problem::compile(fleet, workloads, policy, previous);
    let solved = solve_problem_until(&problem, policy, interrupt);
    render(&problem, policy, solved)
}

/// Select on a compiled problem with the policy's algorithm.
pub fn solve_problem(problem: &Problem, policy: &Policy) -> Solved {
    solve_problem_until(problem, policy, &Never)
}

/// [`solve_problem`], asking `interrupt` whether to stop early.
pub fn solve_problem_until(
    problem: &Problem,
    policy: &Policy,
    interrupt: &dyn Interrupt,
) -> Solved {
    match policy.algorithm {
        Algorithm::CheapestFirst => cheapest_first(problem),
        Algorithm::Stratus => {
            let size: usize = problem.units.iter().map(|u| u.cands.len()).sum();
            let heuristic = solve::solve_lagrangian_until(
                problem,
                policy.dual_iterations,
                policy.budget,
                interrupt,
            );
            if size > policy.exact_max_candidates
                || problem.units.len() > policy.exact_max_units
                || heuristic.stopped_early
            {
                return heuristic;
            }
            // Small enough to try to prove: the exact solve starts from the heuristic's plan,
            // so when its node limit stops it, its best is still no worse.
            match exact::solve_exact(problem, Some(&heuristic.choice)) {
                Some(exact::Exact::Optimal(s)) => s,
                Some(exact::Exact::Stopped(choice)) => {
                    let objective = solve::objective(problem, &choice);
                    if solve::feasible(problem, &choice) && objective < heuristic.objective {
                        Solved {
                            choice,
                            objective,
                            method: format!(
                                "{}, improved by a stopped exact MILP",
                                heuristic.method
                            ),
                            ..heuristic
                        }
                    } else {
                        heuristic
                    }
                }
                None => heuristic,
            }
        }
    }
}

/// The baseline (see `solve::cheapest_first`), with the plain relaxation as its bound.
pub fn cheapest_first(p: &Problem) -> Solved {
    let (choice, _) = solve::cheapest_first(p);
    let objective = solve::objective(p, &choice);
    Solved {
        choice,
        objective,
        lower_bound: solve::relaxation_bound(p).min(objective),
        bound_by: "every unit at its cheapest option",
        method: "cheapest-first, arrival order".into(),
        stopped_early: false,
    }
}

fn render(p: &Problem, policy: &Policy, s: Solved) -> Plan {
    let mut res = Residual::new(p);
    for (u, c) in s.choice.iter().enumerate() {
        if let Some(c) = c {
            res.take(p, u, *c);
        }
    }
    let mut placements = Vec::new();
    let mut unplaced = Vec::new();
    let mut summary = Summary {
        units_total: p.units.len(),
        ..Summary::default()
    };
    let mut demand_total = 0.0;
    let mut demand_ok = 0.0;
    let mut held: Option<Held> = None;
    for o in &p.offers {
        if o.category == Category::Committed {
            summary.committed_nodes_available += o.capacity_nodes as u64;
        }
    }
    for (ui, u) in p.units.iter().enumerate() {
        if u.kind == UnitKind::Inference {
            demand_total += u.rps;
        }
        match s.choice[ui] {
            Some(ci) => {
                let c = &u.cands[ci];
                let o = &p.offers[c.offer as usize];
                let provider = p.providers[o.provider].clone();
                let power_mw = c.watts / 1e6;
                let t = summary.by_provider.entry(provider.clone()).or_default();
                t.cost_per_hour += c.dollars;
                t.chips += c.chips as u64;
                t.power_mw += power_mw;
                *summary
                    .chips_by_accelerator
                    .entry(o.accelerator.name().to_string())
                    .or_default() += c.chips as u64;
                summary.chips += c.chips as u64;
                summary.power_mw += power_mw;
                let mwh = power_mw * o.energy_share * 24.0;
                summary.energy_mwh_per_day += mwh;
                summary.tco2e_per_day += mwh * o.carbon / 1000.0;
                let committed_nodes = match o.category {
                    Category::Committed => c.nodes,
                    _ => 0,
                };
                summary.committed_nodes_used += committed_nodes as u64;
                if u.kind == UnitKind::Inference {
                    demand_ok += u.rps;
                }
                summary.units_placed += 1;
                placements.push(Placement {
                    workload: u.workload.clone(),
                    unit: u.key.clone(),
                    kind: u.kind,
                    provider,
                    region: p.region_ids[o.region].clone(),
                    pool: o.pool_id.clone(),
                    accelerator: o.accelerator.name().to_string(),
                    category: if c.nodes2 > 0 {
                        Category::CommittedPlusOnDemand
                    } else {
                        o.category
                    },
                    chips: c.chips,
                    nodes: c.total_nodes(),
                    committed_nodes,
                    replicas: c.replicas,
                    cost_per_hour: c.dollars,
                    objective_per_hour: c.cost,
                    terms: u.terms(&p.offers, c, policy),
                    rtt_ms: (u.kind == UnitKind::Inference).then_some(c.rtt_ms),
                    power_mw,
                    explanation: explain(p, policy, &s.choice, &mut res, ui, ci),
                });
            }
            None => {
                let held = held.get_or_insert_with(|| Held::new(p, &s.choice));
                let (constraint, reason) = why_unplaced(p, held, &res, ui);
                unplaced.push(Unplaced {
                    workload: u.workload.clone(),
                    unit: u.key.clone(),
                    kind: u.kind,
                    constraint,
                    reason,
                });
            }
        }
    }
    summary.slo_coverage = if demand_total > 0.0 {
        demand_ok / demand_total
    } else {
        1.0
    };
    let cost_per_hour = placements.iter().map(|x| x.cost_per_hour).sum();
    let lb = s.lower_bound;
    Plan {
        policy: policy.algorithm.to_string(),
        method: if s.stopped_early {
            format!("{}, stopped early by the caller's interrupt", s.method)
        } else {
            s.method
        },
        cost_per_hour,
        objective_per_hour: s.objective,
        lower_bound_per_hour: lb,
        lower_bound_by: s.bound_by.to_string(),
        gap: if lb > 0.0 {
            (s.objective - lb) / lb
        } else {
            0.0
        },
        placements,
        unplaced,
        summary,
        stopped_early: s.stopped_early,
    }
}

fn offer_label(p: &Problem, c: &problem::Cand) -> String {
    let o = &p.offers[c.offer as usize];
    match o.category {
        _ if c.nodes2 > 0 => format!(
            "{} ({} committed + {} on-demand nodes)",
            o.pool_id, c.nodes, c.nodes2
        ),
        Category::OnDemand | Category::CommittedPlusOnDemand => o.pool_id.clone(),
        Category::Spot => format!("{} (spot)", o.pool_id),
        Category::Committed => format!("{} (committed)", o.pool_id),
    }
}

fn explain(
    p: &Problem,
    policy: &Policy,
    choice: &Choice,
    res: &mut Residual,
    ui: usize,
    ci: usize,
) -> String {
    let u = &p.units[ui];
    let c = &u.cands[ci];
    let here = format!(
        "${:.2}/h ({} nodes{})",
        c.dollars,
        c.total_nodes(),
        if u.kind == UnitKind::Inference {
            format!(", {} replicas, {:.0} ms RTT", c.replicas, c.rtt_ms)
        } else {
            String::new()
        }
    );
    // The cheapest option that was better on the objective: why was it not taken?
    res.give(p, ui, ci);
    let mut why = None;
    if let Some((bi, b)) = u
        .cands
        .iter()
        .enumerate()
        .find(|(_, b)| b.cost < c.cost - 1e-9)
    {
        let mut reason = res.blocks(p, ui, bi);
        if reason.is_none() {
            if let Some(g) = u.group {
                if !solve::group_ok_with(p, g, choice, Some((ui, Some(bi)))) {
                    reason = Some(Constraint::Redundancy);
                }
            }
        }
        // "Cheaper" is on the objective; say so when its price alone is not lower.
        let better = if b.dollars < c.dollars {
            "cheaper"
        } else {
            "lower-objective"
        };
        why = Some(match reason {
            Some(r) => format!(
                "; {better} {} (${:.2}/h) ruled out by {r}",
                offer_label(p, b),
                b.dollars
            ),
            None => format!(
                "; {better} {} (${:.2}/h) left to other workloads (global trade-off)",
                offer_label(p, b),
                b.dollars
            ),
        });
    }
    res.take(p, ui, ci);
    // Options that cost exactly as much are ties, not alternatives ruled out.
    let ties = u
        .cands
        .iter()
        .filter(|b| (b.cost - c.cost).abs() <= 1e-9)
        .count()
        - 1;
    let decided = decided_by(p, policy, u, c);
    let why = why.unwrap_or_else(|| match (u.cands.len(), u.cands.get(ci + 1)) {
        (1, _) => "; only feasible option".into(),
        // The next option is the one with the lower price; `decided` says why it lost.
        (n, _) if ties == 0 && !decided.is_empty() => {
            format!("; lowest objective of {n} feasible options")
        }
        (n, _) if ties > 0 => format!(
            "; cheapest of {n} feasible options, tied with {ties} other{} at the same cost",
            if ties == 1 { "" } else { "s" }
        ),
        (n, Some(next)) => format!(
            "; cheapest of {n} feasible options, next {} ${:.2}/h",
            offer_label(p, next),
            next.dollars
        ),
        (n, None) => format!("; cheapest of {n} feasible options"),
    });
    format!("{} {here}{why}{decided}", offer_label(p, c))
}

/// Where an option with a lower price lost on the objective: the term that outweighed the
/// saving (carbon, latency, data locality, migration, or price per unit of progress).
fn decided_by(p: &Problem, policy: &Policy, u: &problem::Unit, c: &problem::Cand) -> String {
    let Some(b) = u
        .cands
        .iter()
        .filter(|b| b.dollars < c.dollars - 1e-9 && b.cost >= c.cost - 1e-9)
        .min_by(|a, b| a.dollars.total_cmp(&b.dollars).then(a.offer.cmp(&b.offer)))
    else {
        return String::new();
    };
    let terms = |x| u.terms(&p.offers, x, policy);
    let (term, more) = terms(b)
        .named()
        .into_iter()
        .zip(terms(c).named())
        .map(|((name, x), (_, y))| (name, x - y))
        .fold(("price", f64::NEG_INFINITY), |best, t| {
            if t.1 > best.1 {
                t
            } else {
                best
            }
        });
    let term = match (term, u.kind) {
        ("price", UnitKind::Training) => "price per unit of progress",
        (t, _) => t,
    };
    format!(
        "; {} has a lower price (${:.2}/h) but ${:.2}/h more {term}",
        offer_label(p, b),
        b.dollars,
        more
    )
}

fn why_unplaced(p: &Problem, held: &Held, res: &Residual, ui: usize) -> (Constraint, String) {
    let u = &p.units[ui];
    if u.cands.is_empty() {
        // Filters run in `Constraint` order, so the last one that removed anything is the
        // one the surviving options ran into.
        let top = u
            .rejected
            .iter()
            .filter(|(_, e)| e.options > 0)
            .map(|(c, _)| *c)
            .max()
            .unwrap_or(Constraint::Accelerator);
        let detail = u
            .rejected
            .iter()
            .map(|(c, e)| match e.closest.detail() {
                d if d.is_empty() => format!("{c}: {}", e.options),
                d => format!("{c}: {} (closest: {d})", e.options),
            })
            .collect::<Vec<_>>()
            .join(", ");
        return (
            top,
            format!("no option passes the filters (offers excluded by {detail})"),
        );
    }
    let mut cap = 0;
    let mut pow = 0;
    // The cheapest option that still has room, if any (options are sorted by cost).
    let mut room = None;
    for ci in 0..u.cands.len() {
        match res.blocks(p, ui, ci) {
            Some(Constraint::Capacity) => cap += 1,
            Some(Constraint::PowerCap) => pow += 1,
            None => {
                room.get_or_insert(ci);
            }
            _ => {}
        }
    }
    if let (Some(ci), None) = (room, u.group) {
        // Room is left, but on options that cost more than leaving the unit out.
        let c = &u.cands[ci];
        let deferred = if u.kind == UnitKind::Batch {
            " (deferred)"
        } else {
            ""
        };
        let constraint = match (cap, pow) {
            (0, 0) => Constraint::MaxPrice,
            (c, w) if w > c => Constraint::PowerCap,
            _ => Constraint::Capacity,
        };
        return (
            constraint,
            format!(
                "leaving it out (${:.2}/h) costs less than any of the {} of its {} feasible options that have room: the cheapest, {} at ${:.2}/h, costs ${:.2}/h on the objective; {cap} full, {pow} over their region's power cap{deferred}{}",
                u.penalty,
                u.cands.len() - cap - pow,
                u.cands.len(),
                offer_label(p, c),
                c.dollars,
                c.cost,
                if ci > 0 {
                    held_by(p, held, res, ui)
                } else {
                    String::new()
                }
            ),
        );
    }
    // Derived from the final state: a service unit with an option that still fits was left
    // out by its redundancy rule; otherwise the commoner of full pools and power caps.
    let c = if cap + pow < u.cands.len() && u.group.is_some() {
        Constraint::Redundancy
    } else if pow > cap {
        Constraint::PowerCap
    } else {
        Constraint::Capacity
    };
    let reason = match c {
        Constraint::Redundancy => format!(
            "service cannot span its required providers/regions with the capacity left ({} feasible options)",
            u.cands.len()
        ),
        _ => format!(
            "all {} feasible options are taken: {cap} full, {pow} over their region's power cap{}{}",
            u.cands.len(),
            if u.kind == UnitKind::Batch { " (deferred)" } else { "" },
            held_by(p, held, res, ui)
        ),
    };
    (c, reason)
}

/// The units placed on each offer and in each region, for `held_by`.
struct Held {
    on_offer: Vec<Vec<usize>>,
    in_region: Vec<Vec<usize>>,
}

impl Held {
    fn new(p: &Problem, choice: &Choice) -> Held {
        let on_offer = solve::occupants(p, choice);
        let mut in_region = vec![Vec::new(); p.region_cap_watts.len()];
        for (u, c) in choice.iter().enumerate() {
            if let Some(c) = c {
                in_region[p.units[u].cands[*c].region as usize].push(u);
            }
        }
        Held {
            on_offer,
            in_region,
        }
    }
}

/// Who holds a left-out unit's cheapest option: the units on its pool (or, where the region's
/// power is what ran out, in its region), those worth most first, each with the penalty the
/// plan would pay to leave it out instead.
fn held_by(p: &Problem, held: &Held, res: &Residual, ui: usize) -> String {
    let u = &p.units[ui];
    let best = 0;
    let cand = &u.cands[best];
    let by_power = res.blocks(p, ui, best) == Some(Constraint::PowerCap);
    let mut holders: Vec<usize> = if by_power {
        held.in_region[cand.region as usize].clone()
    } else {
        let mut h = held.on_offer[cand.offer as usize].clone();
        if cand.nodes2 > 0 {
            h.extend(&held.on_offer[cand.offer2 as usize]);
            h.sort_unstable();
            h.dedup();
        }
        h
    };
    holders.retain(|&v| v != ui);
    if holders.is_empty() {
        return String::new();
    }
    // Only the three worth most are named: found without sorting every holder (a region
    // short of power can hold thousands, and thousands of units can be left out).
    let worth_more = |a: &usize, b: &usize| {
        p.units[*b]
            .penalty
            .total_cmp(&p.units[*a].penalty)
            .then(a.cmp(b))
    };
    let count = holders.len();
    if count > 3 {
        holders.select_nth_unstable_by(3, worth_more);
        holders.truncate(3);
    }
    holders.sort_by(worth_more);
    let named: Vec<String> = holders
        .iter()
        .take(3)
        .map(|&v| {
            format!(
                "{} (${:.0}/h to leave out)",
                p.units[v].key, p.units[v].penalty
            )
        })
        .collect();
    let more = count.saturating_sub(3);
    format!(
        "; its cheapest option, {}, is {} {}{} (this unit: ${:.0}/h to leave out)",
        offer_label(p, cand),
        if by_power {
            "in a region whose power is used by"
        } else {
            "held by"
        },
        named.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        u.penalty
    )
}
