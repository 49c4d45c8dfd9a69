//! AWS: the SkyPilot P-family slice (per availability zone) and the committed supplement of
//! non-P instance types (Trainium, Inferentia, G5, G6) that the shared data lacks.

use crate::csvutil::{median, round, Csv, Extra};
use crate::error::{BuildReport, CatalogError};
use crate::offer::{whole_count, Offer};
use std::collections::BTreeMap;
use stratus_model::Accelerator;

/// Path of the P-family slice under the data directory.
pub(crate) const AWS_FILE: &str = "cloud_gpu_catalog/aws/skypilot_v7_aws_vms_p_family_slice.csv";

/// Public on-demand list prices for the AWS instance types the shared data lacks, one row per
/// (instance type, region), each with its source. Compiled in, so a build needs only the shared
/// data directory and this repository.
pub const AWS_SUPPLEMENT_CSV: &str = include_str!("../data/aws_supplement.csv");

/// SkyPilot accelerator name → model. `A100` on AWS is the 40 GB part (p4d).
fn aws_accelerator(name: &str) -> Option<Accelerator> {
    Some(match name {
        "V100" => Accelerator::V100,
        "V100-32GB" => Accelerator::V100_32GB,
        "A100" => Accelerator::A100_40GB,
        "A100-80GB" => Accelerator::A100_80GB,
        "H100" => Accelerator::H100,
        "H200" => Accelerator::H200,
        _ => return None,
    })
}

/// One zone's prices for an instance type.
#[derive(Debug, Clone, Copy)]
struct ZonePrice {
    on_demand: f64,
    spot: Option<f64>,
}

/// Accelerator, chips and per-zone prices of one (region, instance type).
type ZoneSet = (Accelerator, u32, BTreeMap<String, ZonePrice>);

