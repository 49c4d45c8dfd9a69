//! The ledger end to end: hand-checkable commitments, the FOCUS export against the column
//! rules (and each rule caught when broken), bad commitment files, and the two commitment
//! effects on the planner.

use stratus_control::Time;
use stratus_ledger::burndown::report;
use stratus_ledger::check::check_csv;
use stratus_ledger::commitment::{self, Commitment};
use stratus_ledger::steer;
use stratus_ledger::time::{format, parse};
use stratus_ledger::{build, write_csv, Options, Usage};
use stratus_model::parse::{from_str, Format};
use stratus_model::Fleet;
use stratus_plan::{Category, Policy};

const FLEET: &str = r#"
name: ledger-test
providers:
  - name: acme
    regions:
      - name: r1
        location: Testville
        lat: 0
        lon: 0
        carbon_g_per_kwh: 400
        pue: 1.25
        power_cap_mw: 10
        pools:
          - id: acme:r1:g8
            instance_type: g8
            accelerator: H100
            chips_per_node: 8
            nodes: 10
            on_demand_per_node_hour: 10
            spot_per_node_hour: 4
            spot_nodes: 4
            domain_chips: 64
            host_watts_per_node: 1000
          - id: acme:r1:res
            instance_type: res
            accelerator: H100
            chips_per_node: 8
            nodes: 10
            on_demand_per_node_hour: 10
            committed: {name: acme-res, nodes: 4, rate_per_node_hour: 6}
            domain_chips: 64
"#;

fn fleet() -> Fleet {
    from_str("test-fleet.yaml", FLEET, Format::Yaml).unwrap()
}

fn opts() -> Options {
    Options {
        epoch: parse("2026-01-01").unwrap(),
        ..Options::default()
    }
}

fn usage(token: &str, pool: &str, cat: Category, nodes: u32, from_h: f64, to_h: f64) -> Usage {
    Usage {
        token: token.into(),
        workload: format!("w-{token}"),
        unit: format!("unit-{token}"),
        pool: pool.into(),
        category: cat,
        nodes,
        committed_nodes: 0,
        start_s: from_h * 3600.0,
        end_s: to_h * 3600.0,
    }
}

const SPEND: &str = r#"
commitments:
  - id: acme-spend
    name: Acme compute, $100k over 2 years
    kind: spend
    provider: acme
    start: 2026-01-01
    years: 2
    total_usd: 100000
    discount: 0.2
    yearly_minimum_usd: [30000, 40000]
    accelerators: [H100]
"#;

fn spend_commitments(f: &Fleet) -> Vec<Commitment> {
    commitment::load("c.yaml", SPEND, f, opts().epoch).unwrap()
}

/// Reads a cell of the current row by column name.
type Get<'a> = &'a dyn Fn(&str) -> String;

