//! Grid carbon intensity, hourly series and PUE per region.

use crate::csvutil::{read_text, round, Csv, Extra};
use crate::error::{BuildReport, CatalogError};
use crate::geo::AzureNames;
use std::collections::BTreeMap;
use std::path::Path;

const GCP_YEARS: [u32; 6] = [2024, 2023, 2022, 2021, 2020, 2019];
const AWS_FACTORS: &str = "carbon_intensity/ccf_coefficients/grid-emissions-factors-aws.csv";
/// Cloud Carbon Footprint's Azure factors (keyed by display name).
pub(crate) const AZURE_FACTORS: &str =
    "carbon_intensity/ccf_coefficients/grid-emissions-factors-azure.csv";
const EM_YEARLY: &str =
    "carbon_intensity/co2js_ember_electricitymaps/electricitymaps_yearly_by_zone.csv";
const EMBER: &str =
    "carbon_intensity/co2js_ember_electricitymaps/ember_average_intensity_by_country.csv";
const DATACENTERS: &str = "carbon_intensity/green_algorithms/cloudProviders_datacenters.csv";
const DEFAULT_PUE: &str = "carbon_intensity/green_algorithms/defaults_PUE.csv";

/// Electricity Maps zone for regions whose grid is finer than their country (US balancing
/// authorities, Japanese and Indian sub-grids, Australian states, Italy North). Regions not
/// listed use their country code as the zone. Only consulted for regions the provider files
/// (GCP region-carbon-info, CCF AWS/Azure factors) do not cover — in practice Lambda and the
/// newer Azure regions.
pub(crate) const EM_ZONE: &[(&str, &str, &str)] = &[
    ("lambda", "us-west-1", "US-CAL-CISO"),
    ("lambda", "us-west-2", "US-SW-AZPS"),
    ("lambda", "us-west-3", "US-NW-PACE"),
    ("lambda", "us-south-1", "US-TEX-ERCO"),
    ("lambda", "us-south-2", "US-TEX-ERCO"),
    ("lambda", "us-south-3", "US-TEX-ERCO"),
    ("lambda", "us-midwest-1", "US-MIDA-PJM"),
    ("lambda", "us-east-1", "US-MIDA-PJM"),
    ("lambda", "us-east-2", "US-MIDA-PJM"),
    ("lambda", "us-east-3", "US-MIDA-PJM"),
    ("lambda", "asia-northeast-1", "JP-TK"),
    ("lambda", "asia-south-1", "IN-WE"),
    ("lambda", "australia-east-1", "AU-NSW"),
    ("lambda", "europe-south-1", "IT-NO"),
    ("azure", "italynorth", "IT-NO"),
    ("azure", "australiaeast", "AU-NSW"),
    ("azure", "australiasoutheast", "AU-VIC"),
    ("azure", "japaneast", "JP-TK"),
    ("azure", "japanwest", "JP-KN"),
    ("azure", "westus3", "US-SW-AZPS"),
    ("azure", "westcentralus", "US-NW-WACM"),
];

/// Hours of the hourly series attached to regions: the first 8,760 hours of 2020, each the
/// mean of that hour's sub-hourly rows (an hour repeated or skipped by a DST change is merged
/// or absent, so a series can be an hour short). A full year on 9 regions keeps the
/// pretty-printed fleet under 3 MB (checked by `builtin_fleet_is_up_to_date`); were it to grow
/// past that, keep one week (168 h) instead.
pub const HOURLY_HOURS: usize = 8760;

/// Hourly series files and the regions on each grid.
pub(crate) const HOURLY_GRIDS: &[(&str, &[(&str, &str)])] = &[
    (
        "carbon_intensity/hourly_lets_wait_awhile/fr_ci.csv",
        &[
            ("azure", "francecentral"),
            ("aws", "eu-west-3"),
            ("gcp", "europe-west9"),
        ],
    ),
    (
        "carbon_intensity/hourly_lets_wait_awhile/gb_ci.csv",
        &[
            ("aws", "eu-west-2"),
            ("azure", "uksouth"),
            ("azure", "ukwest"),
            ("gcp", "europe-west2"),
        ],
    ),
    (
        "carbon_intensity/hourly_lets_wait_awhile/ger_ci.csv",
        &[
            ("aws", "eu-central-1"),
            ("azure", "germanywestcentral"),
            ("gcp", "europe-west3"),
            ("gcp", "europe-west10"),
        ],
    ),
];

