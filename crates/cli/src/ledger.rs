//! `stratus ledger export|report|steer`: presentation of [`stratus_ledger`].

use crate::present::{right, table, thousands};
use anyhow::{Context, Result};
use comfy_table::Cell;
use std::path::{Path, PathBuf};
use stratus_ledger::burndown::{self, Report};
use stratus_ledger::commitment::{self, Commitment};
use stratus_ledger::time::{self, format_date};
use stratus_ledger::{steer, Options, Usage};
use stratus_model::{parse, Fleet, WorkloadSet};
use stratus_plan::Policy;

/// The commitments `stratus ledger` uses when none are given.
pub(crate) const DEFAULT_COMMITMENTS: &str = include_str!("../../../examples/commitments.yaml");

/// Where the usage, prices and commitments come from.
#[derive(clap::Args)]
pub struct Inputs {
    /// Fleet file; the built-in fleet when omitted.
    #[arg(long)]
    fleet: Option<PathBuf>,
    /// Usage records (JSON lines, as `stratus sim run` writes `usage-<policy>.jsonl` and
    /// `GET /v1/usage` returns). Default: the plan of `--workloads` held for `--hours`.
    #[arg(long)]
    usage: Option<PathBuf>,
    /// Workloads planned for the default usage; the demo workloads when omitted.
    #[arg(long)]
    workloads: Option<PathBuf>,
    /// Hours the plan is held for the default usage.
    #[arg(long, default_value_t = 720.0)]
    hours: f64,
    /// Commitments file (YAML); `examples/commitments.yaml` when omitted.
    #[arg(long)]
    commitments: Option<PathBuf>,
    /// UTC date of the usage clock's zero (the simulator's start); `0` for Unix time, as the
    /// live service records it.
    #[arg(long, default_value = "2026-01-01")]
    start: String,
}

struct Loaded {
    fleet: Fleet,
    commitments: Vec<Commitment>,
    usage: Vec<Usage>,
    opts: Options,
    source: String,
}

/// The commitments file, or `examples/commitments.yaml` (embedded) when none is given.
fn commitments(
    path: Option<&Path>,
    fleet: &Fleet,
    epoch: time::UnixSeconds,
) -> Result<Vec<Commitment>> {
    Ok(match path {
        Some(p) => commitment::load_file(p, fleet, epoch)?,
        None => commitment::load(
            "examples/commitments.yaml",
            DEFAULT_COMMITMENTS,
            fleet,
            epoch,
        )?,
    })
}

fn workloads(fleet: &Fleet, path: Option<&Path>) -> Result<WorkloadSet> {
    Ok(match path {
        Some(p) => parse::load_workloads(p, fleet).context("reading workloads")?,
        None => stratus_catalog::scenario::demo_workloads(fleet)?,
    })
}

fn load(i: &Inputs) -> Result<Loaded> {
    let fleet = crate::load_fleet(i.fleet.as_deref())?.into_owned();
    let epoch = if i.start == "0" {
        0
    } else {
        time::parse(&i.start).map_err(|e| crate::bad_flag("--start", e))?
    };
    let opts = Options {
        epoch,
        ..Options::default()
    };
    let commitments = commitments(i.commitments.as_deref(), &fleet, epoch)?;
    let (usage, source) = match &i.usage {
        Some(p) => (
            read_usage(p)?,
            format!("usage records from {}", p.display()),
        ),
        None => {
            if !(i.hours.is_finite() && i.hours > 0.0) {
                return Err(crate::bad_flag(
                    "--hours",
                    format!("must be a positive number of hours, got {}", i.hours),
                ));
            }
            let w = workloads(&fleet, i.workloads.as_deref())?;
            let p = stratus_plan::plan(&fleet, &w, &Policy::default(), None);
            (
                stratus_ledger::meter::from_plan(&p, i.hours),
                format!(
                    "the plan of {} held for {} h",
                    i.workloads
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "the demo workloads".into()),
                    i.hours
                ),
            )
        }
    };
    Ok(Loaded {
        fleet,
        commitments,
        usage,
        opts,
        source,
    })
}

