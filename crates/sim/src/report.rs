//! Outputs of `stratus sim run`: `metrics.json` (the data), `report.md` (for a person) and SVG
//! plots, plus the side-by-side table `stratus sim compare` prints.

use crate::metrics::{Metrics, PolicyMetrics};
use crate::svg::{Chart, Series};
use std::fmt::Write as _;
use std::path::Path;

/// Files written by [`write`], in order.
pub const PLOTS: [&str; 6] = [
    "cost.svg",
    "slo.svg",
    "carbon.svg",
    "utilisation.svg",
    "commitment.svg",
    "goodput.svg",
];

/// Write `metrics.json`, `report.md`, the plots and each policy's usage records
/// (`usage-<policy>.jsonl`) into `dir` (created if missing).
pub fn write(m: &Metrics, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut json = serde_json::to_string_pretty(m).expect("metrics serialize");
    json.push('\n');
    std::fs::write(dir.join("metrics.json"), json)?;
    for (name, chart) in PLOTS.iter().zip(charts(m)) {
        std::fs::write(dir.join(name), chart.to_svg())?;
    }
    std::fs::write(dir.join("report.md"), markdown(m))?;
    for p in &m.policies {
        let mut out = String::new();
        for u in &p.usage {
            out.push_str(&serde_json::to_string(u).expect("usage serializes"));
            out.push('\n');
        }
        std::fs::write(dir.join(format!("usage-{}.jsonl", slug(&p.policy))), out)?;
    }
    Ok(())
}

/// A policy name as a file-name part: lowercase letters, digits and dashes.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_string()
}

fn per_hour(v: &[f64]) -> Vec<(f64, f64)> {
    v.iter().enumerate().map(|(h, &x)| (h as f64, x)).collect()
}

fn cumulative(v: &[f64]) -> Vec<(f64, f64)> {
    let mut acc = 0.0;
    let mut out = vec![(0.0, 0.0)];
    for (h, &x) in v.iter().enumerate() {
        acc += x;
        out.push(((h + 1) as f64, acc));
    }
    out
}

fn chart(title: &str, y: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: "simulated hour".into(),
        y_label: y.into(),
        series,
        ..Default::default()
    }
}

fn each(m: &Metrics, f: impl Fn(&PolicyMetrics) -> Vec<(f64, f64)>) -> Vec<Series> {
    m.policies
        .iter()
        .map(|p| Series {
            name: p.policy.clone(),
            points: f(p),
        })
        .collect()
}

/// The report's charts, in [`PLOTS`] order.
pub fn charts(m: &Metrics) -> Vec<Chart> {
    let mut slo = chart(
        "Inference SLO attainment per hour",
        "share of requests within SLO",
        each(m, |p| per_hour(&p.hourly.slo_attainment)),
    );
    slo.y_range = Some((0.0, 1.0));
    // Utilisation by provider: the first policy (the product) in full, one line per provider.
    let util = m
        .policies
        .first()
        .map(|p| {
            p.hourly
                .utilisation_by_provider
                .iter()
                .map(|(prov, v)| Series {
                    name: prov.clone(),
                    points: per_hour(v),
                })
                .collect()
        })
        .unwrap_or_default();
    let util = chart(
        &format!(
            "Chips in use by provider ({})",
            m.policies.first().map(|p| p.policy.as_str()).unwrap_or("")
        ),
        "share of the provider's chips",
        util,
    );
    let mut commit = chart(
        "Commitment burn-down: committed node-hours used (cumulative)",
        "node-hours",
        each(m, |p| cumulative(&p.hourly.committed_node_hours_used)),
    );
    if let Some(p) = m.policies.first() {
        let avail: f64 = p.hourly.committed_node_hours_available.iter().sum();
        commit.reference = Some((avail, "committed node-hours available".into()));
    }
    vec![
        chart(
            "Cost per hour (billed, incl. commitment fees)",
            "USD per hour",
            each(m, |p| per_hour(&p.hourly.cost_usd)),
        ),
        slo,
        chart(
            "Emissions per hour (location-based)",
            "tCO2e per hour",
            each(m, |p| per_hour(&p.hourly.tco2e)),
        ),
        util,
        commit,
        chart(
            "Training and batch progress (cumulative)",
            "H100-equivalent chip-hours",
            each(m, |p| cumulative(&p.hourly.goodput_chip_hours)),
        ),
    ]
}

fn money(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("${:.2}M", x / 1e6)
    } else if x.abs() >= 1e3 {
        format!("${:.1}k", x / 1e3)
    } else {
        format!("${x:.0}")
    }
}