/// Where a region's yearly intensity came from, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    Provider,
    ElectricityMaps,
    Ember,
}

/// All carbon tables, keyed for lookup.
#[derive(Debug, Default)]
pub(crate) struct Carbon {
    /// (provider, region) → g/kWh from the provider-specific files.
    provider: BTreeMap<(String, String), f64>,
    /// Electricity Maps zone → g/kWh, latest year.
    em: BTreeMap<String, f64>,
    /// Ember ISO3 → g/kWh.
    ember: BTreeMap<String, f64>,
}

impl Carbon {
    /// Yearly intensity of a region in `country` (alpha-2), and its source.
    pub fn lookup(
        &self,
        provider: &str,
        region: &str,
        country: Option<&str>,
    ) -> Option<(f64, Source)> {
        if let Some(v) = self
            .provider
            .get(&(provider.to_string(), region.to_string()))
        {
            return Some((*v, Source::Provider));
        }
        let country = country?;
        let zone = EM_ZONE
            .iter()
            .find(|(p, r, _)| *p == provider && *r == region)
            .map_or(country, |z| z.2);
        if let Some(v) = self.em.get(zone).or_else(|| self.em.get(country)) {
            return Some((*v, Source::ElectricityMaps));
        }
        let v = self.ember.get(crate::geo::iso3(country)?)?;
        Some((*v, Source::Ember))
    }
}

/// Parse a CCF factor in metric tons per kWh into g/kWh. Two Azure values lost their leading
/// `0.` upstream (`000077`, `000402`); a value without a decimal point is read as the digits
/// after `0.`. Returns the value and whether it was repaired.
pub(crate) fn ccf_factor(csv: &Csv, line: u64, s: &str) -> Result<(f64, bool), CatalogError> {
    let t = s.trim();
    let repaired = !t.contains('.');
    let fixed = if repaired {
        format!("0.{t}")
    } else {
        t.to_string()
    };
    let tons = csv.num(line, "CO2e (metric ton/kWh)", &fixed)?;
    if tons >= 0.01 {
        return Err(CatalogError::at(
            &csv.file,
            line,
            format!("implausible factor {t} t/kWh"),
        ));
    }
    Ok((round(tons * 1e6, 3), repaired))
}

fn load_gcp(dir: &Path, carbon: &mut Carbon, report: &mut BuildReport) -> Result<(), CatalogError> {
    let mut per_year = Vec::new();
    for year in GCP_YEARS {
        let (file, text) = read_text(
            dir,
            &format!("carbon_intensity/gcp_region_carbon_info/{year}.csv"),
        )?;
        let csv = Csv::parse(&file, &text, 0, Extra::TrailingEmptyOnly)?;
        let region = csv.col("Google Cloud Region")?;
        let col = csv
            .col("Grid carbon intensity (gCO2eq / kWh)")
            .or_else(|_| csv.col("Lifecycle grid carbon intensity (gCO2eq / kWh)"))?;
        let mut added = 0;
        for (line, r) in &csv.rows {
            let key = ("gcp".to_string(), r[region].to_string());
            if let std::collections::btree_map::Entry::Vacant(e) = carbon.provider.entry(key) {
                e.insert(csv.num(*line, "carbon intensity", &r[col])?);
                added += 1;
            }
        }
        per_year.push(format!("{year}: {added}"));
    }
    report.add(format!(
        "carbon: GCP region-carbon-info, regions taken per year (latest first): {}",
        per_year.join(", ")
    ));
    Ok(())
}

fn load_ccf(
    dir: &Path,
    names: &AzureNames,
    carbon: &mut Carbon,
    report: &mut BuildReport,
) -> Result<(), CatalogError> {
    for (provider, rel) in [("aws", AWS_FACTORS), ("azure", AZURE_FACTORS)] {
        let (file, text) = read_text(dir, rel)?;
        let csv = Csv::parse(&file, &text, 0, Extra::TrailingEmptyOnly)?;
        let (rg, co2) = (csv.col("Region")?, csv.col("CO2e (metric ton/kWh)")?);
        let mut repaired = Vec::new();
        let mut fallback = 0;
        for (line, r) in &csv.rows {
            let (g, fixed) = ccf_factor(&csv, *line, &r[co2])?;
            if fixed {
                repaired.push(format!("{} {} -> {g} g/kWh", &r[rg], &r[co2]));
            }
            let region = if provider == "azure" {
                let (n, fb) = names.region(&r[rg]);
                fallback += fb as usize;
                n
            } else {
                r[rg].to_string()
            };
            carbon.provider.insert((provider.to_string(), region), g);
        }
        report.add(format!(
            "carbon: {} {provider} regions from {file}; repaired {} values missing their leading \"0.\" ({}); dropped {} trailing empty fields; {} display names mapped by Azure's lower-case rule",
            csv.rows.len(),
            repaired.len(),
            repaired.join("; "),
            csv.trailing_empty,
            fallback
        ));
    }
    Ok(())
}

