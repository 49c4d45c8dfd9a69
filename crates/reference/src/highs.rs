//! The model as a MILP (or its LP relaxation) in CPLEX LP format, solved by the HiGHS
//! command-line solver.
//!
//! Variables: `x{i}_{k}` — item (or group of identical items) `i` takes option `k`;
//! `z{i}` — left out; `p{s}_{j}` / `r{s}_{j}` — service `s` has something on its `j`-th
//! provider / region. Rows: each item takes one option or is left out; each slot's nodes; each
//! region's megawatts; for each service, `p ≤ Σ x` on that provider (likewise regions) and
//! `Σ p + k·z_i ≥ k` for each of its items (whatever is placed spans `k` providers).

use crate::model::{identical_groups, Model};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How to solve.
#[derive(Debug, Clone)]
pub struct SolveOptions {
    /// Solve the LP relaxation instead of the MILP.
    pub relax: bool,
    /// Merge items with identical options into one general-integer variable per option (exact;
    /// far fewer variables and no symmetry).
    pub aggregate: bool,
    /// HiGHS's time limit, seconds.
    pub time_limit_s: f64,
    /// The HiGHS binary.
    pub highs: PathBuf,
}

/// How the solve ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Proven optimal.
    Optimal,
    /// Stopped by the time limit (a MILP may still have an incumbent).
    TimeLimit,
    /// Anything else HiGHS reported.
    Other(String),
}

/// A solve's result.
#[derive(Debug, Clone)]
pub struct Solution {
    /// Status.
    pub status: Status,
    /// Objective of the solution found, $/h: recomputed from the choice by the model for a
    /// MILP, HiGHS's value for an LP.
    pub objective: f64,
    /// HiGHS's proven lower bound (the LP value for a relaxation).
    pub dual_bound: f64,
    /// Option per item (MILP only; empty for an LP).
    pub choice: Vec<Option<usize>>,
    /// Wall-clock seconds HiGHS ran.
    pub seconds: f64,
    /// Columns and rows of the model written.
    pub size: (usize, usize),
}

/// The HiGHS binary: `$STRATUS_HIGHS`, else `highs` on the `PATH`, else the one the `highsbox`
/// Python package carries (`pip install highsbox`).
pub fn find_highs() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STRATUS_HIGHS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("STRATUS_HIGHS={} is not a file", p.display()))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("highs");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import highsbox,sys; sys.stdout.write(highsbox.highs_bin_path())",
        ])
        .output()
        .map_err(|e| format!("no HiGHS: python3 could not run ({e})"))?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && p.is_file() {
        Ok(p)
    } else {
        Err("no HiGHS binary: set STRATUS_HIGHS, put `highs` on the PATH, or `pip install highsbox`".into())
    }
}

/// A name for the model's files that no other solve of this process uses.
fn work_dir() -> std::io::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "stratus-reference-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// One term per line chunk: the LP format allows any line breaks between terms.
struct Row(String, usize);

impl Row {
    fn new(head: &str) -> Row {
        Row(format!(" {head}:"), 0)
    }
    fn term(&mut self, coef: f64, var: &str) {
        if self.1 > 0 && self.1.is_multiple_of(8) {
            self.0.push_str("\n  ");
        }
        self.1 += 1;
        if coef >= 0.0 {
            let _ = write!(self.0, " + {coef} {var}");
        } else {
            let _ = write!(self.0, " - {} {var}", -coef);
        }
    }
}

