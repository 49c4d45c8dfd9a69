//! Diagnostic: the exact LP relaxation of a generated workload set, solved at class level with
//! microlp (slow: minutes at 10,000 workloads), against the planner's plan and its Lagrangian
//! bound. Redundancy rules are left out, so the LP value is a valid but weaker bound. It shows
//! where the planner's gap lies: which classes of units the plan pays more for than the LP.
//!
//! `cargo run --release -p stratus-plan --example lp_bound -- 10000`

use good_lp::{
    constraint, microlp, variable, Expression, ProblemVariables, Solution, SolverModel, Variable,
};
use std::collections::HashMap;
use std::time::Instant;
use stratus_catalog::scenario;
use stratus_plan::{problem, Policy};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("workload count"))
        .unwrap_or(10_000);
    let fleet = stratus_catalog::builtin();
    let w = scenario::generated(fleet, n, 1).expect("generated workloads");
    let policy = Policy::default();
    let p = problem::compile(fleet, &w, &policy, None);

    // Classes: units with identical candidates and penalty.
    let mut map: HashMap<Vec<u64>, usize> = HashMap::new();
    let mut rep = Vec::new();
    let mut mult: Vec<f64> = Vec::new();
    let mut class_of: HashMap<usize, usize> = HashMap::new();
    for (ui, u) in p.units.iter().enumerate() {
        if u.cands.is_empty() {
            continue;
        }
        let mut key = vec![u.penalty.to_bits(), u.tail_floor.to_bits()];
        for c in &u.cands {
            key.push(c.offer as u64 | ((c.nodes as u64) << 32));
            key.push(c.offer2 as u64 | ((c.nodes2 as u64) << 32));
            key.push(c.cost.to_bits());
            key.push(c.watts.to_bits());
        }
        let k = *map.entry(key).or_insert_with(|| {
            rep.push(ui);
            mult.push(0.0);
            rep.len() - 1
        });
        mult[k] += 1.0;
        class_of.insert(ui, k);
    }
    let ncand: usize = rep.iter().map(|&u| p.units[u].cands.len()).sum();
    println!(
        "{} units, {} classes, {} class candidates, {} offers",
        p.units.len(),
        rep.len(),
        ncand,
        p.offers.len()
    );

    let t = Instant::now();
    let mut vars = ProblemVariables::new();
    let mut obj = Expression::from(0.0);
    let mut cap = vec![Expression::from(0.0); p.offers.len()];
    let mut power = vec![Expression::from(0.0); p.region_cap_watts.len()];
    let mut rows = Vec::new();
    let mut xs: Vec<(Vec<Variable>, Variable, f64)> = Vec::new();
    for (k, &u) in rep.iter().enumerate() {
        let unit = &p.units[u];
        let mut sum = Expression::from(0.0);
        let mut xv = Vec::new();
        for c in &unit.cands {
            let x = vars.add(variable().min(0.0));
            obj += c.cost * x;
            sum += x;
            xv.push(x);
            cap[c.offer as usize] += (c.nodes as f64) * x;
            if c.nodes2 > 0 {
                cap[c.offer2 as usize] += (c.nodes2 as f64) * x;
            }
            power[c.region as usize] += c.mw * x;
        }
        // The tail cut from the candidate list is represented by its floor, as in the dual.
        let floor = unit.penalty.min(unit.tail_floor);
        let z = vars.add(variable().min(0.0));
        obj += floor * z;
        sum += z;
        rows.push(constraint!(sum == mult[k]));
        xs.push((xv, z, floor));
    }
    let mut model = vars.minimise(obj.clone()).using(microlp);
    for r in rows {
        model = model.with(r);
    }
    for (o, e) in cap.into_iter().enumerate() {
        model = model.with(constraint!(e <= p.offers[o].capacity_nodes as f64));
    }
    for (r, e) in power.into_iter().enumerate() {
        model = model.with(constraint!(e <= p.region_cap_watts[r] / 1e6));
    }
    let sol = model.solve().expect("LP solves");
    let lp = sol.eval(&obj);
    println!(
        "LP relaxation (no redundancy): {lp:.0} $/h in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let s = stratus_plan::solve_problem(&p, &policy);
    println!(
        "planner: objective {:.0} $/h, Lagrangian bound {:.0} $/h, gap to LP {:.2} %",
        s.objective,
        s.lower_bound,
        (s.objective / lp - 1.0) * 100.0
    );
    // Per class: what the plan pays minus what the LP pays.
    let mut diff = vec![0.0f64; rep.len()];
    for (k, &u) in rep.iter().enumerate() {
        let (xv, z, floor) = &xs[k];
        for (ci, c) in p.units[u].cands.iter().enumerate() {
            diff[k] -= c.cost * sol.value(xv[ci]);
        }
        diff[k] -= sol.value(*z) * floor;
    }
    for (u, c) in s.choice.iter().enumerate() {
        if let Some(&k) = class_of.get(&u) {
            diff[k] += match c {
                Some(c) => p.units[u].cands[*c].cost,
                None => p.units[u].penalty,
            };
        }
    }
    let mut idx: Vec<usize> = (0..rep.len()).collect();
    idx.sort_by(|a, b| diff[*b].total_cmp(&diff[*a]));
    println!("classes the plan pays most over the LP for ($/h, example unit, units, chips each):");
    for &k in idx.iter().take(15) {
        let u = &p.units[rep[k]];
        println!(
            "  {:>9.0}  {:<14} {:>4} × {:>5}",
            diff[k], u.key, mult[k], u.cands[0].chips
        );
    }
}
