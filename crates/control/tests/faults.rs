//! The controller under driver faults, one fault at a time (the deterministic simulation tests
//! in `stratus-server` mix them). Each test names the failure it pins; see issue 15.

use stratus_control::fault::{FaultRates, FaultyDriver, Rng};
use stratus_control::{
    ActionKind, Controller, ControllerConfig, Driver, InstanceState, LaunchRequest, SimProvider,
    Strategy, Time,
};
use stratus_model::parse::{from_str, Format};
use stratus_model::WorkloadSet;
use stratus_plan::Category;

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

fn config() -> ControllerConfig {
    ControllerConfig {
        tick_s: 60.0,
        retry_s: 60.0,
        retry_max_s: 240.0,
        orphan_grace_s: 300.0,
        ..ControllerConfig::default()
    }
}

fn controller(prefix: &str) -> Controller {
    let mut c = Controller::new(
        stratus_catalog::builtin().clone(),
        Strategy::Stratus,
        config(),
    );
    c.token_prefix = prefix.into();
    c
}

fn world() -> FaultyDriver {
    let fleet = stratus_catalog::builtin();
    let mut sim = SimProvider::new(fleet, 30.0, 30.0);
    sim.retention_s = Some(86_400.0);
    FaultyDriver::new(sim, FaultRates::default(), Rng::new(1, "test"))
}

/// Live instances per unit.
fn live(d: &FaultyDriver) -> Vec<(String, String)> {
    d.world
        .instances()
        .filter(|i| {
            matches!(
                i.state,
                InstanceState::Running | InstanceState::Pending { .. }
            )
        })
        .map(|i| (i.request.unit.clone(), i.request.token.clone()))
        .collect()
}

fn tick(
    c: &mut Controller,
    d: &mut FaultyDriver,
    t: f64,
    w: &WorkloadSet,
) -> Vec<stratus_control::Action> {
    d.world.advance(Time(t));
    c.tick(Time(t), w, d)
}

#[test]
fn a_failed_observe_after_a_restart_relaunches_nothing() {
    let w = workloads();
    let mut d = world();
    let mut c = controller("s1-");
    tick(&mut c, &mut d, 0.0, &w);
    tick(&mut c, &mut d, 60.0, &w);
    let before = live(&d);
    assert!(before.len() >= 2, "{before:?}");
    // The controller restarts without its memory while the provider does not answer.
    let mut c = controller("s1-");
    d.rates.observe_all = 1.0;
    for t in [120.0, 180.0, 240.0] {
        let acts = tick(&mut c, &mut d, t, &w);
        assert!(
            acts.iter().all(|a| a.kind != ActionKind::Launch),
            "launched while blind: {acts:#?}"
        );
        assert!(!c.adoption_pending().is_empty());
    }
    // It answers again: what runs is adopted, nothing is launched twice.
    d.rates.observe_all = 0.0;
    let acts = tick(&mut c, &mut d, 300.0, &w);
    assert!(
        acts.iter().all(|a| a.kind != ActionKind::Launch),
        "{acts:#?}"
    );
    assert_eq!(
        acts.iter().filter(|a| a.kind == ActionKind::Adopt).count(),
        before.len()
    );
    assert_eq!(live(&d), before);
    assert!(c.adoption_pending().is_empty());
}

#[test]
fn one_failed_observe_in_steady_state_marks_nothing_lost() {
    let w = workloads();
    let mut d = world();
    let mut c = controller("s1-");
    tick(&mut c, &mut d, 0.0, &w);
    tick(&mut c, &mut d, 60.0, &w);
    let before = live(&d);
    d.rates.observe_region = 1.0;
    let acts = tick(&mut c, &mut d, 120.0, &w);
    assert!(
        acts.iter()
            .all(|a| a.kind != ActionKind::Lost && a.kind != ActionKind::Launch),
        "{acts:#?}"
    );
    d.rates.observe_region = 0.0;
    let acts = tick(&mut c, &mut d, 180.0, &w);
    assert!(acts.is_empty(), "{acts:#?}");
    assert_eq!(live(&d), before);
}

#[test]
fn a_launch_that_timed_out_after_submission_is_retried_with_its_token() {
    let w = workloads();
    let mut d = world();
    let mut c = controller("s1-");
    d.rates.launch_timeout = 1.0;
    let acts = tick(&mut c, &mut d, 0.0, &w);
    assert!(
        acts.iter().all(|a| a.kind == ActionKind::LaunchFailed),
        "{acts:#?}"
    );
    d.rates.launch_timeout = 0.0;
    for t in [60.0, 120.0, 180.0, 240.0] {
        tick(&mut c, &mut d, t, &w);
    }
    // One instance per unit, launched with the token of the first attempt.
    let live = live(&d);
    let mut units: Vec<&str> = live.iter().map(|(u, _)| u.as_str()).collect();
    units.dedup();
    assert_eq!(units.len(), live.len(), "{live:?}");
    let first: Vec<&String> = acts.iter().map(|a| &a.token).collect();
    for (_, token) in &live {
        assert!(
            first.contains(&token),
            "{token} is not a first token: {first:?}"
        );
    }
    assert!(d.log.reused.is_empty(), "{:?}", d.log.reused);
}

