//! `stratus capacity plan`: presentation of [`stratus_studies::buildout`].

use anyhow::Result;
use std::path::PathBuf;
use stratus_studies::buildout::{self, Constants, Limits, Target};

/// Arguments of `stratus capacity plan`.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// Facility power added per week, GW.
    #[arg(long)]
    gw_per_week: f64,
    /// First year of the ramp.
    #[arg(long)]
    from: u32,
    /// Last year of the ramp (inclusive).
    #[arg(long)]
    to: u32,
    /// Facility MW of one site.
    #[arg(long, default_value_t = 1000.0)]
    site_mw: f64,
    /// Grid intensity to report emissions at, `NAME=GRAMS_PER_KWH` (repeat; default: the
    /// cleanest, median and dirtiest region of the built-in fleet).
    #[arg(long)]
    grid: Vec<String>,
    /// Capex per unit (node or rack) of a system, `SYSTEM=USD` (repeat).
    #[arg(long)]
    capex: Vec<String>,
    /// Energy price for opex, $/MWh.
    #[arg(long)]
    energy_price: Option<f64>,
    /// Limit: accelerators delivered per year.
    #[arg(long)]
    max_chips_per_year: Option<f64>,
    /// Limit: sites built per year.
    #[arg(long)]
    max_sites_per_year: Option<f64>,
    /// Limit: new grid interconnection per year, GW.
    #[arg(long)]
    max_grid_gw_per_year: Option<f64>,
    /// Limit: capital spent per year, $.
    #[arg(long)]
    max_capex_per_year: Option<f64>,
    /// Constants file (default: the built-in one, crates/studies/data/buildout.yaml).
    #[arg(long)]
    constants: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `NAME=NUMBER`; a bad one is an input error naming the flag (exit code 2).
fn pair(s: &str, flag: &str) -> Result<(String, f64)> {
    let Some((k, v)) = s.rsplit_once('=') else {
        return Err(crate::bad_flag(
            flag,
            format!("`{s}`: expected NAME=NUMBER"),
        ));
    };
    match v.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok((k.trim().to_string(), n)),
        _ => Err(crate::bad_flag(
            flag,
            format!("`{s}`: `{v}` is not a non-negative number"),
        )),
    }
}

/// The cleanest, median and dirtiest regions of the built-in fleet.
fn default_grids() -> Vec<(String, f64)> {
    let mut r: Vec<(String, f64)> = stratus_catalog::builtin()
        .regions()
        .map(|(p, r)| (format!("{}:{}", p.name, r.name), r.carbon_g_per_kwh.0))
        .filter(|(_, g)| *g > 0.0)
        .collect();
    r.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    if r.is_empty() {
        return vec![("US average (EIA 2023)".into(), 367.0)];
    }
    vec![r[0].clone(), r[r.len() / 2].clone(), r[r.len() - 1].clone()]
}

fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e12 {
        format!("{:.2}T", x / 1e12)
    } else if a >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Run the command.
pub fn plan(a: &PlanArgs) -> Result<()> {
    let c = match &a.constants {
        Some(p) => Constants::load(p)?,
        None => Constants::builtin(),
    };
    let grids = if a.grid.is_empty() {
        default_grids()
    } else {
        a.grid
            .iter()
            .map(|g| pair(g, "--grid"))
            .collect::<Result<_>>()?
    };
    let t = Target {
        gw_per_week: a.gw_per_week,
        from: a.from,
        to: a.to,
        site_mw: a.site_mw,
        grids,
        capex_per_unit: a
            .capex
            .iter()
            .map(|g| pair(g, "--capex"))
            .collect::<Result<_>>()?,
        energy_usd_per_mwh: a.energy_price,
        limits: Limits {
            chips_per_year: a.max_chips_per_year,
            sites_per_year: a.max_sites_per_year,
            grid_gw_per_year: a.max_grid_gw_per_year,
            capex_per_year: a.max_capex_per_year,
        },
    };
    let b = buildout::plan(&t, &c)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
        return Ok(());
    }
    println!(
        "stratus capacity plan: +{} GW of facility power per week, {}–{}; PUE {}, mean load {} of nameplate, sites of {} MW",
        a.gw_per_week, a.from, a.to, c.pue, c.utilization, a.site_mw
    );
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    let mut header = vec![
        "year".to_string(),
        "system".into(),
        "+GW".into(),
        "GW online".into(),
        "+units".into(),
        "+racks".into(),
        "+accelerators".into(),
        "accelerators online".into(),
        "+sites".into(),
        "energy TWh".into(),
        "US homes".into(),
    ];
    for (n, _) in &t.grids {
        header.push(format!("tCO2e {n}"));
    }
    header.push("capex $".into());
    header.push("energy $".into());
    table.set_header(header);
    for y in &b.years {
        let mut row = vec![
            y.year.to_string(),
            y.system.clone(),
            format!("{:.1}", y.added_gw),
            format!("{:.1}", y.total_gw),
            format!("{} {}s", si(y.units as f64), y.unit),
            si(y.racks as f64),
            si(y.chips as f64),
            si(y.total_chips as f64),
            y.sites.to_string(),
            format!("{:.1}", y.energy_twh),
            si(y.homes),
        ];
        for (_, e) in &y.emissions_t {
            row.push(si(*e));
        }
        row.push(y.capex_usd.map_or("-".into(), si));
        row.push(y.opex_usd.map_or("-".into(), si));
        table.add_row(row);
    }
    println!("{table}");
    for (n, g) in &t.grids {
        println!("grid {n}: {g:.0} gCO2e/kWh");
    }
    let (twh, homes) = buildout::steady_year(1.0, &c);
    println!(
        "checks: 1 GW a week for a year is {:.0} GW of capacity (power, not energy); 1 GW for a year is {twh:.2} TWh, the use of {} US homes at {} kWh a year",
        buildout::WEEKS_PER_YEAR,
        si(homes),
        c.household_kwh_per_year
    );
    println!("energy: facility energy at the mean load, the ramp linear within each year; emissions: location-based average grid intensity");
    match &b.first_breach {
        Some(br) => println!(
            "breaks first: {} in {} (needs {}, limit {})",
            br.limit,
            br.year,
            si(br.needed),
            si(br.allowed)
        ),
        None if [
            a.max_chips_per_year,
            a.max_sites_per_year,
            a.max_grid_gw_per_year,
            a.max_capex_per_year,
        ]
        .iter()
        .all(Option::is_none) => println!("no limits given (--max-chips-per-year, --max-sites-per-year, --max-grid-gw-per-year, --max-capex-per-year)"),
        None => println!("every limit given holds through {}", a.to),
    }
    Ok(())
}