fn load_em_ember(dir: &Path, carbon: &mut Carbon) -> Result<(), CatalogError> {
    let (file, text) = read_text(dir, EM_YEARLY)?;
    let csv = Csv::parse(&file, &text, 0, Extra::TrailingEmptyOnly)?;
    let (yr, zn, ci) = (
        csv.col("year")?,
        csv.col("zone")?,
        csv.col("carbon_intensity_gco2eq_per_kwh")?,
    );
    let mut latest: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (line, r) in &csv.rows {
        let year = csv.num(*line, "year", &r[yr])?;
        let Some(v) = csv.opt_num(*line, "carbon_intensity", &r[ci])? else {
            continue;
        };
        let e = latest.entry(r[zn].to_string()).or_insert((year, v));
        if year >= e.0 {
            *e = (year, v);
        }
    }
    carbon.em = latest.into_iter().map(|(k, (_, v))| (k, v)).collect();
    let (file, text) = read_text(dir, EMBER)?;
    let csv = Csv::parse(&file, &text, 0, Extra::TrailingEmptyOnly)?;
    let (iso, ci) = (
        csv.col("iso3_or_region")?,
        csv.col("carbon_intensity_gco2eq_per_kwh")?,
    );
    for (line, r) in &csv.rows {
        carbon.ember.insert(
            r[iso].to_string(),
            csv.num(*line, "carbon_intensity", &r[ci])?,
        );
    }
    Ok(())
}

/// Read every yearly carbon table.
pub(crate) fn load(
    dir: &Path,
    names: &AzureNames,
    report: &mut BuildReport,
) -> Result<Carbon, CatalogError> {
    let mut carbon = Carbon::default();
    load_gcp(dir, &mut carbon, report)?;
    load_ccf(dir, names, &mut carbon, report)?;
    load_em_ember(dir, &mut carbon)?;
    report.add(format!(
        "carbon: fallbacks loaded: Electricity Maps yearly ({} zones, latest year per zone), Ember ({} countries)",
        carbon.em.len(),
        carbon.ember.len()
    ));
    Ok(carbon)
}

/// Average a sub-hourly series (`Time`, `Carbon Intensity`) to hours of 2020, first `hours`.
pub(crate) fn hourly_series(
    file: &str,
    text: &str,
    hours: usize,
) -> Result<Vec<f64>, CatalogError> {
    let csv = Csv::parse(file, text, 0, Extra::TrailingEmptyOnly)?;
    let (tm, ci) = (csv.col("Time")?, csv.col("Carbon Intensity")?);
    let mut out: Vec<(String, f64, usize)> = Vec::new();
    for (line, r) in &csv.rows {
        let t = &r[tm];
        if !t.starts_with("2020-") || t.len() < 13 {
            continue;
        }
        let v = csv.num(*line, "Carbon Intensity", &r[ci])?;
        let hour = &t[..13];
        if let Some((h, sum, n)) = out.last_mut().filter(|(h, _, _)| h == hour) {
            debug_assert_eq!(h, hour);
            *sum += v;
            *n += 1;
        } else if out.len() == hours {
            break;
        } else {
            out.push((hour.to_string(), v, 1));
        }
    }
    Ok(out
        .into_iter()
        .map(|(_, s, n)| round(s / n as f64, 1))
        .collect())
}

/// PUE per (provider, region) from Green Algorithms, and per-provider defaults.
#[derive(Debug, Default)]
pub(crate) struct Pue {
    region: BTreeMap<(String, String), f64>,
    default: BTreeMap<String, f64>,
}

impl Pue {
    /// PUE of a region: the data-centre value where given, else the provider default, else the
    /// `Unknown` default (1.56, Uptime Institute 2024 survey) — which Lambda gets, since it
    /// publishes no PUE.
    pub fn get(&self, provider: &str, region: &str) -> f64 {
        self.region
            .get(&(provider.to_string(), region.to_string()))
            .or_else(|| self.default.get(provider))
            .or_else(|| self.default.get("unknown"))
            .copied()
            .unwrap_or(1.56)
    }
}

