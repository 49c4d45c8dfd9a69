//! Tables and summaries for people. Nothing here decides anything.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use std::time::Duration;
use stratus_model::{Fleet, WorkloadSet};
use stratus_plan::{Plan, UnitKind};

/// A table in the CLI's one style, with `header`.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.iter().map(Cell::new));
    t
}

/// A right-aligned cell, for numbers.
pub(crate) fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

/// Thousands separators for counts.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn money(x: f64) -> String {
    format!("${}", thousands(x.round() as u64))
}

fn by_provider(plan: &Plan) -> Table {
    let mut t = table(&["provider", "$/h", "chips", "power MW"]);
    for (p, v) in &plan.summary.by_provider {
        t.add_row(vec![
            Cell::new(p),
            right(money(v.cost_per_hour)),
            right(thousands(v.chips)),
            right(format!("{:.1}", v.power_mw)),
        ]);
    }
    t
}

fn totals(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    out += &format!(
        "  cost            {}/h marginal ({}/day); objective {}/h, lower bound {}/h, gap {:.3}%\n",
        money(plan.cost_per_hour),
        money(plan.cost_per_hour * 24.0),
        money(plan.objective_per_hour),
        money(plan.lower_bound_per_hour),
        plan.gap * 100.0
    );
    if !plan.lower_bound_by.is_empty() {
        out += &format!("  bound by        {}\n", plan.lower_bound_by);
    }
    out += &format!(
        "  chips           {} in use; power {:.1} MW at full load; {:.0} MWh/day; {:.1} tCO2e/day\n",
        thousands(s.chips),
        s.power_mw,
        s.energy_mwh_per_day,
        s.tco2e_per_day
    );
    out += &format!(
        "  inference       {:.1}% of demand placed within its latency SLO\n",
        s.slo_coverage * 100.0
    );
    out += &format!(
        "  commitments     {} of {} committed nodes used\n",
        s.committed_nodes_used, s.committed_nodes_available
    );
    out += &format!(
        "  placed          {} of {} units ({} unplaced)\n",
        s.units_placed,
        s.units_total,
        plan.unplaced.len()
    );
    out
}

/// `stratus demo`: a readable summary of the plan and how it compares with the baseline.
pub fn demo(fleet: &Fleet, w: &WorkloadSet, plan: &Plan, base: &Plan, took: Duration) {
    let chips: u64 = fleet
        .pools()
        .map(|(_, _, p)| p.nodes as u64 * p.chips_per_node as u64)
        .sum();
    println!("stratus demo: the built-in fleet, from public catalog, carbon and latency data");
    println!(
        "  fleet           {} providers, {} regions, {} pools, {} chips obtainable on demand",
        fleet.providers.len(),
        fleet.regions().count(),
        thousands(fleet.pool_count() as u64),
        thousands(chips)
    );
    println!(
        "  workloads       {} training runs, {} inference services, {} batch jobs (examples/demo-workloads.yaml)",
        w.training.len(),
        w.inference.len(),
        w.batch.len()
    );
    println!(
        "  planned in      {} ms by {}",
        took.as_millis(),
        plan.method
    );
    println!();
    println!("{}", by_provider(plan));
    print!("{}", totals(plan));
    println!(
        "  vs baseline     cheapest-first (one workload at a time, arrival order): {}/h marginal, objective {}/h, {} unplaced; stratus/baseline objective = {:.3}",
        money(base.cost_per_hour),
        money(base.objective_per_hour),
        base.unplaced.len(),
        plan.objective_per_hour / base.objective_per_hour
    );
    println!();
    println!("Largest placements:");
    let mut big: Vec<_> = plan.placements.iter().collect();
    big.sort_by(|a, b| b.chips.cmp(&a.chips).then(a.unit.cmp(&b.unit)));
    for x in big.iter().take(8) {
        println!(
            "  {:<24} {:>5} x {:<10} {}",
            x.unit, x.chips, x.accelerator, x.explanation
        );
    }
    let mut inf: Vec<_> = plan
        .placements
        .iter()
        .filter(|x| x.kind == UnitKind::Inference)
        .collect();
    inf.sort_by(|a, b| a.unit.cmp(&b.unit));
    println!();
    println!("Inference (first 8 of {}):", inf.len());
    for x in inf.iter().take(8) {
        println!("  {:<36} {}", x.unit, x.explanation);
    }
    if !plan.unplaced.is_empty() {
        println!();
        println!("Unplaced:");
        for u in &plan.unplaced {
            println!("  {:<36} [{}] {}", u.unit, u.constraint, u.reason);
        }
    }
    println!();
    println!("Full plan: stratus plan --workloads examples/demo-workloads.yaml --format json");
}

/// `stratus plan --format table`.
pub fn plan(plan: &Plan) {
    let mut t = table(&["unit", "pool", "buy", "chips", "$/h", "why"]);
    for x in &plan.placements {
        t.add_row(vec![
            Cell::new(&x.unit),
            Cell::new(&x.pool),
            Cell::new(format!("{:?}", x.category).to_lowercase()),
            right(thousands(x.chips as u64)),
            right(format!("{:.2}", x.cost_per_hour)),
            Cell::new(x.explanation.split("; ").nth(1).unwrap_or("")),
        ]);
    }
    println!("{t}");
    if !plan.unplaced.is_empty() {
        let mut u = table(&["unplaced", "constraint", "reason"]);
        for x in &plan.unplaced {
            u.add_row(vec![
                Cell::new(&x.unit),
                Cell::new(x.constraint.to_string()),
                Cell::new(&x.reason),
            ]);
        }
        println!("{u}");
    }
    println!("{}", by_provider(plan));
    println!("policy {} ({})", plan.policy, plan.method);
    print!("{}", totals(plan));
}

/// `stratus fleet show --format table`.
pub fn fleet(fleet: &Fleet) {
    let mut t = table(&[
        "pool",
        "accelerator",
        "chips/node",
        "nodes",
        "$/node-h",
        "spot $/node-h",
        "committed",
        "gCO2e/kWh",
        "PUE",
        "cap MW",
    ]);
    for (_, r, p) in fleet.pools() {
        t.add_row(vec![
            Cell::new(&p.id),
            Cell::new(p.accelerator.name()),
            right(p.chips_per_node.to_string()),
            right(p.nodes.to_string()),
            right(format!("{:.2}", p.on_demand_per_node_hour.0)),
            right(
                p.spot_per_node_hour
                    .map(|s| format!("{:.2}", s.0))
                    .unwrap_or_else(|| "-".into()),
            ),
            right(
                p.committed
                    .as_ref()
                    .map(|c| c.nodes.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            right(format!("{:.0}", r.carbon_g_per_kwh.0)),
            right(format!("{:.2}", r.pue)),
            right(format!("{:.1}", r.power_cap_mw.0)),
        ]);
    }
    println!("{t}");
    println!(
        "{} pools in {} regions of {} providers",
        fleet.pool_count(),
        fleet.regions().count(),
        fleet.providers.len()
    );
}
