//! `stratus carbon shift`: deferrable batch jobs shifted in time and space on real hourly
//! grid-intensity series, against carbon-agnostic placement ([`stratus_studies::shift`]).

use anyhow::{Context, Result};
use std::path::PathBuf;
use stratus_plan::filter::{self, Ask, Verdict};
use stratus_studies::shift::{self, Job, Site};

/// Arguments of `stratus carbon shift`.
#[derive(clap::Args)]
pub struct ShiftArgs {
    /// Workload file whose batch jobs are shifted.
    #[arg(long, default_value = "examples/demo-workloads.yaml")]
    workloads: PathBuf,
    /// The data directory with the hourly carbon series (default: ../shared/data or
    /// STRATUS_DATA).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Day of 2020 the jobs are released on (hour 0).
    #[arg(long, default_value_t = 14)]
    start_day: u32,
    /// Hour of that day (UTC) the jobs are submitted.
    #[arg(long, default_value_t = 9)]
    release_hour: u32,
    /// Deadline of jobs that have none, hours after release.
    #[arg(long, default_value_t = 168)]
    horizon_hours: u32,
    /// Carbon price weighed against dollars, $/tCO2e.
    #[arg(long, default_value_t = 100.0)]
    carbon_price: f64,
}

/// The three real series: (jurisdiction, file).
const SERIES: [(&str, &str); 3] = [
    ("FR", "carbon_intensity/hourly_lets_wait_awhile/fr_ci.csv"),
    ("GB", "carbon_intensity/hourly_lets_wait_awhile/gb_ci.csv"),
    ("DE", "carbon_intensity/hourly_lets_wait_awhile/ger_ci.csv"),
];

