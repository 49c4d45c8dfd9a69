//! A plan against the reference's, unit by unit: what a ratio of objectives cannot say (which
//! trades the planner misses).

use crate::{Model, Opt};
use stratus_plan::Plan;

/// Where a plan and the reference's (the optimum, or HiGHS's best when stopped) differ, unit
/// by unit, largest difference in objective first: which units each leaves out and where each
/// places the rest, and for each service the plan leaves out and the reference places, its
/// options and what the plan put on them. `replay` heads the text (the set it is about).
pub fn differences(m: &Model, optimum: &[Option<usize>], own: &Plan, replay: &str) -> String {
    let placed: std::collections::HashMap<&str, &stratus_plan::Placement> = own
        .placements
        .iter()
        .map(|x| (x.unit.as_str(), x))
        .collect();
    let mut rows: Vec<(f64, String)> = Vec::new();
    for (item, o) in m.items.iter().zip(optimum) {
        if item.excluded {
            continue;
        }
        let (ours, ours_at) = match placed.get(item.key.as_str()) {
            Some(x) => (x.objective_per_hour, format!("{} {:?}", x.pool, x.category)),
            None => (item.penalty, "left out".to_string()),
        };
        let (best, best_at) = match o {
            Some(o) => {
                let opt = &item.options[*o];
                (opt.cost, format!("{} {:?}", opt.pool, opt.category))
            }
            None => (item.penalty, "left out".to_string()),
        };
        if ours_at != best_at {
            let chips = item.options.first().map_or(0, |o| o.chips);
            rows.push((
                ours - best,
                format!(
                    "  {:+12.2}  {} ({chips} chips{}): stratus {ours_at} {ours:.2}, optimum {best_at} {best:.2}",
                    ours - best,
                    item.key,
                    item.service.map_or(String::new(), |s| format!(", service {s}"))
                ),
            ));
        }
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = rows.iter().map(|r| r.0).sum();
    let mut out = format!(
        "{replay}: {} units differ, {total:+.2} $/h in all\n",
        rows.len()
    );
    for (_, line) in rows {
        out.push_str(&line);
        out.push('\n');
    }
    // Services stratus leaves out and the optimum places: their rules, and each unit's
    // cheapest options with what stratus put on those slots.
    let mut on_slot: Vec<Vec<String>> = vec![Vec::new(); m.slots.len()];
    for item in &m.items {
        if let Some(x) = placed.get(item.key.as_str()) {
            if let Some(o) = item
                .options
                .iter()
                .find(|o| o.pool == x.pool && o.category == x.category)
            {
                for &(slot, n) in &o.uses {
                    on_slot[slot].push(format!("{}x{n}", item.key));
                }
            }
        }
    }
    for svc in &m.services {
        let out_here = svc
            .items
            .iter()
            .all(|&i| !placed.contains_key(m.items[i].key.as_str()));
        let in_optimum = svc.items.iter().any(|&i| optimum[i].is_some());
        if !(out_here && in_optimum) {
            continue;
        }
        out.push_str(&format!(
            "  service {} left out: {} providers, {} regions\n",
            svc.name, svc.min_providers, svc.min_regions
        ));
        for &i in &svc.items {
            let item = &m.items[i];
            if let Some(u) = own.unplaced.iter().find(|u| u.unit == item.key) {
                out.push_str(&format!("    {}: stratus says {}\n", item.key, u.reason));
            }
            let mut opts: Vec<&Opt> = item.options.iter().collect();
            opts.sort_by(|a, b| a.cost.total_cmp(&b.cost));
            for o in opts.iter().take(8) {
                let slots: Vec<String> = o
                    .uses
                    .iter()
                    .map(|&(s, n)| {
                        format!("{n} of {} [{}]", m.slots[s].nodes, on_slot[s].join(" "))
                    })
                    .collect();
                out.push_str(&format!(
                    "    {} {} {:?} {:.2} (provider {}, {}): {}\n",
                    item.key,
                    o.pool,
                    o.category,
                    o.cost,
                    o.provider,
                    m.regions[o.region],
                    slots.join("; ")
                ));
            }
        }
    }
    out
}