/// Write the model (see the module documentation) and solve it.
pub fn solve(m: &Model, opt: &SolveOptions) -> Result<Solution, String> {
    let groups = if opt.aggregate {
        identical_groups(m)
    } else {
        (0..m.items.len()).map(|i| vec![i]).collect()
    };
    let mut obj = Row::new("obj");
    let mut rows: Vec<String> = Vec::new();
    let mut slot_rows: Vec<Row> = (0..m.slots.len())
        .map(|s| Row::new(&format!("s{s}")))
        .collect();
    let mut region_rows: Vec<Row> = (0..m.regions.len())
        .map(|r| Row::new(&format!("w{r}")))
        .collect();
    let mut bounds = String::new();
    let mut general = String::new();
    let mut binary = String::new();
    let mut columns = 0usize;
    // Per group: its variables (index into x names by option).
    let mut group_of_item = vec![usize::MAX; m.items.len()];
    for (g, members) in groups.iter().enumerate() {
        for &i in members {
            group_of_item[i] = g;
        }
        let it = &m.items[members[0]];
        if it.excluded {
            continue;
        }
        let count = members.len() as f64;
        let int_section = if members.len() > 1 {
            &mut general
        } else {
            &mut binary
        };
        let mut one = Row::new(&format!("a{g}"));
        for (k, o) in it.options.iter().enumerate() {
            let x = format!("x{g}_{k}");
            obj.term(o.cost, &x);
            one.term(1.0, &x);
            for &(s, n) in &o.uses {
                slot_rows[s].term(n as f64, &x);
            }
            region_rows[o.region].term(o.watts / 1e6, &x);
            let _ = writeln!(bounds, " 0 <= {x} <= {count}");
            let _ = write!(int_section, " {x}");
            columns += 1;
        }
        let z = format!("z{g}");
        obj.term(it.penalty, &z);
        one.term(1.0, &z);
        let _ = writeln!(bounds, " 0 <= {z} <= {count}");
        let _ = write!(int_section, " {z}");
        columns += 1;
        rows.push(format!("{} = {count}", one.0));
    }
    for (s, row) in slot_rows.into_iter().enumerate() {
        if row.1 > 0 {
            rows.push(format!("{} <= {}", row.0, m.slots[s].nodes));
        }
    }
    for (r, row) in region_rows.into_iter().enumerate() {
        if row.1 > 0 {
            rows.push(format!("{} <= {}", row.0, m.region_cap_watts[r] / 1e6));
        }
    }
    for (si, s) in m.services.iter().enumerate() {
        if s.items.iter().all(|&i| m.items[i].excluded) {
            continue;
        }
        for (tag, need, key) in [("p", s.min_providers, 0usize), ("r", s.min_regions, 1usize)] {
            let mut spots: Vec<usize> = Vec::new();
            let mut per: Vec<Row> = Vec::new();
            for &i in &s.items {
                let g = group_of_item[i];
                for (k, o) in m.items[i].options.iter().enumerate() {
                    let at = if key == 0 { o.provider } else { o.region };
                    let j = match spots.iter().position(|&x| x == at) {
                        Some(j) => j,
                        None => {
                            spots.push(at);
                            per.push(Row::new(&format!("{tag}{si}_{}", spots.len() - 1)));
                            spots.len() - 1
                        }
                    };
                    per[j].term(1.0, &format!("x{g}_{k}"));
                }
            }
            let mut ys = Vec::new();
            for (j, mut row) in per.into_iter().enumerate() {
                let y = format!("{tag}{si}_{j}v");
                row.term(-1.0, &y);
                rows.push(format!("{} >= 0", row.0));
                let _ = write!(binary, " {y}");
                let _ = writeln!(bounds, " 0 <= {y} <= 1");
                columns += 1;
                ys.push(y);
            }
            for &i in s.items.iter().filter(|&&i| !m.items[i].excluded) {
                let mut row = Row::new(&format!("{tag}{si}n{i}"));
                for y in &ys {
                    row.term(1.0, y);
                }
                row.term(need as f64, &format!("z{}", group_of_item[i]));
                rows.push(format!("{} >= {need}", row.0));
            }
        }
    }
    let mut lp = String::with_capacity(1 << 16);
    let _ = writeln!(lp, "Minimize\n{}\nSubject To", obj.0);
    for r in &rows {
        let _ = writeln!(lp, "{r}");
    }
    let _ = writeln!(lp, "Bounds\n{bounds}");
    if !opt.relax {
        if !general.is_empty() {
            let _ = writeln!(lp, "General\n{general}");
        }
        if !binary.is_empty() {
            let _ = writeln!(lp, "Binary\n{binary}");
        }
    }
    lp.push_str("End\n");
    let dir = work_dir().map_err(|e| format!("temporary directory: {e}"))?;
    let result = run(m, opt, &dir, &lp, &groups, (columns, rows.len()));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    m: &Model,
    opt: &SolveOptions,
    dir: &Path,
    lp: &str,
    groups: &[Vec<usize>],
    size: (usize, usize),
) -> Result<Solution, String> {
    let model = dir.join("model.lp");
    let options = dir.join("options.txt");
    let sol = dir.join("model.sol");
    std::fs::write(&model, lp).map_err(|e| format!("{}: {e}", model.display()))?;
    std::fs::write(
        &options,
        format!(
            "mip_rel_gap = 1e-9\nmip_abs_gap = 1e-6\nthreads = 1\ntime_limit = {}\nlog_file = {}\n",
            opt.time_limit_s,
            dir.join("highs.log").display()
        ),
    )
    .map_err(|e| format!("{}: {e}", options.display()))?;
    let mut cmd = Command::new(&opt.highs);
    if let Some(lib) = opt
        .highs
        .parent()
        .and_then(|b| b.parent())
        .map(|d| d.join("lib"))
    {
        if lib.is_dir() {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
    }
    let t = Instant::now();
    let out = cmd
        .current_dir(dir)
        .arg("--model_file")
        .arg(&model)
        .arg("--options_file")
        .arg(&options)
        .arg("--solution_file")
        .arg(&sol)
        .output()
        .map_err(|e| format!("{}: {e}", opt.highs.display()))?;
    let seconds = t.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stdout);
    let text = std::fs::read_to_string(&sol)
        .map_err(|e| format!("HiGHS wrote no solution ({e}); its output:\n{log}"))?;
    let mut lines = text.lines();
    let status = match (lines.next(), lines.next()) {
        (Some("Model status"), Some(s)) => match s.trim() {
            "Optimal" => Status::Optimal,
            "Time limit reached" => Status::TimeLimit,
            other => Status::Other(other.to_string()),
        },
        _ => return Err(format!("unexpected HiGHS solution file:\n{text}")),
    };
    let mut values: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    let mut objective = f64::NAN;
    let mut in_columns = false;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("Objective ") {
            objective = v.trim().parse().unwrap_or(f64::NAN);
        } else if l.starts_with("# Columns") {
            in_columns = true;
        } else if l.starts_with('#') {
            in_columns = false;
        } else if in_columns {
            if let Some((name, v)) = l.split_once(' ') {
                values.insert(name, v.trim().parse().unwrap_or(0.0));
            }
        }
    }
    let dual_bound = if opt.relax {
        objective
    } else {
        log.lines()
            .find_map(|l| l.trim().strip_prefix("Dual bound"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NEG_INFINITY)
    };
    let mut choice = Vec::new();
    if !opt.relax && objective.is_finite() {
        choice = vec![None; m.items.len()];
        for (g, members) in groups.iter().enumerate() {
            let it = &m.items[members[0]];
            let mut next = members.iter();
            for k in 0..it.options.len() {
                let n = values
                    .get(format!("x{g}_{k}").as_str())
                    .copied()
                    .unwrap_or(0.0)
                    .round() as usize;
                for _ in 0..n {
                    if let Some(&i) = next.next() {
                        choice[i] = Some(k);
                    }
                }
            }
        }
        objective = m.objective(&choice);
    }
    Ok(Solution {
        status,
        objective,
        dual_bound,
        choice,
        seconds,
        size,
    })
}