/// Run the command.
pub fn run(a: &ShiftArgs) -> Result<()> {
    let fleet = stratus_catalog::builtin();
    let w =
        stratus_model::parse::load_workloads(&a.workloads, fleet).context("reading workloads")?;
    let data = a
        .data
        .clone()
        .unwrap_or_else(stratus_catalog::default_data_dir);
    // Sites: every pool of the fleet's regions in the three jurisdictions, under that
    // jurisdiction's hourly series (cut to the release hour per run).
    let mut series = Vec::new();
    for (jur, file) in SERIES {
        series.push((
            jur,
            stratus_sim::trace::load_carbon_series(&data.join(file), 2020)?,
        ));
    }
    let mut sites: Vec<Site> = Vec::new();
    // Per site: what the planner's filter chain sees of it, with the node shape that sizes an
    // ask, and which series it follows.
    struct Meta<'f> {
        site: filter::Site<'f>,
        chips_per_node: u32,
        node_cap_watts: f64,
        series: usize,
    }
    let cap_util = stratus_plan::Policy::default().power_cap_utilisation;
    let mut site_meta: Vec<Meta> = Vec::new();
    for (k, (jur, _)) in series.iter().enumerate() {
        for (_, r, pool) in fleet.pools() {
            if !r.jurisdictions.iter().any(|j| j == jur) || pool.nodes == 0 {
                continue;
            }
            let usd_per_chip_hour = pool.on_demand_per_node_hour.0 / pool.chips_per_node as f64;
            sites.push(Site {
                name: pool.id.clone(),
                intensity: Vec::new(),
                usd_per_chip_hour,
                kw_per_chip: pool.node_it_watts().0 * r.pue / pool.chips_per_node as f64 / 1e3,
                capacity_chips: Some(pool.nodes * pool.chips_per_node),
            });
            site_meta.push(Meta {
                site: filter::Site {
                    accelerator: pool.accelerator,
                    jurisdictions: &r.jurisdictions,
                    spot: false,
                    domain_chips: pool.domain_chips,
                    nodes: pool.nodes,
                    cap_watts: r.power_cap_mw.to_watts().0,
                    usd_per_chip_hour,
                    rtt_ms: 0.0,
                },
                chips_per_node: pool.chips_per_node,
                node_cap_watts: pool.node_watts(cap_util).0 * r.pue,
                series: k,
            });
        }
    }
    let at_day = |sites: &mut Vec<Site>, day: u32| {
        let from = (day * 24 + a.release_hour) as usize;
        for (s, m) in sites.iter_mut().zip(&site_meta) {
            let v = &series[m.series].1;
            s.intensity = v[from.min(v.len())..].to_vec();
        }
    };
    let jobs: Vec<Job> = w
        .batch
        .iter()
        .map(|b| {
            let deadline = b
                .deadline_hours
                .map_or(a.horizon_hours, |d| d.floor() as u32);
            // The planner's own filter chain decides which sites a job may use.
            let allowed = site_meta
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let speed = m.site.accelerator.profile().rel_training.max(1e-6);
                    let hours = (b.work_chip_hours.0 / (b.chips as f64 * speed))
                        .ceil()
                        .max(1.0);
                    let nodes = b.chips.div_ceil(m.chips_per_node);
                    let ask = Ask {
                        accelerators: &b.accelerators,
                        residency: &b.residency,
                        spot: b.spot,
                        one_domain_chips: None,
                        nodes,
                        watts: nodes as f64 * m.node_cap_watts,
                        run_hours: hours,
                        deadline_hours: Some(deadline as f64),
                        max_usd_per_chip_hour: b.max_usd_per_chip_hour.map(|p| p.0),
                        latency_slo_ms: None,
                    };
                    (filter::check(&ask, &m.site) == Verdict::Fit).then_some((i, hours as u32))
                })
                .collect();
            Job {
                name: b.name.clone(),
                chips: b.chips,
                release: 0,
                deadline,
                sites: allowed,
            }
        })
        .collect();
    at_day(&mut sites, a.start_day);
    let s = shift::shift(&jobs, &sites, a.carbon_price);
    println!(
        "stratus carbon shift: {} batch jobs of {}, released at {:02}:00 UTC on day {} of 2020; {} pools in FR, GB and DE under their 2020 hourly grid intensity; carbon price ${}/tCO2e",
        jobs.len(),
        a.workloads.display(),
        a.release_hour,
        a.start_day,
        sites.len(),
        a.carbon_price
    );
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "job",
        "chips",
        "deadline h",
        "agnostic: site",
        "start h",
        "kgCO2e",
        "$",
        "aware: site",
        "start h",
        "kgCO2e",
        "$",
    ]);
    let cell = |p: &Option<shift::Placement>| -> [String; 4] {
        match p {
            Some(p) => [
                sites[p.site].name.clone(),
                p.start.to_string(),
                format!("{:.1}", p.tonnes * 1e3),
                format!("{:.0}", p.usd),
            ],
            None => ["unplaced".into(), "-".into(), "-".into(), "-".into()],
        }
    };
    for (k, j) in jobs.iter().enumerate() {
        let mut row = vec![j.name.clone(), j.chips.to_string(), j.deadline.to_string()];
        row.extend(cell(&s.agnostic[k]));
        row.extend(cell(&s.aware[k]));
        t.add_row(row);
    }
    println!("{t}");
    let line = |label: &str, ((at, ad), (wt, wd)): ((f64, f64), (f64, f64))| {
        let saved = at - wt;
        println!(
            "{label}: carbon-agnostic {:.3} tCO2e for ${:.0}; carbon-aware {:.3} tCO2e for ${:.0}: {:.3} t saved ({:.1} %) for {}${:.0}{}",
            at,
            ad,
            wt,
            wd,
            saved,
            if at > 0.0 { saved / at * 100.0 } else { 0.0 },
            if wd >= ad { "+" } else { "-" },
            (wd - ad).abs(),
            if saved > 0.0 && wd > ad {
                format!(" (${:.0} per tCO2e avoided)", (wd - ad) / saved)
            } else {
                String::new()
            }
        );
    };
    line(&format!("day {}", a.start_day), s.totals());
    // The same jobs released on every day of 2020 whose horizon fits in the year.
    let longest = jobs.iter().map(|j| j.deadline).max().unwrap_or(0);
    let days = (series[0].1.len() as u32).saturating_sub(longest + a.release_hour) / 24;
    let mut sum = ((0.0, 0.0), (0.0, 0.0));
    for day in 0..days {
        at_day(&mut sites, day);
        let ((at, ad), (wt, wd)) = shift::shift(&jobs, &sites, a.carbon_price).totals();
        sum.0 .0 += at;
        sum.0 .1 += ad;
        sum.1 .0 += wt;
        sum.1 .1 += wd;
    }
    line(&format!("every day of 2020 ({days} releases)"), sum);
    println!("method: location-based accounting, energy (chips × TDP and host share × PUE) in each hour times that hour's average grid intensity; jobs run uninterrupted at one site, in deadline order, each at the (site, start) with the lowest $ + carbon price × tCO2e among those with room; agnostic = cheapest site, earliest start");
    Ok(())
}