/// Parse the per-zone P-family file into one offer per (region, instance type): on-demand is
/// the zones' (identical) list price, spot the median of the zones' spot samples. Rows for the
/// same (instance type, zone) — the source's duplicate p4de rows labelled `A100` and
/// `A100-80GB` in `GpuInfo` — are merged into one zone, keeping whichever has a spot price.
pub(crate) fn parse_p_family(
    file: &str,
    text: &str,
    report: &mut BuildReport,
) -> Result<Vec<Offer>, CatalogError> {
    let csv = Csv::parse(file, text, 0, Extra::TrailingEmptyOnly)?;
    let [it, an, ac, pr, sp, rg, az] = [
        "InstanceType",
        "AcceleratorName",
        "AcceleratorCount",
        "Price",
        "SpotPrice",
        "Region",
        "AvailabilityZone",
    ]
    .map(|c| csv.col(c));
    let (it, an, ac, pr, sp, rg, az) = (it?, an?, ac?, pr?, sp?, rg?, az?);
    let mut zones: BTreeMap<(String, String), ZoneSet> = BTreeMap::new();
    let (mut merged, mut od_mismatch) = (0, 0);
    let mut no_price: BTreeMap<String, usize> = BTreeMap::new();
    for (line, r) in &csv.rows {
        let acc = aws_accelerator(&r[an]).ok_or_else(|| {
            CatalogError::at(file, *line, format!("unknown accelerator {:?}", &r[an]))
        })?;
        let count = csv.num(*line, "AcceleratorCount", &r[ac])?;
        let chips = whole_count(count).ok_or_else(|| {
            CatalogError::at(file, *line, format!("bad AcceleratorCount {count}"))
        })?;
        let Some(on_demand) = csv.opt_num(*line, "Price", &r[pr])? else {
            *no_price.entry(r[it].to_string()).or_default() += 1;
            continue;
        };
        let zp = ZonePrice {
            on_demand,
            spot: csv.opt_num(*line, "SpotPrice", &r[sp])?,
        };
        let entry = zones
            .entry((r[rg].to_string(), r[it].to_string()))
            .or_insert_with(|| (acc, chips, BTreeMap::new()));
        match entry.2.get_mut(&r[az]) {
            Some(prev) => {
                merged += 1;
                prev.spot = prev.spot.or(zp.spot);
                prev.on_demand = prev.on_demand.min(zp.on_demand);
            }
            None => {
                entry.2.insert(r[az].to_string(), zp);
            }
        }
    }
    let mut offers = Vec::new();
    for ((region, itype), (acc, chips, zs)) in zones {
        let ods: Vec<f64> = zs.values().map(|z| z.on_demand).collect();
        let od = ods.iter().copied().fold(f64::INFINITY, f64::min);
        if ods.iter().any(|&x| x != od) {
            od_mismatch += 1;
        }
        let spots: Vec<f64> = zs.values().filter_map(|z| z.spot).collect();
        offers.push(Offer {
            provider: "aws",
            region,
            instance_type: itype,
            accelerator: acc,
            chips,
            on_demand: od,
            spot: median(&spots).map(|s| round(s, 6)),
            tpu: false,
        });
    }
    report.add(format!(
        "aws: {} zone rows read from {file} -> {} pools (one per region and instance type; on-demand = the zones' list price, spot = median of zone spot prices)",
        csv.rows.len(),
        offers.len()
    ));
    report.add(format!(
        "aws: merged {merged} duplicate (instance type, zone) rows (p4de.24xlarge listed with GpuInfo name A100 and A100-80GB; p4de is A100-80GB)"
    ));
    report.add(format!(
        "aws: skipped {} zone rows without an on-demand price ({})",
        no_price.values().sum::<usize>(),
        no_price
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if od_mismatch > 0 {
        report.add(format!(
            "aws: {od_mismatch} pools had differing on-demand prices across zones; kept the lowest"
        ));
    }
    Ok(offers)
}

/// Parse the compiled-in supplement (`data/aws_supplement.csv`). Its accelerator names are the
/// canonical model names; every row must carry a non-empty `source`.
pub(crate) fn parse_supplement(
    file: &str,
    text: &str,
    report: &mut BuildReport,
) -> Result<Vec<Offer>, CatalogError> {
    let csv = Csv::parse(file, text, 0, Extra::TrailingEmptyOnly)?;
    let [it, an, ac, rg, pr, sp, src] = [
        "InstanceType",
        "AcceleratorName",
        "AcceleratorCount",
        "Region",
        "Price",
        "SpotPrice",
        "source",
    ]
    .map(|c| csv.col(c));
    let (it, an, ac, rg, pr, sp, src) = (it?, an?, ac?, rg?, pr?, sp?, src?);
    let mut offers = Vec::new();
    for (line, r) in &csv.rows {
        let acc: Accelerator = r[an]
            .parse()
            .map_err(|e| CatalogError::at(file, *line, format!("{e}")))?;
        let count = csv.num(*line, "AcceleratorCount", &r[ac])?;
        let chips = whole_count(count).ok_or_else(|| {
            CatalogError::at(file, *line, format!("bad AcceleratorCount {count}"))
        })?;
        if r[src].trim().is_empty() {
            return Err(CatalogError::at(
                file,
                *line,
                "every supplement row needs a source",
            ));
        }
        offers.push(Offer {
            provider: "aws",
            region: r[rg].to_string(),
            instance_type: r[it].to_string(),
            accelerator: acc,
            chips,
            on_demand: csv.num(*line, "Price", &r[pr])?,
            spot: csv.opt_num(*line, "SpotPrice", &r[sp])?,
            tpu: false,
        });
    }
    report.add(format!(
        "aws: {} pools from the supplement {file} (public on-demand list prices for Trainium, Inferentia2, A10G, L4 types absent from the shared data)",
        offers.len()
    ));
    Ok(offers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNIPPET: &str = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone
p4de.24xlarge,A100-80GB,8.0,96.0,1152.0,\"{'Gpus': [{'Name': 'A100'}]}\",40.96,12.0,us-east-1,use1-az4
p4de.24xlarge,A100-80GB,8.0,96.0,1152.0,\"{'Gpus': [{'Name': 'A100-80GB'}]}\",40.96,,us-east-1,use1-az4
p4de.24xlarge,A100-80GB,8.0,96.0,1152.0,\"{'Gpus': [{'Name': 'A100-80GB'}]}\",40.96,,us-east-1,use1-az6
p5.48xlarge,H100,8.0,192.0,2048.0,\"x\",98.32,30.0,us-east-1,use1-az1
p5.48xlarge,H100,8.0,192.0,2048.0,\"x\",98.32,20.0,us-east-1,use1-az2
p5.48xlarge,H100,8.0,192.0,2048.0,\"x\",98.32,25.0,us-east-1,use1-az3
";

    #[test]
    fn zones_aggregate_to_regions_and_p4de_duplicates_merge() {
        let mut rep = BuildReport::default();
        let offers = parse_p_family("aws.csv", SNIPPET, &mut rep).unwrap();
        assert_eq!(offers.len(), 2);
        let p4de = &offers[0];
        assert_eq!(
            (p4de.instance_type.as_str(), p4de.accelerator),
            ("p4de.24xlarge", Accelerator::A100_80GB)
        );
        assert_eq!(p4de.spot, Some(12.0));
        let p5 = &offers[1];
        assert_eq!((p5.on_demand, p5.spot), (98.32, Some(25.0)));
        assert!(
            rep.lines.iter().any(|l| l.contains("merged 1 duplicate")),
            "{rep}"
        );
    }

    #[test]
    fn supplement_parses_and_has_sources() {
        let mut rep = BuildReport::default();
        let offers = parse_supplement("aws_supplement.csv", AWS_SUPPLEMENT_CSV, &mut rep).unwrap();
        let find = |it: &str| {
            offers
                .iter()
                .find(|o| o.instance_type == it && o.region == "us-east-1")
        };
        assert_eq!(find("trn1.32xlarge").unwrap().chips, 16);
        assert_eq!(find("inf2.48xlarge").unwrap().on_demand, 12.9813);
        assert_eq!(find("g5.xlarge").unwrap().accelerator, Accelerator::A10G);
        assert_eq!(find("g6.48xlarge").unwrap().accelerator, Accelerator::L4);
        assert!(offers
            .iter()
            .any(|o| o.accelerator == Accelerator::Trainium2));
    }
}