/// Rows of the side-by-side comparison: (metric, value per policy).
pub fn table(m: &Metrics) -> Vec<(String, Vec<String>)> {
    let col = |f: &dyn Fn(&PolicyMetrics) -> String| m.policies.iter().map(f).collect::<Vec<_>>();
    let mut rows = vec![
        ("cost".to_string(), col(&|p| money(p.totals.cost_usd))),
        ("  on-demand".into(), col(&|p| money(cat(p, "on-demand")))),
        ("  spot".into(), col(&|p| money(cat(p, "spot")))),
        (
            "  committed (fees)".into(),
            col(&|p| money(cat(p, "committed"))),
        ),
        (
            "commitment utilisation".into(),
            col(&|p| format!("{:.1}%", p.totals.commitment_utilisation * 100.0)),
        ),
        ("requests".into(), col(&|p| p.totals.requests.to_string())),
        (
            "SLO attainment".into(),
            col(&|p| format!("{:.2}%", p.totals.slo_attainment * 100.0)),
        ),
        (
            "dropped requests".into(),
            col(&|p| p.totals.dropped.values().sum::<u64>().to_string()),
        ),
        (
            "latency p50 / p99 ms".into(),
            col(&|p| {
                format!(
                    "{:.0} / {:.0}",
                    p.totals.latency_ms.p50, p.totals.latency_ms.p99
                )
            }),
        ),
        (
            "TTFT p50 / p99 ms".into(),
            col(&|p| format!("{:.0} / {:.0}", p.totals.ttft_ms.p50, p.totals.ttft_ms.p99)),
        ),
        (
            "goodput chip-hours".into(),
            col(&|p| format!("{:.0}", p.totals.goodput_chip_hours)),
        ),
        (
            "lost chip-hours".into(),
            col(&|p| {
                format!(
                    "{:.0}",
                    p.totals.lost_chip_hours.values().sum::<f64>().max(0.0)
                )
            }),
        ),
        (
            "jobs finished".into(),
            col(&|p| format!("{} / {}", p.conservation.finished, p.conservation.jobs)),
        ),
        (
            "JCT mean / p99 h".into(),
            col(&|p| {
                format!(
                    "{:.1} / {:.1}",
                    p.totals.jct_hours.mean, p.totals.jct_hours.p99
                )
            }),
        ),
        (
            "energy MWh".into(),
            col(&|p| format!("{:.0}", p.totals.energy_mwh)),
        ),
        ("tCO2e".into(), col(&|p| format!("{:.1}", p.totals.tco2e))),
        (
            "migrations".into(),
            col(&|p| p.totals.controller.migrations.to_string()),
        ),
        (
            "launches / losses".into(),
            col(&|p| {
                format!(
                    "{} / {}",
                    p.totals.controller.launches, p.totals.controller.losses
                )
            }),
        ),
        (
            "capacity errors".into(),
            col(&|p| p.totals.controller.capacity_errors.to_string()),
        ),
    ];
    rows.push((
        "conservation".into(),
        col(&|p| {
            if p.conservation.holds() {
                "ok"
            } else {
                "VIOLATED"
            }
            .into()
        }),
    ));
    rows
}

fn cat(p: &PolicyMetrics, c: &str) -> f64 {
    p.totals.cost_by_category.get(c).copied().unwrap_or(0.0)
}

/// `report.md`: what ran, the comparison, the plots, and how each figure is computed.
pub fn markdown(m: &Metrics) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Simulation report: {}\n", m.scenario);
    let _ = writeln!(
        s,
        "Seed {}, {} simulated hours. Every policy ran on the same requests, jobs and faults.\n",
        m.seed, m.horizon_hours
    );
    let _ = writeln!(s, "## Inputs\n");
    for i in &m.inputs {
        let _ = writeln!(s, "- {i}");
    }
    let _ = writeln!(s, "\n## Policies side by side\n");
    let _ = write!(s, "| metric |");
    for p in &m.policies {
        let _ = write!(s, " {} |", p.policy);
    }
    let _ = write!(s, "\n|---|");
    for _ in &m.policies {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for (k, vals) in table(m) {
        let _ = write!(s, "| {} |", k.trim_start());
        for v in vals {
            let _ = write!(s, " {v} |");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\n## Dropped requests by reason\n");
    for p in &m.policies {
        if p.totals.dropped.is_empty() {
            let _ = writeln!(s, "- {}: none", p.policy);
        } else {
            let list: Vec<String> = p
                .totals
                .dropped
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            let _ = writeln!(s, "- {}: {}", p.policy, list.join(", "));
        }
    }
    let _ = writeln!(s, "\n## Plots\n");
    for (f, c) in PLOTS.iter().zip(charts(m)) {
        let _ = writeln!(s, "### {}\n\n![{}]({f})\n", c.title, c.title);
    }
    let _ = writeln!(
        s,
        "## How the figures are computed\n\n\
- **Cost**: on-demand and spot node-hours at list price from launch until the nodes are released (booting and stopping included), plus every commitment's fee, which is paid whether used or not.\n\
- **Latency** of a request: the RTT between the user's location and the serving region (measured inter-region latency, great-circle estimate where unmeasured) plus the time it waits for a free slot on a replica. A request is within SLO when that is at most the service's `latency_slo_ms`. Each replica serves `slots_per_replica` requests at once; a request occupies a slot for `slots_per_replica / rps × work / mean work`, where work = generated tokens + `prefill_weight` × prompt tokens and `rps` is the replica's rated requests per second on that accelerator. TTFT adds prefill (prompt tokens / `prefill_tokens_per_s`, scaled by the accelerator's relative inference speed).\n\
- **Goodput**: training and batch progress in H100-equivalent chip-hours (chips × the accelerator's relative training throughput × hours). When a provider takes an instance away (preemption, outage, capacity loss) the progress since the last checkpoint is lost; a stop by the controller (a migration) checkpoints first.\n\
- **Energy**: running nodes × (chips × TDP × utilisation + host) × PUE. **Emissions**: location-based, energy × the region's grid intensity for that hour (an hourly series where the scenario maps one, the yearly average elsewhere).\n\
- **Conservation**: every request is served, dropped with a reason, or still queued at the horizon; every job that arrived is finished, running, waiting, or failed with a reason."
    );
    s
}
