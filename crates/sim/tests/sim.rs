//! The simulator end to end: determinism, conservation, the outage comparison, reports, and
//! bad scenario files.

use std::path::{Path, PathBuf};
use stratus_sim::scenario::{self, Loaded, Scenario};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn parse(text: &str) -> Scenario {
    stratus_model::parse::from_str("test.yaml", text, stratus_model::parse::Format::Yaml).unwrap()
}

fn resolve(sc: Scenario) -> Loaded {
    scenario::resolve(
        sc,
        "test.yaml",
        "",
        &examples(),
        &stratus_catalog::default_data_dir(),
    )
    .unwrap()
}

/// The shipped outage scenario, shortened so the test suite stays quick.
fn outage(hours: f64, policies: &str) -> Loaded {
    let text = std::fs::read_to_string(examples().join("sim-outage.yaml")).unwrap();
    let mut sc = parse(&text);
    sc.horizon_hours = hours;
    sc.demand_scale = 0.0003;
    sc.policies = parse(&format!(
        "name: x\nhorizon_hours: 1\npolicies: {policies}\n"
    ))
    .policies;
    // The outage inside the shortened horizon.
    for f in &mut sc.faults {
        if let scenario::Fault::Outage { start_hour, .. } = f {
            *start_hour = 2.0;
        }
    }
    resolve(sc)
}

#[test]
fn same_seed_same_metrics_and_every_request_and_job_accounted_for() {
    let ld = outage(9.0, "[stratus, cheapest_first, round_robin]");
    let a = stratus_sim::simulate(&ld, &|_| {});
    let b = stratus_sim::simulate(&ld, &|_| {});
    let ja = serde_json::to_string(&a).unwrap();
    assert_eq!(ja, serde_json::to_string(&b).unwrap());
    for p in &a.policies {
        let c = &p.conservation;
        assert!(c.holds(), "{}: {c:?}", p.policy);
        assert!(c.requests > 10_000, "{}: {c:?}", p.policy);
        assert_eq!(c.jobs as usize, ld.jobs.len());
        assert!(p.totals.cost_usd > 0.0 && p.totals.energy_mwh > 0.0 && p.totals.tco2e > 0.0);
        assert_eq!(p.hourly.cost_usd.len(), 9);
        let sum: u64 = p.hourly.requests.iter().sum();
        assert_eq!(sum, p.totals.requests);
    }
    // A different seed draws other user locations and preemptions.
    let mut other = ld.clone();
    other.scenario.seed += 1;
    let c = stratus_sim::simulate(&other, &|_| {});
    assert_ne!(ja, serde_json::to_string(&c).unwrap());
}

#[test]
fn a_six_hour_provider_outage_hurts_single_provider_more_than_stratus() {
    let ld = outage(10.0, "[stratus, single_provider]");
    let m = stratus_sim::simulate(&ld, &|_| {});
    let (s, single) = (&m.policies[0], &m.policies[1]);
    assert_eq!(single.policy, "single-provider:aws");
    assert!(
        s.totals.slo_attainment > single.totals.slo_attainment,
        "stratus {} vs single-provider {}",
        s.totals.slo_attainment,
        single.totals.slo_attainment
    );
    // During the outage hours the single provider serves nothing; stratus keeps serving.
    for h in 3..8 {
        assert!(single.hourly.slo_attainment[h] < 0.05, "hour {h}");
        assert!(
            s.hourly.slo_attainment[h] > 0.9,
            "hour {h}: {}",
            s.hourly.slo_attainment[h]
        );
    }
    assert!(s.totals.controller.losses > 0);
}

