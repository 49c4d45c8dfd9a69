//! Where regions are: coordinates, countries and jurisdictions.
//!
//! Coordinates come from the shared data (`network_latency/region_coordinates`); regions those
//! files lack (Lambda, and Azure/GCP regions opened after the files were made) come from
//! `EXTRA_SITES`, approximate city coordinates of the city each provider names for the region.

use crate::csvutil::{read_text, Csv, Extra};
use crate::error::{BuildReport, CatalogError};
use std::collections::BTreeMap;
use std::path::Path;

/// AWS and GCP coordinates file.
pub(crate) const AWS_GCP_COORDS: &str =
    "network_latency/region_coordinates/aws_gcp_region_coordinates.csv";
/// Azure coordinates file (also maps display names to region names).
pub(crate) const AZURE_COORDS: &str =
    "network_latency/region_coordinates/azure_region_coordinates.csv";

/// A region's place.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Site {
    pub lat: f64,
    pub lon: f64,
    pub location: String,
}

/// Sites for regions missing from (or without coordinates in) the coordinates files: (provider, region, lat, lon, place).
/// Lambda names only a state or country for most regions; the city is the metro of its data
/// centres where publicly known, else the state's largest metro (approximate by design: it only
/// feeds latency estimates and the map).
pub(crate) const EXTRA_SITES: &[(&str, &str, f64, f64, &str)] = &[
    (
        "azure",
        "chilecentral",
        -33.45,
        -70.67,
        "Santiago, Chile (Chile Central)",
    ),
    (
        "azure",
        "indonesiacentral",
        -6.21,
        106.85,
        "Jakarta, Indonesia (Indonesia Central)",
    ),
    (
        "azure",
        "israelcentral",
        31.9,
        34.8,
        "Central Israel (Israel Central)",
    ),
    (
        "azure",
        "italynorth",
        45.46,
        9.19,
        "Milan, Italy (Italy North)",
    ),
    (
        "azure",
        "malaysiawest",
        3.15,
        101.69,
        "Kuala Lumpur, Malaysia (Malaysia West)",
    ),
    (
        "azure",
        "mexicocentral",
        20.59,
        -100.39,
        "Querétaro, Mexico (Mexico Central)",
    ),
    (
        "azure",
        "polandcentral",
        52.23,
        21.01,
        "Warsaw, Poland (Poland Central)",
    ),
    (
        "azure",
        "qatarcentral",
        25.29,
        51.53,
        "Doha, Qatar (Qatar Central)",
    ),
    (
        "azure",
        "spaincentral",
        40.42,
        -3.70,
        "Madrid, Spain (Spain Central)",
    ),
    ("gcp", "me-central2", 26.43, 50.10, "Dammam, Saudi Arabia"),
    // Rows present in the coordinates file with empty latitude/longitude:
    ("gcp", "europe-west3", 50.11, 8.68, "Frankfurt, Germany"),
    ("gcp", "us-west4", 36.17, -115.14, "Las Vegas, Nevada"),
    (
        "gcp",
        "southamerica-east1",
        -23.55,
        -46.63,
        "São Paulo, Brazil",
    ),
    ("lambda", "asia-northeast-1", 35.68, 139.69, "Tokyo, Japan"),
    (
        "lambda",
        "asia-northeast-2",
        37.57,
        126.98,
        "Seoul, South Korea",
    ),
    ("lambda", "asia-south-1", 19.08, 72.88, "Mumbai, India"),
    (
        "lambda",
        "australia-east-1",
        -33.87,
        151.21,
        "Sydney, Australia",
    ),
    (
        "lambda",
        "europe-central-1",
        50.11,
        8.68,
        "Frankfurt, Germany",
    ),
    ("lambda", "europe-south-1", 45.46, 9.19, "Milan, Italy"),
    ("lambda", "me-west-1", 32.09, 34.78, "Tel Aviv, Israel"),
    (
        "lambda",
        "us-east-1",
        39.04,
        -77.49,
        "Ashburn, Virginia, US",
    ),
    (
        "lambda",
        "us-east-2",
        38.90,
        -77.04,
        "Washington DC area, US",
    ),
    (
        "lambda",
        "us-east-3",
        39.04,
        -77.49,
        "Northern Virginia, US",
    ),
    (
        "lambda",
        "us-midwest-1",
        41.88,
        -87.63,
        "Chicago, Illinois, US",
    ),
    ("lambda", "us-south-1", 33.10, -96.67, "Allen, Texas, US"),
    ("lambda", "us-south-2", 32.78, -96.80, "Dallas, Texas, US"),
    ("lambda", "us-south-3", 29.76, -95.37, "Houston, Texas, US"),
    (
        "lambda",
        "us-west-1",
        37.77,
        -122.42,
        "San Francisco, California, US",
    ),
    (
        "lambda",
        "us-west-2",
        33.45,
        -112.07,
        "Phoenix, Arizona, US",
    ),
    (
        "lambda",
        "us-west-3",
        40.76,
        -111.89,
        "Salt Lake City, Utah, US",
    ),
];