/// Read the PUE tables (both have a comment line above the header).
pub(crate) fn load_pue(
    dir: &Path,
    names: &AzureNames,
    report: &mut BuildReport,
) -> Result<Pue, CatalogError> {
    let mut pue = Pue::default();
    let (file, text) = read_text(dir, DATACENTERS)?;
    let csv = Csv::parse(&file, &text, 1, Extra::TrailingEmptyOnly)?;
    let (pv, nm, pc) = (csv.col("provider")?, csv.col("Name")?, csv.col("PUE")?);
    for (line, r) in &csv.rows {
        let Some(v) = csv.opt_num(*line, "PUE", &r[pc])? else {
            continue;
        };
        let region = if &r[pv] == "azure" {
            names.region(&r[nm]).0
        } else {
            r[nm].to_string()
        };
        pue.region.insert((r[pv].to_string(), region), v);
    }
    let (file2, text) = read_text(dir, DEFAULT_PUE)?;
    let csv2 = Csv::parse(&file2, &text, 1, Extra::TrailingEmptyOnly)?;
    let (pv2, pc2) = (csv2.col("provider")?, csv2.col("PUE")?);
    for (line, r) in &csv2.rows {
        pue.default
            .insert(r[pv2].to_lowercase(), csv2.num(*line, "PUE", &r[pc2])?);
    }
    report.add(format!(
        "pue: {} regions with a measured PUE of {} data-centre rows in {file}; provider defaults from {file2}: {}",
        pue.region.len(),
        csv.rows.len(),
        pue.default.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    ));
    Ok(pue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_factors_missing_their_leading_zero_are_repaired() {
        // The upstream file's shape: CRLF, a trailing empty field, no final newline.
        let text = "Region,Location,NERC Region,CO2e (metric ton/kWh),Source\r\nFrance Central,Paris,,0.000067,EEA\r\nFinland Central,Helsinki,,000077,EEA,\r\nGermany West Central,Frankfurt,,000402,EEA";
        let csv = Csv::parse("az.csv", text, 0, Extra::TrailingEmptyOnly).unwrap();
        assert_eq!(csv.trailing_empty, 1);
        let got: Vec<(f64, bool)> = csv
            .rows
            .iter()
            .map(|(l, r)| ccf_factor(&csv, *l, &r[3]).unwrap())
            .collect();
        assert_eq!(got, [(67.0, false), (77.0, true), (402.0, true)]);
        let bad = Csv::parse(
            "az.csv",
            "Region,CO2e (metric ton/kWh)\nX,12.5\n",
            0,
            Extra::TrailingEmptyOnly,
        )
        .unwrap();
        let e = ccf_factor(&bad, 2, "12.5").unwrap_err();
        assert!(e.to_string().starts_with("az.csv:2: implausible"), "{e}");
    }

    #[test]
    fn sub_hourly_series_average_to_hours_of_2020() {
        let text = "Time,Carbon Intensity\n2019-12-31 23:30:00,999\n2020-01-01 00:00:00,10\n2020-01-01 00:30:00,20\n2020-01-01 01:00:00,30\n2020-01-01 02:00:00,40\n";
        assert_eq!(hourly_series("x.csv", text, 2).unwrap(), [15.0, 30.0]);
    }

    #[test]
    fn lookup_falls_back_from_provider_to_zone_to_country() {
        let mut c = Carbon::default();
        c.provider
            .insert(("gcp".into(), "europe-west9".into()), 16.0);
        c.em.insert("US-TEX-ERCO".into(), 380.0);
        c.em.insert("DE".into(), 341.0);
        c.ember.insert("QAT".into(), 490.0);
        assert_eq!(
            c.lookup("gcp", "europe-west9", Some("FR")),
            Some((16.0, Source::Provider))
        );
        assert_eq!(
            c.lookup("lambda", "us-south-1", Some("US")),
            Some((380.0, Source::ElectricityMaps))
        );
        assert_eq!(
            c.lookup("lambda", "europe-central-1", Some("DE")),
            Some((341.0, Source::ElectricityMaps))
        );
        assert_eq!(
            c.lookup("azure", "qatarcentral", Some("QA")),
            Some((490.0, Source::Ember))
        );
        assert_eq!(c.lookup("azure", "nowhere", None), None);
    }
}
