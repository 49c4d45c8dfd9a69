//! `stratus sim run|compare` and `stratus bench sim`: load, run, present.

use crate::present::thousands;
use anyhow::{Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;
use stratus_sim::metrics::Metrics;
use stratus_sim::scenario::{self, Loaded};

/// The shipped 7-day benchmark scenario, relative to the repository.
const BENCH_SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sim-week.yaml");

fn load(path: &Path, data: Option<&Path>, seed: Option<u64>) -> Result<Loaded> {
    let data: PathBuf = data
        .map(Path::to_path_buf)
        .unwrap_or_else(stratus_catalog::default_data_dir);
    let mut ld = scenario::load(path, &data).context("reading the scenario")?;
    if let Some(s) = seed {
        ld.scenario.seed = s;
    }
    Ok(ld)
}

/// A one-line progress bar on stderr while the run goes (only when stderr is a terminal).
pub(crate) fn progress_bar() -> impl Fn(f64) + Sync {
    let tty = std::io::stderr().is_terminal();
    let last = Mutex::new(-1i64);
    move |f: f64| {
        if !tty {
            return;
        }
        let pct = (f * 100.0).floor() as i64;
        let mut l = last.lock().expect("progress lock");
        if pct != *l {
            *l = pct;
            let n = (f * 40.0) as usize;
            eprint!(
                "\r[{}{}] {pct:>3}%",
                "#".repeat(n.min(40)),
                " ".repeat(40 - n.min(40))
            );
            let _ = std::io::stderr().flush();
        }
    }
}

/// `stratus sim run`.
pub fn run(path: &Path, out: &Path, seed: Option<u64>, data: Option<&Path>) -> Result<()> {
    let ld = load(path, data, seed)?;
    let started = Instant::now();
    let bar = progress_bar();
    let m = stratus_sim::simulate(&ld, &bar);
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    stratus_sim::report::write(&m, out).with_context(|| format!("writing {}", out.display()))?;
    write_focus(&ld, &m, out)?;
    print_table(&m);
    for p in &m.policies {
        if !p.conservation.holds() {
            anyhow::bail!(
                "conservation violated for {}: {:?}",
                p.policy,
                p.conservation
            );
        }
    }
    eprintln!(
        "wrote {}/metrics.json, report.md and {} plots in {:.1} s",
        out.display(),
        stratus_sim::report::PLOTS.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Each policy's bill as FOCUS 1.2 CSV (`focus-<policy>.csv`), the fleet's reservations as
/// usage commitments, the run starting at 2026-01-01T00:00:00Z.
fn write_focus(ld: &Loaded, m: &Metrics, out: &Path) -> Result<()> {
    let opts = stratus_ledger::Options::default();
    let commitments = stratus_ledger::commitment::from_fleet(&ld.fleet, opts.epoch);
    for p in &m.policies {
        let rows = stratus_ledger::build(&ld.fleet, &commitments, &p.usage, &opts)?;
        let path = out.join(format!(
            "focus-{}.csv",
            stratus_sim::report::slug(&p.policy)
        ));
        let f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        stratus_ledger::write_csv(&rows, "lab", std::io::BufWriter::new(f))?;
    }
    Ok(())
}

/// `stratus sim compare`.
pub fn compare(dir: &Path) -> Result<()> {
    let file = if dir.is_dir() {
        dir.join("metrics.json")
    } else {
        dir.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let m: Metrics = serde_json::from_str(&text).map_err(|e| stratus_model::InputError {
        file: file.display().to_string(),
        line: Some(e.line()),
        field: None,
        reason: format!("not a metrics.json written by `stratus sim run`: {e}"),
    })?;
    print_table(&m);
    Ok(())
}

fn print_table(m: &Metrics) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec![Cell::new(format!("{} (seed {})", m.scenario, m.seed))];
    header.extend(m.policies.iter().map(|p| Cell::new(&p.policy)));
    t.set_header(header);
    for (k, vals) in stratus_sim::report::table(m) {
        let mut row = vec![Cell::new(k)];
        row.extend(
            vals.into_iter()
                .map(|v| Cell::new(v).set_alignment(CellAlignment::Right)),
        );
        t.add_row(row);
    }
    println!("{t}");
}

/// `stratus bench sim`.
pub fn bench(path: Option<&Path>, data: Option<&Path>) -> Result<()> {
    let path = path.unwrap_or(Path::new(BENCH_SCENARIO));
    let ld = load(path, data, None)?;
    println!(
        "stratus bench sim: {} ({} h, {} pools, {} services, {} jobs); wall clock, this machine",
        ld.scenario.name,
        ld.scenario.horizon_hours,
        ld.fleet.pool_count(),
        ld.services.inference.len(),
        ld.jobs.len()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>8} {:>9} {:>14} {:>12}",
        "policy (one core)", "events", "requests", "wall s", "control s", "events/s", "engine ev/s"
    );
    for (s, sizing) in ld.strategies.iter().zip(&ld.sizings) {
        let (m, c) = stratus_sim::engine::run_measured_sized(&ld, s.clone(), *sizing);
        let wall = c.wall.as_secs_f64();
        let engine = (c.wall - c.control).as_secs_f64().max(1e-9);
        println!(
            "{:<22} {:>10} {:>10} {:>8.2} {:>9.2} {:>14} {:>12}",
            m.policy,
            thousands(c.events),
            thousands(m.totals.requests),
            wall,
            c.control.as_secs_f64(),
            thousands((c.events as f64 / wall) as u64),
            thousands((c.events as f64 / engine) as u64),
        );
    }
    println!(
        "events/s counts the whole run; engine ev/s leaves out the controller's planning time."
    );
    let t = Instant::now();
    let m = stratus_sim::simulate(&ld, &|_| {});
    println!(
        "whole scenario, {} policies on 2 threads: {:.2} s wall for {} requests per policy",
        m.policies.len(),
        t.elapsed().as_secs_f64(),
        thousands(m.policies.first().map(|p| p.totals.requests).unwrap_or(0))
    );
    Ok(())
}