/// Region → ISO 3166 alpha-2 country, per provider. A key ending in `*` matches by prefix
/// (Azure names such as `australiaeast`, `germanywestcentral`); other keys match exactly.
pub(crate) const REGION_COUNTRY: &[(&str, &str, &str)] = &[
    ("aws", "us-*", "US"),
    ("aws", "ca-*", "CA"),
    ("aws", "sa-east-1", "BR"),
    ("aws", "mx-central-1", "MX"),
    ("aws", "eu-west-1", "IE"),
    ("aws", "eu-west-2", "GB"),
    ("aws", "eu-west-3", "FR"),
    ("aws", "eu-central-1", "DE"),
    ("aws", "eu-central-2", "CH"),
    ("aws", "eu-north-1", "SE"),
    ("aws", "eu-south-1", "IT"),
    ("aws", "eu-south-2", "ES"),
    ("aws", "ap-northeast-1", "JP"),
    ("aws", "ap-northeast-2", "KR"),
    ("aws", "ap-northeast-3", "JP"),
    ("aws", "ap-south-*", "IN"),
    ("aws", "ap-southeast-1", "SG"),
    ("aws", "ap-southeast-2", "AU"),
    ("aws", "ap-southeast-3", "ID"),
    ("aws", "ap-southeast-4", "AU"),
    ("aws", "ap-east-1", "HK"),
    ("aws", "me-south-1", "BH"),
    ("aws", "me-central-1", "AE"),
    ("aws", "af-south-1", "ZA"),
    ("aws", "il-central-1", "IL"),
    ("aws", "cn-*", "CN"),
    ("gcp", "us-*", "US"),
    ("gcp", "northamerica-northeast*", "CA"),
    ("gcp", "northamerica-south1", "MX"),
    ("gcp", "southamerica-east1", "BR"),
    ("gcp", "southamerica-west1", "CL"),
    ("gcp", "europe-west1", "BE"),
    ("gcp", "europe-west2", "GB"),
    ("gcp", "europe-west3", "DE"),
    ("gcp", "europe-west4", "NL"),
    ("gcp", "europe-west6", "CH"),
    ("gcp", "europe-west8", "IT"),
    ("gcp", "europe-west9", "FR"),
    ("gcp", "europe-west10", "DE"),
    ("gcp", "europe-west12", "IT"),
    ("gcp", "europe-north1", "FI"),
    ("gcp", "europe-north2", "SE"),
    ("gcp", "europe-central2", "PL"),
    ("gcp", "europe-southwest1", "ES"),
    ("gcp", "asia-east1", "TW"),
    ("gcp", "asia-east2", "HK"),
    ("gcp", "asia-northeast1", "JP"),
    ("gcp", "asia-northeast2", "JP"),
    ("gcp", "asia-northeast3", "KR"),
    ("gcp", "asia-south*", "IN"),
    ("gcp", "asia-southeast1", "SG"),
    ("gcp", "asia-southeast2", "ID"),
    ("gcp", "australia-*", "AU"),
    ("gcp", "me-west1", "IL"),
    ("gcp", "me-central1", "QA"),
    ("gcp", "me-central2", "SA"),
    ("gcp", "africa-south1", "ZA"),
    ("azure", "eastus*", "US"),
    ("azure", "westus*", "US"),
    ("azure", "centralus*", "US"),
    ("azure", "northcentralus", "US"),
    ("azure", "southcentralus", "US"),
    ("azure", "westcentralus", "US"),
    ("azure", "australia*", "AU"),
    ("azure", "brazil*", "BR"),
    ("azure", "canada*", "CA"),
    ("azure", "centralindia", "IN"),
    ("azure", "southindia", "IN"),
    ("azure", "westindia", "IN"),
    ("azure", "jioindia*", "IN"),
    ("azure", "eastasia", "HK"),
    ("azure", "southeastasia", "SG"),
    ("azure", "france*", "FR"),
    ("azure", "germany*", "DE"),
    ("azure", "japan*", "JP"),
    ("azure", "korea*", "KR"),
    ("azure", "northeurope", "IE"),
    ("azure", "westeurope", "NL"),
    ("azure", "norway*", "NO"),
    ("azure", "southafrica*", "ZA"),
    ("azure", "sweden*", "SE"),
    ("azure", "switzerland*", "CH"),
    ("azure", "uae*", "AE"),
    ("azure", "uk*", "GB"),
    ("azure", "italynorth", "IT"),
    ("azure", "polandcentral", "PL"),
    ("azure", "spaincentral", "ES"),
    ("azure", "mexicocentral", "MX"),
    ("azure", "israelcentral", "IL"),
    ("azure", "qatarcentral", "QA"),
    ("azure", "chilecentral", "CL"),
    ("azure", "malaysiawest", "MY"),
    ("azure", "indonesiacentral", "ID"),
    ("azure", "newzealandnorth", "NZ"),
    ("azure", "finlandcentral", "FI"),
    ("azure", "belgiumcentral", "BE"),
    ("lambda", "us-*", "US"),
    ("lambda", "asia-northeast-1", "JP"),
    ("lambda", "asia-northeast-2", "KR"),
    ("lambda", "asia-south-1", "IN"),
    ("lambda", "australia-east-1", "AU"),
    ("lambda", "europe-central-1", "DE"),
    ("lambda", "europe-south-1", "IT"),
    ("lambda", "me-west-1", "IL"),
];