#[test]
fn untracked_instances_with_the_installations_prefix_are_stopped_after_the_grace_period() {
    let w = workloads();
    let mut d = world();
    let mut c = controller("s1-");
    tick(&mut c, &mut d, 0.0, &w);
    let pool = "aws:us-east-1:p5.48xlarge";
    let stray = |token: &str| LaunchRequest {
        token: token.into(),
        unit: "gone".into(),
        workload: "gone".into(),
        pool: pool.into(),
        region: "aws:us-east-1".into(),
        category: Category::OnDemand,
        nodes: 1,
        committed_nodes: 0,
        replicas: 1,
    };
    d.world.launch(Time(10.0), &stray("s1-gone~99")).unwrap();
    // Another installation's instance is none of our business.
    d.world.launch(Time(10.0), &stray("s2-gone~1")).unwrap();
    let mut stopped_at = None;
    for k in 1..12 {
        let t = 60.0 * k as f64;
        let acts = tick(&mut c, &mut d, t, &w);
        if acts
            .iter()
            .any(|a| a.kind == ActionKind::Stop && a.token == "s1-gone~99")
        {
            stopped_at = Some(t);
        }
    }
    let at = stopped_at.expect("the stray was stopped");
    assert!((360.0..=420.0).contains(&at), "stopped at {at}");
    assert!(matches!(
        d.world.instance("s1-gone~99").unwrap().state,
        InstanceState::Stopping { .. }
    ));
    assert_eq!(
        d.world.instance("s2-gone~1").unwrap().state,
        InstanceState::Running
    );
}

#[test]
fn a_stop_that_failed_is_sent_again_until_confirmed() {
    let mut w = workloads();
    let mut d = world();
    let mut c = controller("s1-");
    tick(&mut c, &mut d, 0.0, &w);
    let job = live(&d).into_iter().find(|(u, _)| u == "ft").unwrap().1;
    w.training.clear();
    d.rates.stop_dropped = 1.0;
    for t in [60.0, 120.0, 180.0] {
        tick(&mut c, &mut d, t, &w);
    }
    assert_eq!(
        d.world.instance(&job).unwrap().state,
        InstanceState::Running,
        "the stops were dropped"
    );
    d.rates.stop_dropped = 0.0;
    for t in [240.0, 300.0, 360.0, 420.0, 480.0] {
        tick(&mut c, &mut d, t, &w);
    }
    assert!(
        matches!(
            d.world.instance(&job).unwrap().state,
            InstanceState::Stopping { .. }
        ),
        "{:?}",
        d.world.instance(&job)
    );
    assert!(c.stats.stop_retries >= 2, "{:?}", c.stats);
}

#[test]
fn a_gang_is_never_launched_elsewhere_before_its_old_instance_stopped() {
    let w = workloads();
    let mut d = world();
    let mut c = controller("s1-");
    tick(&mut c, &mut d, 0.0, &w);
    let (_, job) = live(&d).into_iter().find(|(u, _)| u == "ft").unwrap();
    let region = d.world.instance(&job).unwrap().request.region.clone();
    // The plan moves the job (its region's pools are believed gone), but its stop is lost.
    for p in c.fleet_mut().providers.iter_mut() {
        for r in p.regions.iter_mut() {
            if region == format!("{}:{}", p.name, r.name) {
                r.pools.clear();
            }
        }
    }
    c.config.min_dwell_s = 0.0;
    c.mark_dirty();
    d.rates.stop_dropped = 1.0;
    for t in [60.0, 120.0, 180.0] {
        tick(&mut c, &mut d, t, &w);
        let ft: Vec<_> = live(&d).into_iter().filter(|(u, _)| u == "ft").collect();
        assert_eq!(ft.len(), 1, "two copies of the gang at {t}: {ft:?}");
    }
    d.rates.stop_dropped = 0.0;
    for t in [240.0, 300.0, 360.0] {
        tick(&mut c, &mut d, t, &w);
    }
    let ft: Vec<_> = live(&d).into_iter().filter(|(u, _)| u == "ft").collect();
    assert_eq!(ft.len(), 1, "{ft:?}");
    assert_ne!(ft[0].1, job, "moved");
}

#[test]
fn time_never_goes_back_for_the_controller() {
    let w = workloads();
    let mut d = world();
    let mut c = controller("s1-");
    tick(&mut c, &mut d, 1000.0, &w);
    // The host's clock stepped back (an NTP correction): the controller reads it as the last.
    let acts = c.tick(Time(400.0), &w, &mut d);
    assert!(acts.iter().all(|a| a.at.0 >= 1000.0), "{acts:#?}");
    let owned: Vec<f64> = c.owned().map(|o| o.next_try.0).collect();
    assert!(owned.iter().all(|t| *t >= 1000.0), "{owned:?}");
}
