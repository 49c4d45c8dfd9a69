//! The checker catches what it is for: a plan that breaks a rule, misstates a cost, or loses a
//! unit. Each test breaks a good plan one way and expects the checker to name it.

use stratus_catalog::contended::{contended, Contention};
use stratus_model::*;
use stratus_plan::{plan, Category, Placement, Plan, Policy, UnitKind};
use stratus_reference::{check, Model};

fn set() -> (Fleet, WorkloadSet) {
    let c = Contention {
        workloads: 80,
        pools: Some(30),
        ratio: Some(0.6),
        services: true,
    };
    let s = contended(stratus_catalog::builtin(), &c, 11).unwrap();
    (s.fleet, s.workloads)
}

fn violations(f: &Fleet, w: &WorkloadSet, p: &Plan) -> Vec<String> {
    let policy = Policy::default();
    let m = Model::new(f, w, &policy, None);
    check(f, w, &policy, None, &m, p).violations
}

#[test]
fn a_good_plan_passes() {
    let (f, w) = set();
    let p = plan(&f, &w, &Policy::default(), None);
    assert!(!p.placements.is_empty() && !p.unplaced.is_empty());
    assert_eq!(violations(&f, &w, &p), Vec::<String>::new());
}

#[test]
fn a_misstated_objective_is_caught() {
    let (f, w) = set();
    let mut p = plan(&f, &w, &Policy::default(), None);
    p.objective_per_hour += 1.0;
    let v = violations(&f, &w, &p);
    assert!(v.iter().any(|x| x.starts_with("objective")), "{v:?}");
    p.objective_per_hour -= 1.0;
    p.placements[0].objective_per_hour *= 1.001;
    let v = violations(&f, &w, &p);
    assert!(v.iter().any(|x| x.contains("objective $")), "{v:?}");
}

#[test]
fn a_lost_unit_is_caught() {
    let (f, w) = set();
    let mut p = plan(&f, &w, &Policy::default(), None);
    let gone = p.placements.pop().unwrap();
    let v = violations(&f, &w, &p);
    assert!(
        v.iter()
            .any(|x| x.contains(&gone.unit) && x.contains("neither placed nor listed")),
        "{v:?}"
    );
}

#[test]
fn overbooked_pools_are_caught() {
    let (mut f, w) = set();
    let p = plan(&f, &w, &Policy::default(), None);
    for prov in &mut f.providers {
        for r in &mut prov.regions {
            for pool in &mut r.pools {
                pool.nodes = pool.nodes.div_ceil(3);
                pool.committed = None;
                pool.spot_nodes = 0;
            }
        }
    }
    let v = violations(&f, &w, &p);
    assert!(
        v.iter()
            .any(|x| x.contains("nodes used of") || x.contains("slot too small")),
        "{v:?}"
    );
}

#[test]
fn spot_for_a_job_that_refuses_it_is_caught() {
    let (f, w) = set();
    let mut p = plan(&f, &w, &Policy::default(), None);
    let t = w.training.iter().find(|t| !t.spot).unwrap();
    let pool = f
        .pools()
        .find(|(_, _, pl)| {
            pl.spot_per_node_hour.is_some() && t.accelerators.contains(&pl.accelerator)
        })
        .map(|(_, _, pl)| pl.id.clone());
    let Some(pool) = pool else { return };
    p.unplaced.retain(|u| u.unit != t.name);
    p.placements.retain(|x| x.unit != t.name);
    let mut x = p.placements[0].clone();
    x.unit = t.name.clone();
    x.workload = t.name.clone();
    x.kind = UnitKind::Training;
    x.pool = pool;
    x.category = Category::Spot;
    p.placements.push(x);
    let v = violations(&f, &w, &p);
    assert!(v.iter().any(|x| x.contains("spot not allowed")), "{v:?}");
}

/// A batch job whose ceiling its pool's committed nodes meet and its on-demand nodes do not.
fn ceiling_case() -> (Fleet, WorkloadSet) {
    let fleet: Fleet = serde_json::from_value(serde_json::json!({
        "name": "one pool",
        "providers": [{"name": "aws", "regions": [{
            "name": "us-east-1", "lat": 38.9, "lon": -77.4, "carbon_g_per_kwh": 400.0,
            "pue": 1.2, "power_cap_mw": 10.0, "jurisdictions": ["US"],
            "pools": [{
                "id": "aws:us-east-1:p5", "instance_type": "p5", "accelerator": "H100",
                "chips_per_node": 8, "nodes": 4, "on_demand_per_node_hour": 100.0,
                "committed": {"name": "c", "nodes": 1, "rate_per_node_hour": 60.0},
                "domain_chips": 32, "host_watts_per_node": 4000.0
            }]
        }]}]
    }))
    .unwrap();
    let w: WorkloadSet = serde_json::from_value(serde_json::json!({
        "batch": [{
            "name": "sweep", "chips": 16, "accelerators": ["H100"],
            "images": {"cuda": "x"}, "work_chip_hours": 100.0,
            "max_usd_per_chip_hour": 1.0, "spot": false
        }]
    }))
    .unwrap();
    (fleet, w)
}

#[test]
fn a_blend_above_a_price_ceiling_is_caught_and_never_planned() {
    let (f, w) = ceiling_case();
    let p = plan(&f, &w, &Policy::default(), None);
    // Two nodes needed, one committed at $0: the blend's on-demand node costs $12.50/chip-h.
    assert!(p.placements.is_empty(), "{:?}", p.placements);
    assert_eq!(p.unplaced[0].constraint, stratus_plan::Constraint::MaxPrice);
    assert_eq!(violations(&f, &w, &p), Vec::<String>::new());
    let mut bad = p.clone();
    bad.unplaced.clear();
    bad.placements.push(Placement {
        workload: "sweep".into(),
        unit: "sweep".into(),
        kind: UnitKind::Batch,
        provider: "aws".into(),
        region: "aws:us-east-1".into(),
        pool: "aws:us-east-1:p5".into(),
        accelerator: "H100".into(),
        category: Category::CommittedPlusOnDemand,
        chips: 16,
        nodes: 2,
        committed_nodes: 1,
        replicas: 1,
        cost_per_hour: 100.0,
        objective_per_hour: 100.0,
        terms: Default::default(),
        rtt_ms: None,
        power_mw: 0.0,
        explanation: String::new(),
    });
    let v = violations(&f, &w, &bad);
    assert!(v.iter().any(|x| x.contains("price ceiling")), "{v:?}");
}