/// Read usage records, one JSON object per line; errors name the file and line.
pub fn read_usage(path: &Path) -> Result<Vec<Usage>> {
    let (file, text) = parse::read_text(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let u: Usage = serde_json::from_str(line).map_err(|e| parse::InputError {
            file: file.clone(),
            line: Some(n + 1),
            field: None,
            reason: e.to_string(),
        })?;
        out.push(u);
    }
    Ok(out)
}

fn rows(l: &Loaded) -> Result<Vec<stratus_ledger::Row>> {
    Ok(stratus_ledger::build(
        &l.fleet,
        &l.commitments,
        &l.usage,
        &l.opts,
    )?)
}

/// `stratus ledger export`.
pub fn export(i: &Inputs, out: Option<&Path>) -> Result<()> {
    let l = load(i)?;
    let rows = rows(&l)?;
    match out {
        Some(p) => {
            let f =
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            stratus_ledger::write_csv(&rows, "lab", std::io::BufWriter::new(f))?;
            eprintln!(
                "wrote {} FOCUS 1.2 rows to {} ({})",
                rows.len(),
                p.display(),
                l.source
            );
        }
        None => stratus_ledger::write_csv(&rows, "lab", std::io::stdout().lock())?,
    }
    Ok(())
}

/// `stratus ledger check`: validate a FOCUS CSV against the column rules.
pub fn check(path: &Path) -> Result<()> {
    let (_, text) = parse::read_text(path)?;
    let v = stratus_ledger::check::check_csv(&text);
    if v.is_empty() {
        println!(
            "{}: every FOCUS 1.2 column rule checked holds ({} rows)",
            path.display(),
            text.lines().count().saturating_sub(1)
        );
        return Ok(());
    }
    for x in v.iter().take(50) {
        eprintln!("{}: {x}", path.display());
    }
    anyhow::bail!("{}: {} FOCUS rule violations", path.display(), v.len())
}

fn usd(x: f64) -> String {
    if x.abs() >= 1e9 {
        format!("${:.2}B", x / 1e9)
    } else if x.abs() >= 1e6 {
        format!("${:.1}M", x / 1e6)
    } else {
        let sign = if x < 0.0 { "-" } else { "" };
        format!("{sign}${}", thousands(x.abs().round() as u64))
    }
}

/// `stratus ledger report`.
pub fn report(i: &Inputs, plot: Option<&Path>, json: bool) -> Result<()> {
    let l = load(i)?;
    let rows = rows(&l)?;
    let r = burndown::report(&l.commitments, &rows);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&l, &r);
    }
    if let Some(p) = plot {
        std::fs::write(p, burn_down_svg(&r)).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote the burn-down plot to {}", p.display());
    }
    Ok(())
}

