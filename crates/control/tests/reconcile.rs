//! The reconcile loop against the simulated provider on the built-in fleet.

use stratus_control::{ActionKind, Controller, ControllerConfig, SimProvider, Strategy, Time};
use stratus_model::parse::{from_str, Format};
use stratus_model::WorkloadSet;

fn workloads() -> WorkloadSet {
    from_str(
        "w.yaml",
        r#"
training:
  - name: ft
    chips: 64
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 6400
inference:
  - name: chat
    model: m
    replica: {H100: {chips: 8, rps: 10}}
    images: {cuda: "img"}
    demand: [{from: "aws:us-east-1", rps: 30}]
    latency_slo_ms: 150
"#,
        Format::Yaml,
    )
    .unwrap()
}

fn setup(strategy: Strategy) -> (Controller, SimProvider, WorkloadSet) {
    let fleet = stratus_catalog::builtin().clone();
    let driver = SimProvider::new(&fleet, 120.0, 30.0);
    let c = Controller::new(fleet, strategy, ControllerConfig::default());
    (c, driver, workloads())
}

#[test]
fn a_steady_state_issues_no_actions() {
    let (mut c, mut d, w) = setup(Strategy::Stratus);
    let first = c.tick(Time(0.0), &w, &mut d);
    assert!(
        first.iter().all(|a| a.kind == ActionKind::Launch),
        "{first:?}"
    );
    assert!(first.len() >= 2);
    d.advance(Time(200.0));
    // Later ticks, including a global re-plan, change nothing.
    for t in [900.0, 1800.0, 3600.0, 7200.0] {
        let acts = c.tick(Time(t), &w, &mut d);
        assert!(acts.is_empty(), "at {t}: {acts:?}");
    }
    assert_eq!(c.stats.launches as usize, first.len());
}

#[test]
fn an_outage_moves_the_work_and_the_region_is_avoided() {
    for strategy in [
        Strategy::Stratus,
        Strategy::CheapestFirst,
        Strategy::RoundRobin,
    ] {
        let (mut c, mut d, w) = setup(strategy.clone());
        c.tick(Time(0.0), &w, &mut d);
        d.advance(Time(200.0));
        let job = d.instances().find(|i| i.request.workload == "ft").unwrap();
        let region = job.request.region.clone();
        let lost = d.set_region_down(Time(300.0), &region, true);
        assert!(!lost.is_empty());
        let acts = c.tick(Time(360.0), &w, &mut d);
        assert!(
            acts.iter().any(|a| a.kind == ActionKind::Lost),
            "{strategy:?}"
        );
        let job = d
            .instances()
            .find(|i| {
                i.request.workload == "ft"
                    && !matches!(i.state, stratus_control::InstanceState::Lost(_))
            })
            .unwrap_or_else(|| panic!("{strategy:?}: ft relaunched: {acts:#?}"));
        assert_ne!(job.request.region, region, "{strategy:?}");
    }
}

#[test]
fn finished_work_is_stopped() {
    let (mut c, mut d, mut w) = setup(Strategy::Stratus);
    c.tick(Time(0.0), &w, &mut d);
    w.training.clear();
    let acts = c.tick(Time(900.0), &w, &mut d);
    assert!(
        acts.iter()
            .any(|a| a.kind == ActionKind::Stop && a.unit == "ft"),
        "{acts:?}"
    );
}

#[test]
fn every_strategy_places_inference() {
    for strategy in [
        Strategy::Stratus,
        Strategy::CheapestFirst,
        Strategy::RoundRobin,
        Strategy::SingleProvider("aws".into()),
    ] {
        let (mut c, mut d, w) = setup(strategy.clone());
        let acts = c.tick(Time(0.0), &w, &mut d);
        assert!(
            acts.iter()
                .any(|a| a.kind == ActionKind::Launch && a.unit.starts_with("chat@")),
            "{strategy:?}: {acts:#?}"
        );
    }
}

#[test]
fn a_service_is_resized_in_place_and_the_old_replicas_serve_until_the_new_run() {
    let (mut c, mut d, mut w) = setup(Strategy::CheapestFirst);
    c.tick(Time(0.0), &w, &mut d);
    d.advance(Time(200.0));
    let before: Vec<_> = d
        .instances()
        .filter(|i| i.request.workload == "chat")
        .map(|i| {
            (
                i.request.token.clone(),
                i.request.pool.clone(),
                i.request.replicas,
            )
        })
        .collect();
    assert_eq!(before.len(), 1);
    // Demand triples: the service is re-sized in the same pool.
    w.inference[0].demand[0].rps.0 *= 3.0;
    let acts = c.tick(Time(900.0), &w, &mut d);
    assert!(
        acts.iter().any(|a| a.kind == ActionKind::Scale),
        "{acts:#?}"
    );
    assert_eq!(c.stats.scales, 1);
    let live: Vec<_> = d
        .instances()
        .filter(|i| i.request.workload == "chat")
        .map(|i| {
            (
                i.request.token.clone(),
                i.request.pool.clone(),
                i.request.replicas,
                i.state,
            )
        })
        .collect();
    assert_eq!(live.len(), 2, "old and new side by side: {live:?}");
    assert_eq!(
        live[0].3,
        stratus_control::InstanceState::Running,
        "old keeps serving"
    );
    let new = live.iter().find(|x| x.0 != before[0].0).unwrap();
    assert_eq!(new.1, before[0].1, "same pool");
    assert!(new.2 > before[0].2, "more replicas: {live:?}");
    // Once the new instance runs, the old one is stopped.
    d.advance(Time(1200.0));
    c.tick(Time(1800.0), &w, &mut d);
    let old = d.instance(&before[0].0).unwrap();
    assert!(
        matches!(old.state, stratus_control::InstanceState::Stopping { .. }),
        "{old:?}"
    );
}
