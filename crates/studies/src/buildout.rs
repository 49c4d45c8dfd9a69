//! The build-out planner behind `stratus capacity plan`: a facility-power ramp ("+1 GW per
//! week from 2026 to 2030") turned, year by year, into systems, racks, accelerators and sites,
//! energy, emissions, homes-equivalent and money, with the first constraint that breaks.
//!
//! Pure arithmetic on documented constants (`data/buildout.yaml`, each figure with its source):
//! - facility power added in a year = ramp × weeks in the year (52);
//! - IT power = facility power / PUE; units (nodes or racks) = IT power / unit kW, rounded up;
//! - energy in a year = mean facility power online during the year (the ramp is linear within
//!   the year) × utilization × 8,760 h; a full year of 1 GW is 8.76 TWh;
//! - emissions = energy × grid intensity (location-based average);
//! - homes-equivalent = energy / household kWh per year.

use serde::Deserialize;
use stratus_model::parse::{from_str, read_file, Format, InputError};

/// Hours in a (non-leap) year.
pub const HOURS_PER_YEAR: f64 = 8760.0;
/// Weeks a weekly ramp counts per year.
pub const WEEKS_PER_YEAR: f64 = 52.0;

/// The built-in constants file.
pub const BUILTIN_CONSTANTS: &str = include_str!("../data/buildout.yaml");

/// Constants of the arithmetic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constants {
    /// Average US household electricity use, kWh per year.
    pub household_kwh_per_year: f64,
    /// Facility power / IT power.
    pub pue: f64,
    /// Mean share of nameplate IT power drawn.
    pub utilization: f64,
    /// Deployable systems.
    pub systems: Vec<System>,
}

/// A deployable system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// Name, e.g. `GB200 NVL72`.
    pub name: String,
    /// Accelerator model.
    pub accelerator: String,
    /// First year it can be deployed.
    pub available_from: u32,
    /// What a unit is (`node` or `rack`).
    pub unit: String,
    /// Accelerators per unit.
    pub chips_per_unit: u32,
    /// Maximum power per unit, kW.
    pub unit_kw: f64,
    /// Units per rack.
    pub units_per_rack: u32,
}

impl Constants {
    /// The built-in constants.
    pub fn builtin() -> Constants {
        Constants::parse("<built-in buildout.yaml>", BUILTIN_CONSTANTS)
            .expect("built-in constants parse")
    }

    /// Parse and check constants given as YAML text (named `file` in errors).
    pub fn parse(file: &str, text: &str) -> Result<Constants, InputError> {
        from_str::<Constants>(file, text, Format::Yaml)?.checked(file)
    }

    /// Read and check a constants file (YAML, TOML or JSON by extension).
    pub fn load(path: &std::path::Path) -> Result<Constants, InputError> {
        let (c, _): (Constants, String) = read_file(path)?;
        c.checked(&path.display().to_string())
    }

    fn checked(self, file: &str) -> Result<Constants, InputError> {
        let c = self;
        let bad = |field: &str, reason: &str| InputError {
            file: file.into(),
            line: None,
            field: Some(field.into()),
            reason: reason.into(),
        };
        if !(c.pue >= 1.0 && c.pue.is_finite()) {
            return Err(bad("pue", "must be at least 1.0"));
        }
        if !(c.utilization > 0.0 && c.utilization <= 1.0) {
            return Err(bad("utilization", "must be in (0, 1]"));
        }
        if c.household_kwh_per_year.is_nan() || c.household_kwh_per_year <= 0.0 {
            return Err(bad("household_kwh_per_year", "must be positive"));
        }
        if c.systems.is_empty() {
            return Err(bad("systems", "at least one system is needed"));
        }
        for (i, s) in c.systems.iter().enumerate() {
            if s.unit_kw.is_nan()
                || s.unit_kw <= 0.0
                || s.chips_per_unit == 0
                || s.units_per_rack == 0
            {
                return Err(bad(
                    &format!("systems[{i}]"),
                    "unit_kw, chips_per_unit and units_per_rack must be positive",
                ));
            }
        }
        Ok(c)
    }

