//! The real binary, run as a user would: the two README commands' main job, round trips
//! between commands, and bad input turning into one clear error and exit code 2.

use std::path::PathBuf;
use std::process::{Command, Output};

fn stratus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("binary runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stratus-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Run a command that must succeed and keep its standard output in a file.
fn save(args: &[&str], name: &str) -> PathBuf {
    let o = stratus(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = tmp(name);
    std::fs::write(&f, &o.stdout).unwrap();
    f
}

fn examples(name: &str) -> String {
    format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn demo_prints_its_summary() {
    let o = stratus(&["demo"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "aws",
        "azure",
        "gcp",
        "lambda",
        "lower bound",
        "tCO2e/day",
        "latency SLO",
        "cheapest-first",
    ] {
        assert!(out.contains(needle), "demo output lacks {needle:?}:\n{out}");
    }
}

#[test]
fn plan_json_has_the_documented_fields() {
    let o = stratus(&[
        "plan",
        "--workloads",
        &examples("demo-workloads.yaml"),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "policy",
        "cost_per_hour",
        "lower_bound_per_hour",
        "gap",
        "unplaced",
        "placements",
        "summary",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let p = &v["placements"][0];
    for k in [
        "workload",
        "provider",
        "region",
        "pool",
        "accelerator",
        "chips",
        "cost_per_hour",
        "explanation",
    ] {
        assert!(p.get(k).is_some(), "placement missing {k}");
    }
    assert!(
        v["lower_bound_per_hour"].as_f64().unwrap() <= v["objective_per_hour"].as_f64().unwrap()
    );
}

#[test]
fn fleet_show_json_is_a_fleet_file_and_pool_ids_match_plans() {
    let f = save(
        &["fleet", "show", "--provider", "aws", "--format", "json"],
        "aws-fleet.json",
    );
    let w = examples("small-workloads.yaml");
    let o = stratus(&[
        "plan",
        "--fleet",
        f.to_str().unwrap(),
        "--workloads",
        &w,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fleet: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    let ids: Vec<&str> = fleet["providers"][0]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["pools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap())
        })
        .collect();
    let placements = plan["placements"].as_array().unwrap();
    assert!(!placements.is_empty());
    for x in placements {
        assert!(ids.contains(&x["pool"].as_str().unwrap()), "{x}");
        assert_eq!(x["provider"], "aws");
    }
}

#[test]
fn fleet_show_yaml_reads_back_the_same_fleet() {
    let y = save(
        &["fleet", "show", "--accelerator", "H200", "--format", "yaml"],
        "h200.yaml",
    );
    let j1 = stratus(&[
        "fleet",
        "show",
        "--fleet",
        y.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let j2 = stratus(&["fleet", "show", "--accelerator", "H200", "--format", "json"]);
    assert!(
        j1.status.success(),
        "{}",
        String::from_utf8_lossy(&j1.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&j1.stdout),
        String::from_utf8_lossy(&j2.stdout)
    );
}

#[test]
fn a_plan_printed_as_json_is_accepted_as_previous() {
    // The planner's hysteresis itself is tested in crates/plan/tests/properties.rs
    // (`a_previous_placement_is_kept_unless_moving_pays`); this checks the file round trip.
    let w = examples("small-workloads.yaml");
    let first = tmp("first.json");
    let o = stratus(&["plan", "--workloads", &w, "--format", "json"]);
    std::fs::write(&first, &o.stdout).unwrap();
    let o2 = stratus(&[
        "plan",
        "--workloads",
        &w,
        "--previous",
        first.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    let pools = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["placements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["unit"].as_str().unwrap().into(),
                    x["pool"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(pools(&a), pools(&b));
}

/// `--time-limit`, the wall-clock safety net: reached before the search starts (a microsecond
/// is over before the problem is compiled), it still prints a plan, says so in the JSON and on
/// stderr, and the plan is no better than the budget's; without it, the JSON has no such
/// field. What a stopped plan keeps is tested in crates/plan/tests/properties.rs.
#[test]
fn a_time_limit_reached_gives_the_plan_so_far_and_says_so() {
    let w = examples("demo-workloads.yaml");
    let full = stratus(&["plan", "--workloads", &w, "--format", "json"]);
    assert!(full.status.success());
    let full: serde_json::Value = serde_json::from_slice(&full.stdout).unwrap();
    assert!(full.get("stopped_early").is_none(), "{}", full["method"]);
    let o = stratus(&[
        "plan",
        "--workloads",
        &w,
        "--time-limit",
        "0.000001",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--time-limit"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stopped_early"], true);
    assert!(v["method"].as_str().unwrap().contains("stopped early"));
    let obj = |v: &serde_json::Value| v["objective_per_hour"].as_f64().unwrap();
    assert!(obj(&v) >= obj(&full) - 1e-6 * obj(&full));
    assert!(v["lower_bound_per_hour"].as_f64().unwrap() <= obj(&v));
    assert!(!v["placements"].as_array().unwrap().is_empty());
    // The stopped plan reads back as a plan in force.
    let stopped = tmp("stopped.json");
    std::fs::write(&stopped, &o.stdout).unwrap();
    let again = stratus(&[
        "plan",
        "--workloads",
        &w,
        "--previous",
        stopped.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(again.status.success());
    bad(
        &["plan", "--workloads", &w, "--time-limit=-1"],
        &["--time-limit", "non-negative"],
    );
    bad(
        &["plan", "--workloads", &w, "--time-limit", "NaN"],
        &["--time-limit", "non-negative"],
    );
}

#[test]
fn the_baseline_policy_runs_and_is_labelled() {
    let o = stratus(&[
        "plan",
        "--workloads",
        &examples("small-workloads.yaml"),
        "--policy",
        "cheapest-first",
        "--format",
        "json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["policy"], "cheapest-first");
}

fn bad(args: &[&str], expect: &[&str]) {
    let o = stratus(args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("stratus: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for e in expect {
        assert!(err.contains(e), "{err:?} lacks {e:?}");
    }
}

#[test]
fn bad_workload_file_is_one_clear_error_with_exit_code_2() {
    let f = tmp("bad.yaml");
    std::fs::write(&f, "training:\n  - name: a\n    chips: 8\n    accelerators: [H100]\n    images: {cuda: x}\n    work_chip_hours: 10\n    gpus: 3\n").unwrap();
    bad(
        &["plan", "--workloads", f.to_str().unwrap()],
        &["bad.yaml:7", "gpus"],
    );
}

#[test]
fn bad_fleet_file_is_one_clear_error_with_exit_code_2() {
    let f = tmp("fleet.toml");
    std::fs::write(&f, "[[providers]]\nname = \"x\"\n[[providers.regions]]\nname = \"r\"\nlat = 1.0\nlon = 2.0\ncarbon_g_per_kwh = -5\npue = 1.1\npower_cap_mw = 1\npools = []\n").unwrap();
    bad(
        &[
            "plan",
            "--fleet",
            f.to_str().unwrap(),
            "--workloads",
            &examples("small-workloads.yaml"),
        ],
        &["fleet.toml:7", "non-negative"],
    );
}

#[test]
fn unknown_policy_and_missing_file_are_bad_input() {
    bad(
        &[
            "plan",
            "--workloads",
            &examples("small-workloads.yaml"),
            "--policy",
            "fastest",
        ],
        &["--policy", "cheapest-first"],
    );
    bad(
        &["plan", "--workloads", "/nonexistent/w.yaml"],
        &["/nonexistent/w.yaml", "cannot read"],
    );
    bad(&["fleet", "show", "--accelerator", "H1000"], &["H1000"]);
}

#[test]
fn the_gateway_benchmark_runs_all_three_paths_without_errors() {
    // A short run: this checks the benchmark's plumbing (mock, gateway and nginx processes,
    // the load generator), not its numbers. nginx is installed by .ci/run.
    let o = stratus(&[
        "bench",
        "gateway",
        "--seconds",
        "0.5",
        "--rates",
        "300",
        "--connections",
        "8",
        "--prefixes",
        "2000",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let nginx = std::path::Path::new("/usr/sbin/nginx").exists();
    for target in ["direct", "stratus"]
        .into_iter()
        .chain(nginx.then_some("nginx"))
    {
        let row = out
            .lines()
            .find(|l| l.starts_with(target) && l.contains(" 300 "))
            .unwrap_or_else(|| panic!("no {target} row in:\n{out}"));
        let errors: u64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert_eq!(errors, 0, "{row}");
    }
    assert!(
        out.contains("2000 requests with distinct prompt prefixes"),
        "{out}"
    );
    // The bench stops what it started: no nginx or gateway left behind.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains("stratus-bench-gateway"), "{ps}");
}

#[test]
fn capacity_plan_checks_the_briefs_numbers_and_names_the_first_breach() {
    let o = stratus(&[
        "capacity",
        "plan",
        "--gw-per-week",
        "1",
        "--from",
        "2026",
        "--to",
        "2027",
        "--max-sites-per-year",
        "40",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("1 GW a week for a year is 52 GW of capacity"),
        "{out}"
    );
    assert!(
        out.contains("8.76 TWh, the use of 818.7k US homes"),
        "{out}"
    );
    assert!(
        out.contains("breaks first: sites per year in 2026 (needs 52, limit 40)"),
        "{out}"
    );
    let json = stratus(&[
        "capacity",
        "plan",
        "--gw-per-week",
        "0.5",
        "--from",
        "2026",
        "--to",
        "2028",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["years"].as_array().unwrap().len(), 3);
    assert_eq!(v["years"][2]["total_gw"], 78.0);
    // A bad flag value is bad input: exit code 2 and the flag named.
    let bad = stratus(&[
        "capacity",
        "plan",
        "--gw-per-week",
        "1",
        "--from",
        "2026",
        "--to",
        "2026",
        "--grid",
        "us=lots",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--grid"));
}

#[test]
fn carbon_shift_saves_carbon_on_the_real_2020_series_at_no_extra_cost_in_time() {
    // Needs the hourly series in ../shared/data/carbon_intensity/hourly_lets_wait_awhile.
    let o = stratus(&[
        "carbon",
        "shift",
        "--workloads",
        &examples("demo-workloads.yaml"),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let year = out
        .lines()
        .find(|l| l.starts_with("every day of 2020"))
        .unwrap_or_else(|| panic!("{out}"));
    // Shifting never emits more than the agnostic choice and, at $100/t, finds savings.
    let num = |key: &str| -> f64 {
        let i = year.find(key).unwrap() + key.len();
        year[i..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (agnostic, aware) = (num("carbon-agnostic "), num("carbon-aware "));
    assert!(aware < agnostic, "{year}");
    assert!(out.contains("location-based"), "{out}");
}

#[test]
fn bench_dst_runs_seeds_and_prints_their_rate() {
    let out = stratus(&["bench", "dst", "--seeds", "4", "--threads", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4 seeds (0..4)") && text.contains("seeds/s") && text.contains("4 clean"),
        "{text}"
    );
}

/// Issue 15, item 7: an empty admin token file was accepted.
#[test]
fn serve_refuses_an_empty_admin_token_file() {
    let f = tmp("empty-token");
    std::fs::write(&f, "\n").unwrap();
    let o = stratus(&[
        "serve",
        "--admin-token-file",
        f.to_str().unwrap(),
        "--db",
        &format!("sqlite://{}", tmp("never.db").display()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("empty-token") && err.contains("empty"),
        "{err}"
    );
    assert!(!tmp("never.db").exists(), "nothing was started");
}

/// Issue 15: `stratus --help` opened with the CLI crate's internal description.
#[test]
fn help_opens_with_what_stratus_is() {
    for flag in ["-h", "--help"] {
        let o = stratus(&[flag]);
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.starts_with("stratus: a multi-cloud control plane for AI compute."),
            "{text}"
        );
        assert!(!text.contains("argument parsing"), "{text}");
    }
}

/// `bench plan --contended --reference --diff`: each set's row, then where stratus's plan and
/// HiGHS's optimum differ, unit by unit, and the differences add up to the total it states,
/// which is not negative (HiGHS from `.ci/run`'s highsbox).
#[test]
fn bench_contended_diff_lists_the_units_that_differ_from_the_optimum() {
    let o = stratus(&[
        "bench",
        "plan",
        "--contended",
        "--reference",
        "--sizes",
        "150",
        "--sets",
        "1",
        "--seed",
        "2",
        "--diff",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("--reference needs HiGHS") && std::env::var_os("STRATUS_HIGHS").is_none() {
        eprintln!("skipped: {err}");
        return;
    }
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains(" |    ok | "),
        "the plan breaks a rule:\n{out}"
    );
    let head = "150 workloads seed 2, against HiGHS's optimum: ";
    let (at, line) = out
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(head))
        .unwrap_or_else(|| panic!("no diff in:\n{out}"));
    let words: Vec<&str> = line[head.len()..].split_whitespace().collect();
    let n: usize = words[0].parse().unwrap();
    let total: f64 = words[3].parse().unwrap();
    assert!(n > 0 && words[1..3] == ["units", "differ,"], "{line}");
    let rows: Vec<&str> = out.lines().skip(at + 1).take(n).collect();
    let mut sum = 0.0;
    for r in &rows {
        assert!(r.contains(": stratus ") && r.contains(", optimum "), "{r}");
        sum += r.split_whitespace().next().unwrap().parse::<f64>().unwrap();
    }
    assert!(
        (sum - total).abs() < 0.01 * n as f64 && total > -0.01,
        "{line}: rows sum to {sum}"
    );
}
