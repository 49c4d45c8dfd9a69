//! Bad fleet and workload files: one clear error each, naming file, line and field.

use stratus_model::parse::{from_str, validate_fleet, validate_workloads, Format};
use stratus_model::{Fleet, InputError, WorkloadSet};

const FLEET: &str = r#"
name: tiny
providers:
  - name: aws
    regions:
      - name: us-east-1
        jurisdictions: [US]
        lat: 38.9
        lon: -77.4
        carbon_g_per_kwh: 380
        pue: 1.2
        power_cap_mw: 50
        pools:
          - id: aws:us-east-1:p5.48xlarge
            instance_type: p5.48xlarge
            accelerator: H100
            chips_per_node: 8
            nodes: 64
            on_demand_per_node_hour: 98.32
            spot_per_node_hour: 30.0
            spot_nodes: 16
            domain_chips: 512
"#;

fn fleet() -> Fleet {
    let f: Fleet = from_str("fleet.yaml", FLEET, Format::Yaml).unwrap();
    validate_fleet(&f, "fleet.yaml", FLEET).unwrap();
    f
}

fn fleet_err(text: &str) -> InputError {
    match from_str::<Fleet>("fleet.yaml", text, Format::Yaml) {
        Err(e) => e,
        Ok(f) => validate_fleet(&f, "fleet.yaml", text).unwrap_err(),
    }
}

fn workload_err(text: &str) -> InputError {
    match from_str::<WorkloadSet>("w.yaml", text, Format::Yaml) {
        Err(e) => e,
        Ok(w) => validate_workloads(&w, &fleet(), "w.yaml", text).unwrap_err(),
    }
}

const TRAIN: &str = r#"
training:
  - name: llm
    chips: 64
    accelerators: [H100]
    images: {cuda: "img:1"}
    work_chip_hours: 1000
"#;

#[test]
fn a_valid_fleet_and_workload_parse() {
    let f = fleet();
    assert_eq!(f.pool_count(), 1);
    let w: WorkloadSet = from_str("w.yaml", TRAIN, Format::Yaml).unwrap();
    validate_workloads(&w, &f, "w.yaml", TRAIN).unwrap();
}

#[test]
fn negative_capacity_names_line_and_field() {
    let e = fleet_err(&FLEET.replace("nodes: 64", "nodes: -64"));
    let s = e.to_string();
    assert_eq!(e.line, Some(18), "{s}");
    assert!(s.starts_with("fleet.yaml:18"), "{s}");
    assert!(s.contains("-64"), "{s}");
    assert_eq!(e.field.as_deref(), Some("nodes"));
}

#[test]
fn negative_price_is_rejected_with_its_unit() {
    let e = fleet_err(&FLEET.replace("98.32", "-98.32"));
    assert_eq!(e.line, Some(19), "{e}");
    assert!(e.to_string().contains("non-negative"), "{e}");
}

#[test]
fn wrong_type_names_line() {
    let e = fleet_err(&FLEET.replace("chips_per_node: 8", "chips_per_node: eight"));
    assert_eq!(e.line, Some(17), "{e}");
}

#[test]
fn unknown_field_names_field_and_line() {
    let e = fleet_err(&FLEET.replace("spot_nodes: 16", "spot_nodez: 16"));
    assert_eq!(e.field.as_deref(), Some("spot_nodez"), "{e}");
    assert_eq!(e.line, Some(21), "{e}");
}

#[test]
fn unknown_accelerator_is_an_error() {
    let e = fleet_err(&FLEET.replace("accelerator: H100", "accelerator: H1000"));
    assert!(
        e.to_string()
            .contains("\"H1000\", expected a known accelerator"),
        "{e}"
    );
    assert_eq!(e.field.as_deref(), Some("accelerator"));
    assert_eq!(e.line, Some(16), "{e}");
    let e = workload_err(&TRAIN.replace("[H100]", "[H100, X9]"));
    assert!(e.to_string().contains("X9"), "{e}");
}