    /// The newest system available in `year` (ties: the later in the file).
    pub fn system_for(&self, year: u32) -> Option<&System> {
        self.systems
            .iter()
            .filter(|s| s.available_from <= year)
            .max_by_key(|s| s.available_from)
            .and_then(|newest| {
                self.systems
                    .iter()
                    .rev()
                    .find(|s| s.available_from == newest.available_from)
            })
    }
}

/// Limits whose first breach the planner reports; `None` is unlimited.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Accelerators the supply chain delivers per year.
    pub chips_per_year: Option<f64>,
    /// Sites that can be built per year.
    pub sites_per_year: Option<f64>,
    /// New grid interconnection per year, GW of facility power.
    pub grid_gw_per_year: Option<f64>,
    /// Capital budget per year, $.
    pub capex_per_year: Option<f64>,
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct Target {
    /// Facility GW added per week.
    pub gw_per_week: f64,
    /// First year of the ramp.
    pub from: u32,
    /// Last year of the ramp (inclusive).
    pub to: u32,
    /// Facility MW of one site.
    pub site_mw: f64,
    /// Grid intensities to report emissions at: (name, gCO2e/kWh).
    pub grids: Vec<(String, f64)>,
    /// Capex per unit (node or rack) of each system, $, by system name.
    pub capex_per_unit: Vec<(String, f64)>,
    /// Energy price, $/MWh, for opex.
    pub energy_usd_per_mwh: Option<f64>,
    /// Limits.
    pub limits: Limits,
}

/// One year of the build-out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Year {
    /// Calendar year.
    pub year: u32,
    /// System deployed this year.
    pub system: String,
    /// Facility GW added this year.
    pub added_gw: f64,
    /// Facility GW online at the end of the year.
    pub total_gw: f64,
    /// Units (nodes or racks) added.
    pub units: u64,
    /// What a unit is.
    pub unit: String,
    /// Racks added.
    pub racks: u64,
    /// Accelerators added.
    pub chips: u64,
    /// Accelerators online at the end of the year.
    pub total_chips: u64,
    /// Sites added (of `site_mw`).
    pub sites: u64,
    /// Facility energy used during the year, TWh.
    pub energy_twh: f64,
    /// Emissions during the year per grid, tCO2e.
    pub emissions_t: Vec<(String, f64)>,
    /// US homes whose yearly use equals the year's energy.
    pub homes: f64,
    /// Capital spent this year, $ (when unit prices were given).
    pub capex_usd: Option<f64>,
    /// Energy cost this year, $ (when a price was given).
    pub opex_usd: Option<f64>,
}

/// A limit exceeded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Breach {
    /// Year it first happens.
    pub year: u32,
    /// Which limit.
    pub limit: String,
    /// What the plan needs that year.
    pub needed: f64,
    /// What the limit allows.
    pub allowed: f64,
}

/// The plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Buildout {
    /// Year by year.
    pub years: Vec<Year>,
    /// The first limit exceeded (earliest year; within a year, the largest overshoot).
    pub first_breach: Option<Breach>,
}

/// Why a target cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildoutError {
    /// No system in the constants is available that year.
    #[error("no system in the constants is available in {0}")]
    NoSystem(u32),
    /// Bad target.
    #[error("{0}")]
    Target(String),
}