fn print_report(l: &Loaded, r: &Report) {
    let hours = (r.as_of - r.from) as f64 / 3600.0;
    println!(
        "stratus ledger: {} → {} ({} h) from {}",
        time::format(r.from),
        time::format(r.as_of),
        hours,
        l.source
    );
    println!(
        "  billed {}  effective {}  list {}  ({:.1}% below list)",
        usd(r.billed_usd),
        usd(r.effective_usd),
        usd(r.list_usd),
        (1.0 - r.effective_usd / r.list_usd.max(1e-9)) * 100.0
    );
    let by = |m: &std::collections::BTreeMap<String, f64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {}", usd(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  effective by provider: {}", by(&r.effective_by_provider));
    println!(
        "  usage by pricing category: {}",
        by(&r.effective_by_pricing)
    );
    println!(
        "  energy {:.0} MWh, {:.1} tCO2e (location-based, regional yearly averages)",
        r.energy_mwh, r.tco2e
    );
    if !r.spend.is_empty() {
        println!("\nSpend commitments (forecast: the run-rate observed over the ledger continues)");
        for s in &r.spend {
            println!(
                "  {} — {} · {} → {} · total {}",
                s.id,
                s.name,
                format_date(s.start),
                format_date(s.end),
                usd(s.total_usd)
            );
            println!(
                "    drawn {} at {}/h ({:.0}% of {}'s usage cost); exhaustion {}; at term end {}",
                usd(s.drawn_usd),
                usd(s.run_rate_usd_per_hour),
                s.coverage * 100.0,
                s.provider,
                s.exhaustion
                    .map(format_date)
                    .unwrap_or_else(|| "not within the term".into()),
                if s.term_shortfall_usd > 0.0 {
                    format!("shortfall {}", usd(s.term_shortfall_usd))
                } else {
                    format!("overage {}", usd(s.overage_usd))
                }
            );
            let mut t = table(&["year", "from", "minimum", "drawn", "projected", "true-up"]);
            for y in &s.years {
                t.add_row(vec![
                    right(y.year.to_string()),
                    Cell::new(format_date(y.start)),
                    right(usd(y.minimum_usd)),
                    right(usd(y.drawn_usd)),
                    right(usd(y.projected_usd)),
                    right(usd(y.shortfall_usd)),
                ]);
            }
            println!("{t}");
        }
    }
    if !r.usage.is_empty() {
        println!("\nReserved capacity (usage commitments)");
        let mut t = table(&[
            "commitment",
            "pool",
            "term end",
            "reserved node-h",
            "used",
            "utilisation",
            "coverage",
            "fees",
            "unused",
            "projected unused at term end",
        ]);
        for u in &r.usage {
            t.add_row(vec![
                Cell::new(&u.id),
                Cell::new(&u.pool),
                Cell::new(format_date(u.end)),
                right(thousands(u.reserved_node_hours.round() as u64)),
                right(thousands(u.used_node_hours.round() as u64)),
                right(format!("{:.1}%", u.utilisation * 100.0)),
                right(format!("{:.1}%", u.coverage * 100.0)),
                right(usd(u.fee_usd)),
                right(usd(u.unused_usd)),
                right(usd(u.projected_unused_usd)),
            ]);
        }
        println!("{t}");
    }
}

/// Cumulative draw plus true-ups against the cumulative yearly minimums, per spend
/// commitment, in years from the first commitment's start.
pub fn burn_down_svg(r: &Report) -> String {
    use stratus_sim::svg::{Chart, Series};
    let t0 = r.spend.iter().map(|s| s.start).min().unwrap_or(r.from);
    let yr = |t: i64| (t - t0) as f64 / (365.25 * 86_400.0);
    let mut series = Vec::new();
    for s in &r.spend {
        series.push(Series {
            name: format!("{} draw", s.id),
            points: s.curve.iter().map(|&(t, v)| (yr(t), v / 1e9)).collect(),
        });
        let mut cum = 0.0;
        let mut pts = vec![(yr(s.start), 0.0)];
        for y in &s.years {
            cum += y.minimum_usd;
            pts.push((yr(y.end), cum / 1e9));
        }
        series.push(Series {
            name: format!("{} minimums", s.id),
            points: pts,
        });
    }
    Chart {
        title: "Spend commitment burn-down: cumulative draw vs minimums".into(),
        x_label: format!(
            "years since {} (draw: actual to {}, then at that run-rate)",
            format_date(t0),
            format_date(r.as_of)
        ),
        y_label: "cumulative, billions of USD".into(),
        series,
        y_range: None,
        reference: r
            .spend
            .first()
            .map(|s| (s.total_usd / 1e9, format!("{} total", s.id))),
    }
    .to_svg()
}