#[test]
fn duplicate_pool_ids_point_at_the_second() {
    let dup = FLEET.to_string()
        + r#"          - id: aws:us-east-1:p5.48xlarge
            instance_type: p5.48xlarge
            accelerator: H100
            chips_per_node: 8
            nodes: 1
            on_demand_per_node_hour: 98.32
            domain_chips: 8
"#;
    let e = fleet_err(&dup);
    assert!(e.reason.contains("duplicate pool id"), "{e}");
    assert_eq!(e.line, Some(23), "{e}");
}

#[test]
fn duplicate_workload_names_point_at_the_second() {
    let text = TRAIN.to_string()
        + "  - name: llm\n    chips: 8\n    accelerators: [H100]\n    images: {cuda: x}\n    work_chip_hours: 1\n";
    let e = workload_err(&text);
    assert!(e.reason.contains("duplicate workload name"), "{e}");
    assert_eq!(e.line, Some(8), "{e}");
    assert_eq!(e.field.as_deref(), Some("training[1].name"));
}

#[test]
fn missing_image_for_an_architecture_is_an_error() {
    let e = workload_err(&TRAIN.replace("[H100]", "[H100, MI300X]"));
    assert!(e.reason.contains("rocm"), "{e}");
    assert_eq!(e.field.as_deref(), Some("training[0].images"));
}

#[test]
fn unknown_region_reference_is_an_error() {
    let text = r#"
inference:
  - name: chat
    model: m
    replica: {H100: {chips: 1, rps: 5}}
    images: {cuda: x}
    demand: [{from: "aws:mars-1", rps: 10}]
    latency_slo_ms: 100
"#;
    let e = workload_err(text);
    assert!(e.reason.contains("aws:mars-1"), "{e}");
    assert_eq!(e.line, Some(7), "{e}");
}

#[test]
fn toml_errors_carry_lines_too() {
    let text = "[[training]]\nname = \"a\"\nchips = -3\n";
    let e = from_str::<WorkloadSet>("w.toml", text, Format::Toml).unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.to_string().starts_with("w.toml:3"), "{e}");
}

#[test]
fn truncated_yaml_is_an_error_not_a_partial_fleet() {
    let cut = &FLEET[..FLEET.find("pools:").unwrap()];
    let e = fleet_err(cut);
    assert!(e.to_string().contains("pools"), "{e}");
}

#[test]
fn fleet_round_trips_through_json_and_yaml() {
    let f = fleet();
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(from_str::<Fleet>("f.json", &json, Format::Json).unwrap(), f);
    let yaml = stratus_model::parse::to_yaml(&f).unwrap();
    assert_eq!(from_str::<Fleet>("f.yaml", &yaml, Format::Yaml).unwrap(), f);
}

const SERVICE: &str = r#"
inference:
  - name: chat
    model: m
    replica: {H100: {chips: 8, rps: 10}}
    images: {cuda: x}
    demand: [{from: "aws:us-east-1", rps: 30}]
    latency_slo_ms: 100
"#;

/// See issue 15: `min_regions: 200000000` was accepted, and the planner's allocation of that
/// many shards aborted the process, again at every restart since the workload was stored.
#[test]
fn redundancy_beyond_the_fleets_regions_is_refused_not_an_abort() {
    for (field, v, why) in [
        ("min_regions", "200000000", "more than the 1 regions"),
        ("min_providers", "2", "more than the 1 providers"),
        ("min_regions", "0", "at least 1"),
    ] {
        let text = SERVICE.replace(
            "    latency_slo_ms: 100\n",
            &format!("    latency_slo_ms: 100\n    {field}: {v}\n"),
        );
        let e = workload_err(&text);
        assert_eq!(
            e.field.as_deref(),
            Some(&*format!("inference[0].{field}")),
            "{e}"
        );
        assert!(e.reason.contains(why), "{e}");
        // The field's own line.
        assert_eq!(e.line, Some(9), "{e}");
    }
}