/// Plan a build-out.
pub fn plan(t: &Target, c: &Constants) -> Result<Buildout, BuildoutError> {
    if !(t.gw_per_week > 0.0 && t.gw_per_week.is_finite()) {
        return Err(BuildoutError::Target(
            "the ramp must be a positive GW per week".into(),
        ));
    }
    if t.to < t.from {
        return Err(BuildoutError::Target(format!(
            "the last year {} is before the first {}",
            t.to, t.from
        )));
    }
    if t.site_mw.is_nan() || t.site_mw <= 0.0 {
        return Err(BuildoutError::Target(
            "the site size must be positive".into(),
        ));
    }
    let mut years = Vec::new();
    let mut total_gw = 0.0;
    let mut total_chips = 0u64;
    let mut first_breach: Option<Breach> = None;
    for year in t.from..=t.to {
        let sys = c.system_for(year).ok_or(BuildoutError::NoSystem(year))?;
        let added_gw = t.gw_per_week * WEEKS_PER_YEAR;
        let start_gw = total_gw;
        total_gw += added_gw;
        let it_kw = added_gw * 1e6 / c.pue;
        let units = (it_kw / sys.unit_kw).ceil() as u64;
        let racks = units.div_ceil(sys.units_per_rack as u64);
        let chips = units * sys.chips_per_unit as u64;
        total_chips += chips;
        let sites = (added_gw * 1e3 / t.site_mw).ceil() as u64;
        // Linear ramp within the year: the mean online power is the midpoint.
        let mean_gw = (start_gw + total_gw) / 2.0;
        let energy_twh = mean_gw * c.utilization * HOURS_PER_YEAR / 1e3;
        let kwh = energy_twh * 1e9;
        let emissions_t = t
            .grids
            .iter()
            .map(|(n, g)| (n.clone(), kwh * g / 1e6))
            .collect();
        let homes = kwh / c.household_kwh_per_year;
        let capex_usd = t
            .capex_per_unit
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&sys.name))
            .map(|(_, p)| p * units as f64);
        let opex_usd = t.energy_usd_per_mwh.map(|p| energy_twh * 1e6 * p);
        let checks = [
            (
                "accelerators per year",
                chips as f64,
                t.limits.chips_per_year,
            ),
            ("sites per year", sites as f64, t.limits.sites_per_year),
            (
                "grid interconnection GW per year",
                added_gw,
                t.limits.grid_gw_per_year,
            ),
            (
                "capex $ per year",
                capex_usd.unwrap_or(0.0),
                t.limits.capex_per_year,
            ),
        ];
        if first_breach.is_none() {
            first_breach = checks
                .iter()
                .filter_map(|(name, need, lim)| {
                    lim.filter(|l| need > l).map(|l| Breach {
                        year,
                        limit: name.to_string(),
                        needed: *need,
                        allowed: l,
                    })
                })
                .max_by(|a, b| (a.needed / a.allowed).total_cmp(&(b.needed / b.allowed)));
        }
        years.push(Year {
            year,
            system: sys.name.clone(),
            added_gw,
            total_gw,
            units,
            unit: sys.unit.clone(),
            racks,
            chips,
            total_chips,
            sites,
            energy_twh,
            emissions_t,
            homes,
            capex_usd,
            opex_usd,
        });
    }
    Ok(Buildout {
        years,
        first_breach,
    })
}