/// Arguments of `stratus ledger steer`.
#[derive(clap::Args)]
pub struct SteerArgs {
    /// Fleet file; the built-in fleet when omitted.
    #[arg(long)]
    fleet: Option<PathBuf>,
    /// Workloads; the demo workloads when omitted.
    #[arg(long)]
    workloads: Option<PathBuf>,
    /// Commitments file; `examples/commitments.yaml` when omitted.
    #[arg(long)]
    commitments: Option<PathBuf>,
    /// Spend commitment whose minimum to honour (default: the first spend commitment).
    #[arg(long)]
    commitment: Option<String>,
    /// Commitment year (1-based).
    #[arg(long, default_value_t = 1)]
    year: u32,
    /// Hours the reservation comparison holds each plan.
    #[arg(long, default_value_t = 720.0)]
    hours: f64,
}

/// `stratus ledger steer`: the two commitment effects on the planner, with numbers.
pub fn steer_cmd(a: &SteerArgs) -> Result<()> {
    let fleet = crate::load_fleet(a.fleet.as_deref())?.into_owned();
    let w = workloads(&fleet, a.workloads.as_deref())?;
    let opts = Options::default();
    let cs = commitments(a.commitments.as_deref(), &fleet, opts.epoch)?;
    let policy = Policy::default();
    let demo = steer::reservation(&fleet, &w, &policy, &cs, &opts, a.hours);
    println!(
        "Reserved capacity attracts work ({} h of each plan, billed with the same commitments):",
        a.hours
    );
    let mut t = table(&[
        "planner",
        "reservation utilisation",
        "unused reserved $",
        "effective $",
    ]);
    for (name, s) in [
        ("reservations hidden (list prices only)", &demo.unaware),
        ("stratus (reserved nodes at marginal cost)", &demo.aware),
    ] {
        t.add_row(vec![
            Cell::new(name),
            right(format!("{:.1}%", s.utilisation * 100.0)),
            right(usd(s.unused_usd)),
            right(usd(s.effective_usd)),
        ]);
    }
    println!("{t}");
    let c = match &a.commitment {
        Some(id) => cs
            .iter()
            .find(|c| &c.id == id)
            .ok_or_else(|| crate::bad_flag("--commitment", format!("no commitment `{id}`")))?,
        None => cs
            .iter()
            .find(|c| c.kind() == stratus_ledger::Kind::Spend)
            .ok_or_else(|| anyhow::anyhow!("no spend commitment to honour"))?,
    };
    if a.year == 0 || a.year > c.years {
        return Err(crate::bad_flag(
            "--year",
            format!(
                "{} is not a year of {}'s {}-year term",
                a.year, c.id, c.years
            ),
        ));
    }
    let Some(md) = steer::minimum_draw(&fleet, &w, &policy, c, a.year - 1) else {
        anyhow::bail!("`{}` is not a spend commitment", c.id);
    };
    println!(
        "\nMinimum draw of {} in year {} ({}): eligible capacity shown to the planner at a shadow price, bisected over {} plans; best: {}",
        md.commitment,
        md.year,
        usd(md.minimum_usd),
        md.rounds,
        md.shadow_price
            .map(|s| format!("{:.0}% of the discounted price", s * 100.0))
            .unwrap_or_else(|| "none beat ignoring the minimum".into())
    );
    let mut t = table(&[
        "plan",
        "draw $/h",
        "year's draw",
        "true-up",
        "other spend $/h",
        "year's cost",
        "placements drawing",
    ]);
    for (name, s) in [
        ("ignoring the minimum", &md.before),
        ("honouring the minimum", &md.after),
    ] {
        t.add_row(vec![
            Cell::new(name),
            right(usd(s.draw_usd_per_hour)),
            right(usd(s.year_draw_usd)),
            right(usd(s.shortfall_usd)),
            right(usd(s.other_usd_per_hour)),
            right(usd(s.year_cost_usd)),
            right(s.placements_in_scope.to_string()),
        ]);
    }
    println!("{t}");
    println!(
        "  saving {} over the year ({:.2}%)",
        usd(md.before.year_cost_usd - md.after.year_cost_usd),
        (1.0 - md.after.year_cost_usd / md.before.year_cost_usd.max(1e-9)) * 100.0
    );
    Ok(())
}