#[test]
fn job_traces_drive_jobs_and_losses_roll_back_to_checkpoints() {
    let sc = parse(
        r#"
name: jobs
seed: 3
horizon_hours: 12
workloads: none
traces:
  jobs:
    - file: gpu_cluster_traces/alibaba_gpu_v2023/openb_pod_list_default.csv
      accelerators: [A100-80GB]
      time_scale: 0.002
      max_jobs: 60
      max_hours: 6
faults:
  - spot_preemption: {pools: "*", per_node_hour: 0.5}
policies: [stratus, cheapest_first]
"#,
    );
    let ld = resolve(sc);
    assert_eq!(ld.jobs.len(), 60);
    let m = stratus_sim::simulate(&ld, &|_| {});
    for p in &m.policies {
        let c = &p.conservation;
        assert!(c.holds(), "{c:?}");
        assert_eq!(c.jobs, 60);
        assert!(c.finished > 0, "{}: {c:?}", p.policy);
        assert!(p.totals.goodput_chip_hours > 0.0);
        assert!(p.totals.jct_hours.count == c.finished);
        assert_eq!(p.totals.requests, 0);
    }
    // Spot batch jobs were preempted and lost progress since their last checkpoint.
    assert!(m
        .policies
        .iter()
        .any(|p| p.totals.lost_chip_hours.contains_key("preemption")));
}

