//! Every rule of every placement of a plan, checked from the model's rules, and the plan's
//! objective recomputed.

use crate::model::{by_key, option_for, spans, usage, Model};
use std::collections::BTreeSet;
use stratus_model::{Fleet, WorkloadSet};
use stratus_plan::{Category, Plan, Policy, PreviousPlan};

/// What the checker found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Each broken rule, one line each; empty when the plan keeps every rule.
    pub violations: Vec<String>,
    /// The plan's objective recomputed from the rules, $/h.
    pub objective: f64,
    /// The option each item took (index into `Item::options`), as read from the plan.
    pub choice: Vec<Option<usize>>,
}

/// Relative difference, against a floor of one dollar.
fn differs(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() > rel * a.abs().max(b.abs()).max(1.0)
}

/// Check `plan` against the rules for this fleet and these workloads (and the previous plan
/// it was made with, whose migration charges are part of the objective).
pub fn check(
    fleet: &Fleet,
    workloads: &WorkloadSet,
    policy: &Policy,
    previous: Option<&PreviousPlan>,
    model: &Model,
    plan: &Plan,
) -> Checked {
    let mut v = Vec::new();
    let keys = by_key(model);
    let mut choice = vec![None; model.items.len()];
    for p in &plan.placements {
        let Some(&i) = keys.get(p.unit.as_str()) else {
            v.push(format!("{}: no such unit", p.unit));
            continue;
        };
        if choice[i].is_some() {
            v.push(format!("{}: placed twice", p.unit));
            continue;
        }
        let item = &model.items[i];
        let found = item
            .options
            .iter()
            .position(|o| o.pool == p.pool && o.category == p.category);
        let Some(k) = found else {
            let why = match option_for(
                fleet, workloads, policy, previous, &p.unit, &p.pool, p.category,
            ) {
                None => "no such pool".to_string(),
                Some(Err(b)) => format!("breaks {b}"),
                Some(Ok(_)) => "an option the rules allow but the model lacks".to_string(),
            };
            v.push(format!(
                "{} on {} ({:?}): {why}",
                p.unit, p.pool, p.category
            ));
            continue;
        };
        choice[i] = Some(k);
        let o = &item.options[k];
        let committed = match o.category {
            Category::Committed => o.nodes,
            Category::CommittedPlusOnDemand => o.uses[0].1,
            _ => 0,
        };
        if (p.nodes, p.chips, p.replicas) != (o.nodes, o.chips, o.replicas) {
            v.push(format!(
                "{}: {} nodes, {} chips, {} replicas where the rules give {}, {}, {}",
                p.unit, p.nodes, p.chips, p.replicas, o.nodes, o.chips, o.replicas
            ));
        }
        if p.category != Category::CommittedPlusOnDemand && p.committed_nodes != committed {
            v.push(format!(
                "{}: {} committed nodes where the rules give {committed}",
                p.unit, p.committed_nodes
            ));
        }
        if differs(p.cost_per_hour, o.dollars, 1e-9) {
            v.push(format!(
                "{}: costs ${}/h where the rules give ${}/h",
                p.unit, p.cost_per_hour, o.dollars
            ));
        }
        if differs(p.objective_per_hour, o.cost, 1e-9) {
            v.push(format!(
                "{}: objective ${}/h where the rules give ${}/h",
                p.unit, p.objective_per_hour, o.cost
            ));
        }
    }
    let (nodes, watts) = usage(model, &choice);
    for (s, used) in nodes.iter().enumerate() {
        let slot = &model.slots[s];
        if *used > slot.nodes as u64 {
            v.push(format!(
                "{} ({:?}): {used} nodes used of {}",
                slot.pool, slot.category, slot.nodes
            ));
        }
    }
    for (r, w) in watts.iter().enumerate() {
        if *w > model.region_cap_watts[r] + 1e-3 {
            v.push(format!(
                "{}: {:.3} MW drawn over a cap of {:.3} MW",
                model.regions[r],
                w / 1e6,
                model.region_cap_watts[r] / 1e6
            ));
        }
    }
    for (s, (placed, provs, regs)) in model.services.iter().zip(spans(model, &choice)) {
        if placed > 0 && (provs < s.min_providers as usize || regs < s.min_regions as usize) {
            v.push(format!(
                "{}: placed on {provs} providers and {regs} regions, needs {} and {}",
                s.name, s.min_providers, s.min_regions
            ));
        }
    }
    let listed: BTreeSet<&str> = plan.unplaced.iter().map(|u| u.unit.as_str()).collect();
    for (it, c) in model.items.iter().zip(&choice) {
        match (c, listed.contains(it.key.as_str())) {
            (None, false) => v.push(format!("{}: neither placed nor listed unplaced", it.key)),
            (Some(_), true) => v.push(format!("{}: placed and listed unplaced", it.key)),
            _ => {}
        }
    }
    if listed.len() != plan.unplaced.len() {
        v.push("a unit is listed unplaced twice".into());
    }
    let objective = model.objective(&choice);
    if differs(plan.objective_per_hour, objective, 1e-9) {
        v.push(format!(
            "objective ${}/h where the rules give ${objective}/h",
            plan.objective_per_hour
        ));
    }
    Checked {
        violations: v,
        objective,
        choice,
    }
}