/// ISO alpha-2 → alpha-3 (for Ember's country table), for the countries regions sit in.
pub(crate) const ISO3: &[(&str, &str)] = &[
    ("AE", "ARE"),
    ("AU", "AUS"),
    ("BE", "BEL"),
    ("BH", "BHR"),
    ("BR", "BRA"),
    ("CA", "CAN"),
    ("CH", "CHE"),
    ("CL", "CHL"),
    ("CN", "CHN"),
    ("DE", "DEU"),
    ("ES", "ESP"),
    ("FI", "FIN"),
    ("FR", "FRA"),
    ("GB", "GBR"),
    ("HK", "HKG"),
    ("ID", "IDN"),
    ("IE", "IRL"),
    ("IL", "ISR"),
    ("IN", "IND"),
    ("IT", "ITA"),
    ("JP", "JPN"),
    ("KR", "KOR"),
    ("MX", "MEX"),
    ("MY", "MYS"),
    ("NL", "NLD"),
    ("NO", "NOR"),
    ("NZ", "NZL"),
    ("PL", "POL"),
    ("QA", "QAT"),
    ("SA", "SAU"),
    ("SE", "SWE"),
    ("SG", "SGP"),
    ("TW", "TWN"),
    ("US", "USA"),
    ("ZA", "ZAF"),
];

/// EU member states (alpha-2).
const EU: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
];

/// Country of a provider's region, from [`REGION_COUNTRY`].
pub(crate) fn region_country(provider: &str, region: &str) -> Option<&'static str> {
    REGION_COUNTRY
        .iter()
        .filter(|(p, key, _)| {
            *p == provider
                && match key.strip_suffix('*') {
                    Some(prefix) => region.starts_with(prefix),
                    None => region == *key,
                }
        })
        .max_by_key(|(_, key, _)| key.len())
        .map(|(_, _, c)| *c)
}

/// Jurisdictions of a country: the country code, then `EU` for EU member states, then `EEA`
/// for the EU plus Norway, Iceland and Liechtenstein.
pub fn jurisdictions(iso2: &str) -> Vec<String> {
    let mut out = vec![iso2.to_string()];
    let eu = EU.contains(&iso2);
    if eu {
        out.push("EU".into());
    }
    if eu || ["NO", "IS", "LI"].contains(&iso2) {
        out.push("EEA".into());
    }
    out
}

/// Alpha-3 code of a country, for Ember.
pub(crate) fn iso3(iso2: &str) -> Option<&'static str> {
    ISO3.iter().find(|(a, _)| *a == iso2).map(|(_, b)| *b)
}

/// Azure display name → region name, as the coordinates file gives it; names it lacks fall back
/// to lower-case without spaces ("Qatar Central" → `qatarcentral`), which is Azure's own rule.
#[derive(Debug, Default)]
pub(crate) struct AzureNames(BTreeMap<String, String>);