fn csv_of(rows: &[stratus_ledger::Row]) -> String {
    let mut out = Vec::new();
    write_csv(rows, "lab", &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn spend_burn_down_by_hand() {
    let f = fleet();
    let cs = spend_commitments(&f);
    // One on-demand node for 1,000 hours: list $10,000, drawn at 20 % off: $8,000, $8/h.
    let rows = build(
        &f,
        &cs,
        &[usage("a", "acme:r1:g8", Category::OnDemand, 1, 0.0, 1000.0)],
        &opts(),
    )
    .unwrap();
    let r = report(&cs, &rows);
    assert_eq!(format(r.as_of), "2026-02-11T16:00:00Z");
    let s = &r.spend[0];
    assert!((s.drawn_usd - 8000.0).abs() < 1e-6, "{}", s.drawn_usd);
    assert!((s.run_rate_usd_per_hour - 8.0).abs() < 1e-9);
    // Year 1 (2026, 8,760 h): 8,000 + 8 × 7,760 = 70,080; year 2: 8 × 8,760 = 70,080.
    assert!((s.years[0].projected_usd - 70_080.0).abs() < 1e-6);
    assert!((s.years[1].projected_usd - 70_080.0).abs() < 1e-6);
    assert_eq!(s.years[0].shortfall_usd, 0.0);
    // The total is reached 29,920 / 8 = 3,740 h into 2027: 5 June 20:00.
    assert_eq!(format(s.exhaustion.unwrap()), "2027-06-05T20:00:00Z");
    assert!((s.overage_usd - 40_160.0).abs() < 1e-6);
    assert_eq!(s.term_shortfall_usd, 0.0);
    // Coverage: all of the provider's usage drew on the commitment.
    assert!((s.coverage - 1.0).abs() < 1e-12);

    // Two short bursts 1,000 hours apart: $160 drawn, $0.16/h.
    let rows = build(
        &f,
        &cs,
        &[
            usage("a", "acme:r1:g8", Category::OnDemand, 1, 0.0, 10.0),
            usage("b", "acme:r1:g8", Category::OnDemand, 1, 990.0, 1000.0),
        ],
        &opts(),
    )
    .unwrap();
    let s = &report(&cs, &rows).spend[0];
    assert!((s.run_rate_usd_per_hour - 0.16).abs() < 1e-12);
    // 160 + 0.16 × 7,760 = 1,401.6 → true-up 28,598.4; year 2: 1,401.6 → 38,598.4.
    assert!((s.years[0].shortfall_usd - 28_598.4).abs() < 1e-6);
    assert!((s.years[1].shortfall_usd - 38_598.4).abs() < 1e-6);
    // Draws and true-ups reach 70,000; 30,000 of the total is owed at the end.
    assert!((s.term_shortfall_usd - 30_000.0).abs() < 1e-6);
    assert_eq!(s.exhaustion, None);
    assert_eq!(s.overage_usd, 0.0);
}

#[test]
fn reservation_burn_down_by_hand() {
    let f = fleet();
    // No file: the fleet's reservation (4 nodes at $6) gets a one-year term from the epoch.
    let cs = commitment::load("c.yaml", "commitments: []\n", &f, opts().epoch).unwrap();
    assert_eq!(cs.len(), 1);
    // 6 nodes for two hours, then 2 nodes for one hour.
    let rows = build(
        &f,
        &cs,
        &[
            usage("a", "acme:r1:res", Category::OnDemand, 6, 0.0, 2.0),
            usage("b", "acme:r1:res", Category::OnDemand, 2, 2.0, 3.0),
        ],
        &opts(),
    )
    .unwrap();
    let r = report(&cs, &rows);
    let u = &r.usage[0];
    // Reserved 4 × 3 = 12 node-hours, used 4 + 4 + 2 = 10; 2 on demand at $10 in each of
    // the first two hours; 2 unused in the third.
    assert_eq!(u.reserved_node_hours, 12.0);
    assert_eq!(u.used_node_hours, 10.0);
    assert!((u.utilisation - 10.0 / 12.0).abs() < 1e-12);
    assert!((u.coverage - 10.0 / 14.0).abs() < 1e-12);
    assert_eq!(u.fee_usd, 72.0);
    assert_eq!(u.unused_usd, 12.0);
    assert!(
        (r.billed_usd - 112.0).abs() < 1e-9,
        "fees 72 + on-demand 40"
    );
    assert!(
        (r.effective_usd - 112.0).abs() < 1e-9,
        "amortised: the same money"
    );
    // The rest of the year: (8,760 − 3) h × 4 nodes × $6, a sixth of it unused.
    assert!((u.remaining_fee_usd - 8757.0 * 24.0).abs() < 1e-6);
    assert!((u.projected_unused_usd - (12.0 + 8757.0 * 24.0 / 6.0)).abs() < 1e-6);
    assert!(check_csv(&csv_of(&rows)).is_empty());
}

#[test]
fn focus_export_follows_the_column_rules() {
    let f = fleet();
    let cs = commitment::load(
        "c.yaml",
        r#"
commitments:
  - id: acme-1y
    kind: spend
    provider: acme
    start: 2026-01-01
    years: 1
    total_usd: 50000
    discount: 0.1
    yearly_minimum_usd: [30000]
"#,
        &f,
        opts().epoch,
    )
    .unwrap();
    // A whole commitment year inside the window: the shortfall is settled in the file.
    let us = vec![
        usage("a", "acme:r1:g8", Category::OnDemand, 2, 0.0, 5.5),
        usage("s", "acme:r1:g8", Category::Spot, 3, 1.25, 4.0),
        usage("r", "acme:r1:res", Category::Committed, 5, 0.0, 3.0),
        usage("z", "acme:r1:g8", Category::OnDemand, 1, 8759.0, 8760.0),
    ];
    let rows = build(&f, &cs, &us, &opts()).unwrap();
    let text = csv_of(&rows);
    let v = check_csv(&text);
    assert!(v.is_empty(), "{v:#?}");
    let kinds = |pred: &dyn Fn(Get) -> bool| -> usize {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let h = r.headers().unwrap().clone();
        r.records()
            .filter(|rec| {
                let rec = rec.as_ref().unwrap();
                let get = |c: &str| {
                    rec.get(h.iter().position(|x| x == c).unwrap())
                        .unwrap()
                        .to_string()
                };
                pred(&get)
            })
            .count()
    };
    // Every kind of charge is there.
    assert!(kinds(&|g| g("PricingCategory") == "Dynamic") > 0, "spot");
    assert!(
        kinds(&|g| g("ChargeCategory") == "Purchase" && g("ChargeFrequency") == "Recurring") > 0
    );
    assert_eq!(
        kinds(&|g| g("ChargeCategory") == "Purchase" && g("ChargeFrequency") == "One-Time"),
        1,
        "true-up"
    );
    assert!(
        kinds(&|g| g("CommitmentDiscountStatus") == "Unused" && g("ConsumedQuantity").is_empty())
            > 0
    );
    assert!(
        kinds(&|g| g("CommitmentDiscountStatus") == "Used"
            && g("BilledCost") == "0"
            && g("EffectiveCost") != "0")
            > 0
    );
    // The true-up: 30,000 minus what was drawn at $9 a node-hour: 2 × 5.5 h, 1 h, and the
    // fifth node of `r` beyond the 4 reserved for 3 h: 15 node-hours, $135.
    let s = &report(&cs, &rows).spend[0];
    assert!((s.drawn_usd - 135.0).abs() < 1e-9, "{}", s.drawn_usd);
    assert!((s.settled_shortfall_usd - (30_000.0 - 135.0)).abs() < 1e-6);
    // Σ BilledCost = Σ EffectiveCost over the whole file: amortisation moves money, never makes it.
    let tot = |c: &str| -> f64 {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let i = r.headers().unwrap().iter().position(|x| x == c).unwrap();
        r.records()
            .map(|x| x.unwrap()[i].parse::<f64>().unwrap())
            .sum()
    };
    assert!((tot("BilledCost") - tot("EffectiveCost")).abs() < 1e-6);
}

/// Replace one cell of the first row matching `pick`, or drop a column.
fn mutate(text: &str, pick: &dyn Fn(Get) -> bool, column: &str, value: Option<&str>) -> String {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h = r.headers().unwrap().clone();
    let ci = h.iter().position(|x| x == column).unwrap();
    let mut w = csv::Writer::from_writer(Vec::new());
    let keep: Vec<usize> = (0..h.len())
        .filter(|&i| value.is_some() || i != ci)
        .collect();
    w.write_record(keep.iter().map(|&i| &h[i])).unwrap();
    let mut done = false;
    for rec in r.records() {
        let rec = rec.unwrap();
        let mut cells: Vec<String> = rec.iter().map(str::to_string).collect();
        let get = |c: &str| {
            rec.get(h.iter().position(|x| x == c).unwrap())
                .unwrap()
                .to_string()
        };
        if let Some(v) = value {
            if !done && pick(&get) {
                cells[ci] = v.to_string();
                done = true;
            }
        }
        w.write_record(keep.iter().map(|&i| &cells[i])).unwrap();
    }
    assert!(done || value.is_none(), "no row matched for {column}");
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

#[test]
fn each_broken_rule_is_caught() {
    let f = fleet();
    let cs = commitment::load("c.yaml", "commitments: []\n", &f, opts().epoch).unwrap();
    let rows = build(
        &f,
        &cs,
        &[
            usage("a", "acme:r1:res", Category::OnDemand, 2, 0.0, 2.0),
            usage("b", "acme:r1:g8", Category::OnDemand, 1, 0.0, 1.0),
        ],
        &opts(),
    )
    .unwrap();
    let good = csv_of(&rows);
    assert!(check_csv(&good).is_empty());
    let purchase = |g: Get| g("ChargeCategory") == "Purchase";
    let unused = |g: Get| g("CommitmentDiscountStatus") == "Unused";
    let any = |_: Get| true;
    let cases: Vec<(String, &str, &str)> = vec![
        (
            mutate(&good, &any, "BilledCost", None),
            "BilledCost",
            "mandatory column missing",
        ),
        (
            mutate(&good, &purchase, "ChargeFrequency", Some("Usage-Based")),
            "ChargeFrequency",
            "MUST NOT be \"Usage-Based\"",
        ),
        (
            mutate(&good, &unused, "ConsumedQuantity", Some("2")),
            "ConsumedQuantity",
            "MUST be null",
        ),
        (
            mutate(&good, &purchase, "EffectiveCost", Some("5")),
            "EffectiveCost",
            "MUST be 0",
        ),
        (
            mutate(&good, &any, "ChargeCategory", Some("Refund")),
            "ChargeCategory",
            "not an allowed value",
        ),
        (
            mutate(&good, &any, "ChargePeriodStart", Some("2026-01-01 00:00")),
            "ChargePeriodStart",
            "YYYY-MM-DDTHH:mm:ssZ",
        ),
        (
            mutate(&good, &any, "ListCost", Some("1,000")),
            "ListCost",
            "not a FOCUS decimal",
        ),
        (
            mutate(&good, &any, "Tags", Some("[1,2]")),
            "Tags",
            "JSON object",
        ),
        (
            mutate(&good, &unused, "EffectiveCost", Some("1")),
            "EffectiveCost",
            "MUST equal Σ BilledCost",
        ),
        (
            mutate(&good, &any, "BillingCurrency", Some("dollars")),
            "BillingCurrency",
            "ISO 4217",
        ),
        (
            mutate(&good, &unused, "CommitmentDiscountStatus", Some("")),
            "CommitmentDiscountStatus",
            "MUST NOT be null",
        ),
        (
            mutate(&good, &any, "ServiceName", Some("")),
            "ServiceName",
            "MUST NOT be null",
        ),
        (
            mutate(&good, &any, "PricingUnit", Some("")),
            "PricingUnit",
            "if and only if",
        ),
        (
            good.replacen("x_Workload", "Workload", 1),
            "Workload",
            "prefixed `x_`",
        ),
    ];
    for (text, column, rule) in cases {
        let v = check_csv(&text);
        assert!(
            v.iter()
                .any(|x| x.column == column && x.rule.contains(rule)),
            "{column}: {rule}: got {v:#?}"
        );
    }
}

#[test]
fn bad_commitment_files_name_the_field() {
    let f = fleet();
    let cases = [
        ("commitments:\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-01-01\n    years: 1\n", "commitments[0].total_usd", "required"),
        ("commitments:\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-01-01\n    years: 2\n    total_usd: 10\n    yearly_minimum_usd: [6, 6]\n", "commitments[0].yearly_minimum_usd", "more than total_usd"),
        ("commitments:\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-01-01\n    years: 2\n    total_usd: 10\n    yearly_minimum_usd: [6]\n", "commitments[0].yearly_minimum_usd", "1 entries for a 2-year term"),
        ("commitments:\n  - id: x\n    kind: usage\n    pool: acme:r9:nope\n    nodes: 1\n    start: 2026-01-01\n    years: 1\n", "commitments[0].pool", "no pool"),
        ("commitments:\n  - id: x\n    kind: usage\n    pool: acme:r1:g8\n    nodes: 11\n    rate_per_node_hour: 5\n    start: 2026-01-01\n    years: 1\n", "commitments[0].nodes", "exceed"),
        ("commitments:\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-02-30\n    years: 1\n    total_usd: 1\n", "commitments[0].start", "not a UTC date"),
        ("commitments:\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-01-01\n    years: 1\n    total_usd: 1\n    discount: 1.5\n", "commitments[0].discount", "fraction"),
        ("commitments:\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-01-01\n    years: 1\n    total_usd: 1\n    pool: acme:r1:g8\n", "commitments[0].pool", "does not apply"),
        ("commitments:\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-01-01\n    years: 1\n    total_usd: 1\n  - id: x\n    kind: spend\n    provider: acme\n    start: 2026-01-01\n    years: 1\n    total_usd: 1\n", "commitments[1].id", "duplicate"),
    ];
    for (text, field, reason) in cases {
        let e = commitment::load("commitments.yaml", text, &f, 0).unwrap_err();
        assert_eq!(e.file, "commitments.yaml");
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert!(e.line.is_some(), "{e}");
    }
    let e = commitment::load(
        "commitments.yaml",
        "commitments:\n  - id: x\n    kind: spend\n    colour: red\n",
        &f,
        0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn the_meter_and_the_ledger_agree_with_a_driver() {
    // Launch through the simulated provider, observe as the harnesses do, bill.
    use stratus_control::{Driver, LaunchRequest, SimProvider};
    let f = fleet();
    let mut d = SimProvider::new(&f, 60.0, 30.0);
    let mut m = stratus_ledger::Meter::new();
    let req = LaunchRequest {
        token: "tok-1".into(),
        unit: "u".into(),
        workload: "w".into(),
        pool: "acme:r1:g8".into(),
        region: "acme:r1".into(),
        category: Category::OnDemand,
        nodes: 2,
        committed_nodes: 0,
        replicas: 1,
    };
    d.launch(Time(0.0), &req).unwrap();
    for t in (0..=7200).step_by(600) {
        d.advance(Time(t as f64));
        m.observe(Time(t as f64), d.instances());
    }
    d.stop(Time(7200.0), "tok-1").unwrap();
    for t in [7200.0, 7230.0, 7800.0] {
        d.advance(Time(t));
        m.observe(Time(t), d.instances());
    }
    let u = m.usage();
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].start_s, u[0].end_s),
        (0.0, 7230.0),
        "billed from launch to release"
    );
    let rows = build(&f, &[], &u, &opts()).unwrap();
    let billed: f64 = rows.iter().map(|r| r.billed_cost).sum();
    assert!((billed - 2.0 * 10.0 * 7230.0 / 3600.0).abs() < 1e-9);
    assert!(check_csv(&csv_of(&rows)).is_empty());
}

#[test]
fn commitments_steer_the_planner() {
    let fleet = stratus_catalog::builtin();
    let w = stratus_catalog::scenario::demo_workloads(fleet).unwrap();
    let policy = Policy::default();
    let cs = commitment::load(
        "c.yaml",
        r#"
commitments:
  - id: gcp-ai
    kind: spend
    provider: gcp
    start: 2026-01-01
    years: 2
    total_usd: 400000000
    discount: 0.15
    yearly_minimum_usd: [150000000, 200000000]
"#,
        fleet,
        opts().epoch,
    )
    .unwrap();
    let md = steer::minimum_draw(fleet, &w, &policy, &cs[0], 0).unwrap();
    assert!(md.before.shortfall_usd > 0.0, "{md:#?}");
    // The shortfall (83 M$ of 150 M$) all but disappears: the cheapest year found draws
    // the minimum to within 2 %, where drawing more would cost more than the true-up saves.
    assert!(md.after.shortfall_usd < 0.02 * md.minimum_usd, "{md:#?}");
    assert!(
        md.after.draw_usd_per_hour > md.before.draw_usd_per_hour,
        "{md:#?}"
    );
    assert!(md.after.year_cost_usd < md.before.year_cost_usd, "{md:#?}");

    let demo = steer::reservation(fleet, &w, &policy, &cs, &opts(), 24.0);
    assert!(
        demo.aware.utilisation > demo.unaware.utilisation,
        "{demo:#?}"
    );
    assert!(demo.aware.unused_usd < demo.unaware.unused_usd, "{demo:#?}");
    assert!(
        demo.aware.effective_usd < demo.unaware.effective_usd,
        "{demo:#?}"
    );
}
