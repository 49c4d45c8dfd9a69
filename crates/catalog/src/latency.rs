//! Measured inter-region round-trip times (intra-provider matrices only).

use crate::csvutil::{read_text, Csv, Extra};
use crate::error::{BuildReport, CatalogError};
use crate::geo::AzureNames;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use stratus_model::units::Millis;
use stratus_model::{fleet::region_id, LatencyPair};

/// AWS P50 RTT matrix (cloudping, 1 year).
pub(crate) const AWS_RTT: &str = "network_latency/aws_inter_region/aws_inter_region_p50_rtt_1y.csv";
const GCP_RTT: &str = "network_latency/gcp_inter_region/gcp_inter_region_median_rtt_2023-11-27.csv";
const AZURE_RTT: &str = "network_latency/azure_inter_region/azure_inter_region_p50_rtt_2023-07.csv";

/// Directed RTTs keyed by (region id, region id).
pub(crate) type Matrix = BTreeMap<(String, String), f64>;

/// Parse one long-form matrix (`src, dst, ms`). A zero between two different regions is a
/// transcription glitch (Azure Germany North → Japan West) and is dropped; the count is
/// returned so the build can report it.
pub(crate) fn parse_matrix(
    file: &str,
    text: &str,
    provider: &str,
    name: impl Fn(&str) -> String,
    out: &mut Matrix,
) -> Result<usize, CatalogError> {
    let csv = Csv::parse(file, text, 0, Extra::TrailingEmptyOnly)?;
    let mut zeros = 0;
    for (line, r) in &csv.rows {
        let (a, b) = (name(&r[0]), name(&r[1]));
        let ms = csv.num(*line, "RTT", &r[2])?;
        if ms <= 0.0 && a != b {
            zeros += 1;
            continue;
        }
        out.insert((region_id(provider, &a), region_id(provider, &b)), ms);
    }
    Ok(zeros)
}

/// Read the three matrices.
pub(crate) fn load(
    dir: &Path,
    names: &AzureNames,
    report: &mut BuildReport,
) -> Result<Matrix, CatalogError> {
    let mut m = Matrix::new();
    let mut lines = Vec::new();
    for (provider, rel) in [("aws", AWS_RTT), ("gcp", GCP_RTT), ("azure", AZURE_RTT)] {
        let (file, text) = read_text(dir, rel)?;
        let before = m.len();
        let zeros = if provider == "azure" {
            parse_matrix(&file, &text, provider, |s| names.region(s).0, &mut m)?
        } else {
            parse_matrix(&file, &text, provider, str::to_string, &mut m)?
        };
        lines.push(format!(
            "{provider} {} pairs ({zeros} zero off-diagonal values dropped)",
            m.len() - before
        ));
    }
    report.add(format!(
        "latency: measured matrices read: {}",
        lines.join(", ")
    ));
    Ok(m)
}

/// Keep measured pairs between fleet regions (sorted); report how many fleet region pairs have
/// no measurement (the planner estimates those with `stratus_model::fleet::estimate_rtt`).
pub(crate) fn for_fleet(
    m: &Matrix,
    ids: &BTreeSet<String>,
    report: &mut BuildReport,
) -> Vec<LatencyPair> {
    let pairs: Vec<LatencyPair> = m
        .iter()
        .filter(|((a, b), _)| ids.contains(a) && ids.contains(b))
        .map(|((a, b), ms)| LatencyPair {
            a: a.clone(),
            b: b.clone(),
            rtt_ms: Millis(*ms),
        })
        .collect();
    let v: Vec<&String> = ids.iter().collect();
    let (mut total, mut missing) = (0usize, 0usize);
    for (i, a) in v.iter().enumerate() {
        for b in &v[i + 1..] {
            total += 1;
            let k1 = ((*a).clone(), (*b).clone());
            let k2 = ((*b).clone(), (*a).clone());
            if !m.contains_key(&k1) && !m.contains_key(&k2) {
                missing += 1;
            }
        }
    }
    report.add(format!(
        "latency: kept {} measured directed pairs among {} fleet regions; {missing} of {total} region pairs are unmeasured (cross-provider, Lambda, or absent from the matrices) and are estimated from great-circle distance at plan time",
        pairs.len(),
        ids.len()
    ));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_off_diagonal_is_dropped() {
        let text = "src_region,dst_region,p50_rtt_ms\nGermany North,Japan West,0\nJapan West,Germany North,238\nEast US,East US,0\n";
        let names = AzureNames::default();
        let mut m = Matrix::new();
        let zeros = parse_matrix("az.csv", text, "azure", |s| names.region(s).0, &mut m).unwrap();
        assert_eq!(zeros, 1);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[&(
                "azure:japanwest".to_string(),
                "azure:germanynorth".to_string()
            )],
            238.0
        );
    }
}