impl AzureNames {
    /// Region name for a display name; second value is whether the fallback rule was used.
    pub fn region(&self, display: &str) -> (String, bool) {
        match self.0.get(display.trim()) {
            Some(n) => (n.clone(), false),
            None => (display.trim().to_lowercase().replace(' ', ""), true),
        }
    }
}

/// Sites keyed by (provider, region).
pub(crate) type Sites = BTreeMap<(String, String), Site>;

/// All known sites keyed by (provider, region), and the Azure name map.
pub(crate) fn load_sites(
    dir: &Path,
    report: &mut BuildReport,
) -> Result<(Sites, AzureNames), CatalogError> {
    let mut sites = BTreeMap::new();
    let (file, text) = read_text(dir, AWS_GCP_COORDS)?;
    let csv = Csv::parse(&file, &text, 0, Extra::TrailingEmptyOnly)?;
    let [pv, rz, loc, la, lo] = [
        "provider",
        "region_or_zone",
        "location",
        "latitude",
        "longitude",
    ]
    .map(|c| csv.col(c));
    let (pv, rz, loc, la, lo) = (pv?, rz?, loc?, la?, lo?);
    let mut no_coords = Vec::new();
    for (line, r) in &csv.rows {
        let (Some(lat), Some(lon)) = (
            csv.opt_num(*line, "latitude", &r[la])?,
            csv.opt_num(*line, "longitude", &r[lo])?,
        ) else {
            no_coords.push(r[rz].to_string());
            continue;
        };
        let site = Site {
            lat,
            lon,
            location: r[loc].to_string(),
        };
        sites.insert((r[pv].to_lowercase(), r[rz].to_string()), site);
    }
    let n_aws_gcp = csv.rows.len();
    report.add(format!(
        "coordinates: {} rows without coordinates ignored ({})",
        no_coords.len(),
        no_coords.join(" ")
    ));
    let (file, text) = read_text(dir, AZURE_COORDS)?;
    let csv = Csv::parse(&file, &text, 0, Extra::TrailingEmptyOnly)?;
    let [nm, dn, pl, la, lo] = [
        "name",
        "display_name",
        "physical_location",
        "latitude",
        "longitude",
    ]
    .map(|c| csv.col(c));
    let (nm, dn, pl, la, lo) = (nm?, dn?, pl?, la?, lo?);
    let mut names = AzureNames::default();
    for (line, r) in &csv.rows {
        names.0.insert(r[dn].to_string(), r[nm].to_string());
        let (Some(lat), Some(lon)) = (
            csv.opt_num(*line, "latitude", &r[la])?,
            csv.opt_num(*line, "longitude", &r[lo])?,
        ) else {
            continue;
        };
        let location = format!("{} ({})", &r[pl], &r[dn]);
        sites.insert(
            ("azure".to_string(), r[nm].to_string()),
            Site { lat, lon, location },
        );
    }
    report.add(format!(
        "coordinates: {n_aws_gcp} AWS/GCP region and zone rows, {} Azure regions; {} regions from the documented table of extra sites (Lambda, newer Azure/GCP regions)",
        csv.rows.len(),
        EXTRA_SITES.len()
    ));
    for (p, r, lat, lon, place) in EXTRA_SITES {
        sites.entry((p.to_string(), r.to_string())).or_insert(Site {
            lat: *lat,
            lon: *lon,
            location: place.to_string(),
        });
    }
    Ok((sites, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_and_jurisdictions() {
        assert_eq!(region_country("gcp", "europe-west10"), Some("DE"));
        assert_eq!(region_country("gcp", "europe-west1"), Some("BE"));
        assert_eq!(region_country("azure", "germanywestcentral"), Some("DE"));
        assert_eq!(region_country("azure", "westus3"), Some("US"));
        assert_eq!(region_country("lambda", "us-south-2"), Some("US"));
        assert_eq!(region_country("aws", "xx-nowhere-1"), None);
        assert_eq!(jurisdictions("FR"), ["FR", "EU", "EEA"]);
        assert_eq!(jurisdictions("NO"), ["NO", "EEA"]);
        assert_eq!(jurisdictions("US"), ["US"]);
        assert_eq!(iso3("JP"), Some("JPN"));
        for (_, _, c) in REGION_COUNTRY {
            assert!(iso3(c).is_some(), "{c} lacks an alpha-3 code");
        }
    }

    #[test]
    fn azure_display_names_fall_back_to_azure_rule() {
        let names = AzureNames::default();
        assert_eq!(
            names.region("Qatar Central"),
            ("qatarcentral".to_string(), true)
        );
    }
}
