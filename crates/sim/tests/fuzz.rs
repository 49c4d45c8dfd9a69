//! Property-based fuzzing of the scenario reader: scenario files mutated at random never make
//! the reader or its checks panic, and every error names the line and the field it is about.

use proptest::prelude::*;
use stratus_model::parse::{from_str, Format};
use stratus_sim::scenario::{self, Scenario};

const SCENARIO: &str = r#"name: fuzz
seed: 7
horizon_hours: 2
fleet: builtin
workloads: demo
demand_scale: 0.001
traces:
  inference:
    - file: llm_inference_traces/azure_llm_2023_code.csv
faults:
  - outage: {provider: aws, start_hour: 1, duration_hours: 1}
  - capacity_loss: {pool: "aws:us-east-1:p5.48xlarge", fraction: 0.5, start_hour: 0.5, duration_hours: 1}
  - price_change: {provider: gcp, factor: 1.5, start_hour: 1}
  - spot_preemption: {pools: "*", per_node_hour: 0.01}
policies: [stratus, cheapest_first, single_provider, round_robin]
single_provider: aws
"#;

const PIECES: &[&str] = &[
    ":",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "  ",
    "#",
    "\"",
    ".nan",
    ".inf",
    "-1",
    "0",
    "1e999",
    "99999999999999999999",
    "null",
    "~",
    "@",
    "\u{0}",
    "é",
    "horizon_hours",
    "seed",
    "faults",
    "outage",
    "provider",
    "pool",
    "fraction",
    "start_hour",
    "duration_hours",
    "factor",
    "policies",
    "stratus",
    "nocloud",
    "traces",
    "file",
    "../../etc/passwd",
    "demand_scale",
    "workloads",
    "fleet",
    "inference",
    "services",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let e = prop_oneof![
        (any::<usize>(), 0..PIECES.len()).prop_map(|(at, p)| Edit::Insert(at, p)),
        (any::<usize>(), 1usize..12).prop_map(|(at, n)| Edit::Delete(at, n)),
    ];
    prop::collection::vec(e, 1..5)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match *e {
            Edit::Insert(at, p) => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, PIECES[p].chars());
            }
            Edit::Delete(at, n) => {
                let at = at % chars.len().max(1);
                let end = (at + n).min(chars.len());
                chars.drain(at.min(end)..end);
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        rng_seed: proptest::test_runner::RngSeed::Fixed(15),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_scenarios_never_panic_and_errors_name_line_and_field(e in edits()) {
        let text = apply(SCENARIO, &e);
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let r = from_str::<Scenario>("s.yaml", &text, Format::Yaml).and_then(|sc| {
            scenario::resolve(sc, "s.yaml", &text, &base, &stratus_catalog::default_data_dir())
                .map(|_| ())
        });
        if let Err(err) = r {
            prop_assert!(err.line.is_some(), "no line: {err}\n--- document ---\n{text}");
            prop_assert!(err.field.is_some(), "no field: {err}\n--- document ---\n{text}");
        }
    }
}