#[test]
fn reports_are_written_and_readable() {
    let ld = outage(4.0, "[stratus, cheapest_first]");
    let m = stratus_sim::simulate(&ld, &|_| {});
    let dir = std::env::temp_dir().join(format!("stratus-sim-report-{}", std::process::id()));
    stratus_sim::report::write(&m, &dir).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| SLO attainment |"), "{md}");
    for f in stratus_sim::report::PLOTS {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{f}"
        );
        assert!(!svg.contains("NaN"), "{f}");
        assert!(md.contains(f), "{f} linked from report.md");
    }
    let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    let back: stratus_sim::metrics::Metrics = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string_pretty(&back).unwrap() + "\n", text);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn load_err(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("stratus-sim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    let e = scenario::load(&p, &stratus_catalog::default_data_dir())
        .unwrap_err()
        .to_string();
    std::fs::remove_file(&p).unwrap();
    e
}

#[test]
fn bad_scenarios_name_file_line_and_field() {
    let e = load_err("typo", "name: x\nhorizon_hours: 5\nhorizn: 3\n");
    assert!(e.contains("typo.yaml:3") && e.contains("horizn"), "{e}");
    let e = load_err("neg", "name: x\nhorizon_hours: -5\nworkloads: none\n");
    assert!(
        e.contains("horizon_hours") && e.contains("neg.yaml:2"),
        "{e}"
    );
    let e = load_err(
        "nofile",
        "name: x\nhorizon_hours: 5\ntraces:\n  inference:\n    - file: llm_inference_traces/nope.csv\n",
    );
    assert!(e.contains("nope.csv") && e.contains("STRATUS_DATA"), "{e}");
    let e = load_err(
        "nosvc",
        "name: x\nhorizon_hours: 5\ntraces:\n  inference:\n    - file: llm_inference_traces/azure_llm_2023_code.csv\n      services: [no-such]\n",
    );
    assert!(
        e.contains("no-such") && e.contains("traces.inference[0].services"),
        "{e}"
    );
    let e = load_err(
        "badfault",
        "name: x\nhorizon_hours: 5\nworkloads: none\nfaults:\n  - outage: {provider: nocloud, start_hour: 1, duration_hours: 2}\n",
    );
    assert!(e.contains("faults[0]") && e.contains("nocloud"), "{e}");
    let e = load_err(
        "nowl",
        "name: x\nhorizon_hours: 5\nworkloads: missing.yaml\n",
    );
    assert!(e.contains("missing.yaml"), "{e}");
}

#[test]
fn a_cluster_node_list_becomes_an_owned_site_that_jobs_use_first() {
    let text = std::fs::read_to_string(examples().join("sim-cluster.yaml")).unwrap();
    let mut sc = parse(&text);
    sc.horizon_hours = 6.0;
    sc.traces.jobs[0].max_jobs = 150;
    sc.policies = parse("name: x\nhorizon_hours: 1\npolicies: [stratus]\n").policies;
    let ld = resolve(sc.clone());
    let site = ld
        .fleet
        .providers
        .iter()
        .find(|p| p.name == "onprem")
        .unwrap();
    let nodes: u32 = site.regions[0].pools.iter().map(|p| p.nodes).sum();
    // Mapped and unmapped nodes add up to the list's 1,213 GPU nodes.
    assert_eq!(nodes as usize + ld.skipped_nodes, 1213);
    let m = stratus_sim::simulate(&ld, &|_| {});
    let p = &m.policies[0];
    assert!(p.conservation.holds());
    assert!(p.totals.commitment_utilisation > 0.0);
    // Owned nodes cost nothing to use: on-demand spend stays far below the site's fee.
    let od = p.totals.cost_by_category["on-demand"];
    let fee = p.totals.cost_by_category["committed"];
    assert!(od < 0.1 * fee, "on-demand {od} vs owned {fee}");
    // A clash with a fleet provider is refused, naming the field.
    let mut bad = sc;
    bad.traces.clusters[0].provider = "aws".into();
    let e = scenario::resolve(
        bad,
        "test.yaml",
        "",
        &examples(),
        &stratus_catalog::default_data_dir(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("traces.clusters[0].provider") && e.contains("aws"),
        "{e}"
    );
}

#[test]
fn the_simulated_bill_is_valid_focus_and_matches_the_simulators_cost() {
    let ld = outage(6.0, "[stratus, cheapest_first]");
    let m = stratus_sim::simulate(&ld, &|_| {});
    let opts = stratus_ledger::Options::default();
    let commitments = stratus_ledger::commitment::from_fleet(&ld.fleet, opts.epoch);
    for p in &m.policies {
        assert!(!p.usage.is_empty(), "{}", p.policy);
        let rows = stratus_ledger::build(&ld.fleet, &commitments, &p.usage, &opts).unwrap();
        let mut csv = Vec::new();
        stratus_ledger::write_csv(&rows, "lab", &mut csv).unwrap();
        let v = stratus_ledger::check::check_csv(std::str::from_utf8(&csv).unwrap());
        assert!(v.is_empty(), "{}: {v:#?}", p.policy);
        // The ledger bills from usage what the simulator charged from its rates: on-demand
        // and spot use plus every reservation's fee for every hour, to rounding (an
        // instance billed twice, or an hour missed, would show).
        let billed: f64 = rows.iter().map(|r| r.billed_cost).sum();
        let sim = p.totals.cost_usd;
        assert!(
            (billed - sim).abs() <= 1e-9 * sim,
            "{}: ledger {billed} vs simulator {sim}",
            p.policy
        );
    }
}

#[test]
fn traffic_sizing_follows_the_day_and_night_and_holds_the_slo_better_than_declared_demand() {
    // The shipped sizing scenario, shortened to a day at a lower rate so the suite stays quick.
    let text = std::fs::read_to_string(examples().join("sim-autoscale.yaml")).unwrap();
    let mut sc = parse(&text);
    sc.horizon_hours = 24.0;
    sc.demand_scale = 0.005;
    let ld = resolve(sc);
    assert_eq!(
        ld.sizings,
        [
            scenario::Sizing::Declared,
            scenario::Sizing::Forecast,
            scenario::Sizing::Traffic
        ]
    );
    let m = stratus_sim::simulate(&ld, &|_| {});
    let by = |name: &str| {
        m.policies
            .iter()
            .find(|p| p.policy == name)
            .unwrap_or_else(|| panic!("no policy {name}"))
    };
    let (declared, traffic) = (by("stratus-declared"), by("stratus-traffic"));
    for p in [declared, traffic] {
        assert!(p.conservation.holds(), "{}: {:?}", p.policy, p.conservation);
        assert_eq!(p.totals.requests, declared.totals.requests, "same traffic");
    }
    // Sized from what it sees, the service is resized through the day; declared demand is
    // never resized.
    assert!(
        traffic.totals.controller.launches > declared.totals.controller.launches,
        "{} vs {}",
        traffic.totals.controller.launches,
        declared.totals.controller.launches
    );
    assert!(
        traffic.totals.within_slo > declared.totals.within_slo,
        "within SLO: traffic {} vs declared {}",
        traffic.totals.within_slo,
        declared.totals.within_slo
    );
    let e = load_err(
        "badscale",
        "name: x\nhorizon_hours: 5\nworkloads: none\nautoscale:\n  target_utilization: 1.5\n",
    );
    assert!(
        e.contains("autoscale.target_utilization") && e.contains("badscale.yaml:5"),
        "{e}"
    );
}