/// See issue 15: 2,147,483,652 replicas of 16 chips were "placed" on 8 nodes (the count
/// overflowed in a release build).
#[test]
fn replicas_beyond_what_the_fleet_holds_are_refused() {
    let e = workload_err(&SERVICE.replace("rps: 30}", "rps: 21474836520}"));
    assert_eq!(e.field.as_deref(), Some("inference[0].replica.H100"), "{e}");
    assert!(
        e.reason
            .contains("more than the whole fleet holds (512 chips)"),
        "{e}"
    );
    let e = workload_err(&TRAIN.replace("chips: 64", "chips: 4294967295"));
    assert_eq!(e.field.as_deref(), Some("training[0].chips"), "{e}");
    assert!(e.reason.contains("more than the whole fleet"), "{e}");
}

/// See issue 15: `.nan` and `.inf` were stored as null (the workload was never planned,
/// while the API answered "created"), and a negative checkpoint interval made moving a job
/// look profitable at every re-plan.
#[test]
fn nan_infinite_and_negative_times_are_refused() {
    for (line, field) in [
        ("    checkpoint_minutes: .nan\n", "checkpoint_minutes"),
        ("    checkpoint_minutes: .inf\n", "checkpoint_minutes"),
        ("    checkpoint_minutes: -30\n", "checkpoint_minutes"),
        ("    deadline_hours: .nan\n", "deadline_hours"),
        ("    deadline_hours: .inf\n", "deadline_hours"),
        ("    deadline_hours: -1\n", "deadline_hours"),
    ] {
        let e = workload_err(&(TRAIN.to_string() + line));
        assert_eq!(
            e.field.as_deref(),
            Some(&*format!("training[0].{field}")),
            "{line}: {e}"
        );
        assert!(e.reason.contains("finite number"), "{line}: {e}");
        assert!(e.line.is_some(), "{line}: {e}");
    }
    let batch = "batch:\n  - name: b\n    chips: 8\n    accelerators: [H100]\n    images: {cuda: x}\n    work_chip_hours: 1\n    deadline_hours: .inf\n";
    let e = workload_err(batch);
    assert_eq!(e.field.as_deref(), Some("batch[0].deadline_hours"), "{e}");
}

/// See issue 15: names holding `@` or `#` could collide with another workload's unit keys
/// (one was never launched and not listed as unplaced).
#[test]
fn names_outside_the_grammar_and_repeated_locations_are_refused() {
    for name in [
        "\"chat@aws:us-east-1\"",
        "\"chat#0\"",
        "Chat",
        "\"a b\"",
        "\"x,LD_PRELOAD=/x.so\"",
    ] {
        let e = workload_err(&SERVICE.replace("name: chat", &format!("name: {name}")));
        assert_eq!(e.field.as_deref(), Some("inference[0].name"), "{name}: {e}");
        assert!(e.reason.contains("name"), "{name}: {e}");
    }
    let twice = SERVICE.replace(
        "demand: [{from: \"aws:us-east-1\", rps: 30}]",
        "demand: [{from: \"aws:us-east-1\", rps: 30}, {from: \"aws:us-east-1\", rps: 5}]",
    );
    let e = workload_err(&twice);
    assert_eq!(
        e.field.as_deref(),
        Some("inference[0].demand[1].from"),
        "{e}"
    );
    assert!(e.reason.contains("listed twice"), "{e}");
}

#[test]
fn fleet_names_and_counts_are_bounded() {
    let e = fleet_err(&FLEET.replace("name: us-east-1", "name: \"us-east-1#2\""));
    assert_eq!(
        e.field.as_deref(),
        Some("providers[0].regions[0].name"),
        "{e}"
    );
    let e = fleet_err(&FLEET.replace("nodes: 64", "nodes: 4000000000"));
    assert!(e.reason.contains("more than"), "{e}");
    let e = fleet_err(&FLEET.replace("chips_per_node: 8", "chips_per_node: 100000"));
    assert_eq!(
        e.field.as_deref(),
        Some("providers[0].regions[0].pools[0].chips_per_node"),
        "{e}"
    );
}