/// A year of constant power: energy in TWh and the homes it equals (the brief's check).
pub fn steady_year(gw: f64, c: &Constants) -> (f64, f64) {
    let twh = gw * HOURS_PER_YEAR / 1e3;
    (twh, twh * 1e9 / c.household_kwh_per_year)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(gw_per_week: f64, from: u32, to: u32) -> Target {
        Target {
            gw_per_week,
            from,
            to,
            site_mw: 1000.0,
            grids: vec![("clean".into(), 50.0), ("coal".into(), 1000.0)],
            capex_per_unit: vec![("GB200 NVL72".into(), 3.0e6)],
            energy_usd_per_mwh: Some(50.0),
            limits: Limits::default(),
        }
    }

    #[test]
    fn the_briefs_numbers_check_out() {
        let c = Constants::builtin();
        // 1 GW per week for a year is 52 GW of capacity (power), not 52 GW of energy.
        let b = plan(&target(1.0, 2026, 2026), &c).unwrap();
        assert_eq!(b.years[0].total_gw, 52.0);
        // 1 GW for a year is 8.76 TWh, about 818k US homes (not 750k).
        let (twh, homes) = steady_year(1.0, &c);
        assert!((twh - 8.76).abs() < 1e-9);
        assert!((homes - 818_691.6).abs() < 1.0, "{homes}");
    }

    #[test]
    fn a_hand_checkable_year() {
        // 0.12 GW per week in 2026: 6.24 GW of facility power, 5.2 GW of IT at PUE 1.2,
        // 43,334 GB200 NVL72 racks of 120 kW (5.2e6 / 120 = 43,333.3, rounded up),
        // 3,120,048 GPUs, 7 sites of 1 GW. Energy: mean 3.12 GW × 0.8 × 8,760 h = 21.86 TWh.
        let c = Constants::builtin();
        let b = plan(&target(0.12, 2026, 2027), &c).unwrap();
        let y = &b.years[0];
        assert_eq!(y.system, "GB200 NVL72");
        assert!((y.added_gw - 6.24).abs() < 1e-9);
        assert_eq!(y.units, 43_334);
        assert_eq!(y.racks, 43_334);
        assert_eq!(y.chips, 43_334 * 72);
        assert_eq!(y.sites, 7);
        assert!((y.energy_twh - 3.12 * 0.8 * 8.76).abs() < 1e-9);
        // Emissions: kWh × g/kWh; 21.86 TWh at 50 g is 1.09 Mt.
        assert!((y.emissions_t[0].1 - y.energy_twh * 1e9 * 50.0 / 1e6).abs() < 1e-3);
        assert_eq!(y.capex_usd, Some(43_334.0 * 3.0e6));
        assert!((y.opex_usd.unwrap() - y.energy_twh * 1e6 * 50.0).abs() < 1e-3);
        // Year two starts from 6.24 GW online: mean 9.36 GW.
        let y2 = &b.years[1];
        assert!((y2.total_gw - 12.48).abs() < 1e-9);
        assert!((y2.energy_twh - 9.36 * 0.8 * 8.76).abs() < 1e-9);
        assert_eq!(y2.total_chips, 2 * 43_334 * 72);
    }

    #[test]
    fn the_first_constraint_to_break_is_named() {
        let c = Constants::builtin();
        let mut t = target(0.12, 2026, 2028);
        // At 0.12 GW/week every limit holds: 3.1 M GPUs ≤ 4 M, 7 sites ≤ 8, 6.24 GW ≤ 10.
        // At 0.24 GW/week all three break in 2026: 6.24 M GPUs (1.56 × the limit), 13 sites
        // (1.63 ×) and 12.48 GW (1.25 ×); the largest overshoot, the sites, is named.
        t.limits = Limits {
            chips_per_year: Some(4.0e6),
            sites_per_year: Some(8.0),
            grid_gw_per_year: Some(10.0),
            capex_per_year: None,
        };
        assert_eq!(plan(&t, &c).unwrap().first_breach, None);
        t.gw_per_week = 0.24;
        let b = plan(&t, &c).unwrap().first_breach.unwrap();
        assert_eq!(b.year, 2026);
        assert_eq!(b.limit, "sites per year");
        assert_eq!((b.needed, b.allowed), (13.0, 8.0));
    }

    #[test]
    fn older_years_deploy_older_systems_and_bad_targets_are_refused() {
        let c = Constants::builtin();
        assert_eq!(c.system_for(2024).unwrap().name, "DGX H100");
        assert_eq!(c.system_for(2025).unwrap().name, "GB200 NVL72");
        assert_eq!(
            plan(&target(1.0, 2020, 2021), &c).unwrap_err(),
            BuildoutError::NoSystem(2020)
        );
        assert!(plan(&target(0.0, 2026, 2027), &c).is_err());
        assert!(plan(&target(1.0, 2027, 2026), &c).is_err());
        let e = Constants::parse(
            "c.yaml",
            "household_kwh_per_year: 1\npue: 0.5\nutilization: 0.5\nsystems: []\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("pue"));
        let e = Constants::parse("c.yaml", "pue: 1.2\n").unwrap_err();
        assert_eq!(e.file, "c.yaml");
    }
}
