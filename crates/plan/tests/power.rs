//! Regional power caps count chips × TDP × `power_cap_utilisation` + host, times PUE.

use stratus_model::parse::{from_str, validate_workloads, Format};
use stratus_model::{Fleet, WorkloadSet};
use stratus_plan::{plan, Constraint, Policy};

const FLEET: &str = r#"
providers:
  - name: acme
    regions:
      - name: r1
        lat: 0
        lon: 0
        carbon_g_per_kwh: 400
        pue: 1.25
        power_cap_mw: 0.05
        pools:
          - id: acme:r1:h100
            instance_type: h100x8
            accelerator: H100
            chips_per_node: 8
            nodes: 20
            on_demand_per_node_hour: 10
            domain_chips: 160
            host_watts_per_node: 1000
"#;

const WORK: &str = r#"
training:
  - name: gang
    chips: 80
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 800
    checkpoint_minutes: 30
"#;

#[test]
fn the_cap_counts_chips_at_the_policys_share_of_tdp_plus_host() {
    let fleet: Fleet = from_str("f.yaml", FLEET, Format::Yaml).unwrap();
    let w: WorkloadSet = from_str("w.yaml", WORK, Format::Yaml).unwrap();
    validate_workloads(&w, &fleet, "w.yaml", WORK).unwrap();
    // At TDP a node draws (8 × 700 + 1,000) × 1.25 = 8,250 W: 6 nodes fit in 50 kW, the
    // 10-node gang does not.
    let p = plan(&fleet, &w, &Policy::default(), None);
    assert!(p.placements.is_empty());
    assert_eq!(
        p.unplaced[0].constraint,
        Constraint::PowerCap,
        "{:?}",
        p.unplaced
    );
    // Capped at half of TDP: (8 × 350 + 1,000) × 1.25 = 4,750 W; 10 nodes draw 47.5 kW.
    let half = Policy {
        power_cap_utilisation: 0.5,
        ..Policy::default()
    };
    let p = plan(&fleet, &w, &half, None);
    assert_eq!(p.placements.len(), 1, "{:?}", p.unplaced);
    assert!(
        (p.placements[0].power_mw - 0.0475).abs() < 1e-9,
        "{}",
        p.placements[0].power_mw
    );
    // Energy at the default 80 % utilisation: (8 × 560 + 1,000) × 1.25 W × 10 nodes × 24 h.
    let mwh = (8.0 * 560.0 + 1000.0) * 1.25 * 10.0 * 24.0 / 1e6;
    assert!(
        (p.summary.energy_mwh_per_day - mwh).abs() < 1e-9,
        "{}",
        p.summary.energy_mwh_per_day
    );
}
