//! Lambda Cloud: the anycloud catalog (per region, no spot market).

use crate::csvutil::{Csv, Extra};
use crate::error::{BuildReport, CatalogError};
use crate::offer::{whole_count, Offer};
use std::collections::BTreeMap;
use stratus_model::Accelerator;

/// Path of the Lambda catalog under the data directory.
pub(crate) const LAMBDA_FILE: &str = "cloud_gpu_catalog/lambda/anycloud_lambda_vms.csv";

/// Catalog GPU name (+ instance type) → model. Lambda's `A100` (1x–8x) is the 40 GB part;
/// `gpu_1x_h100_pcie` is an H100 PCIe, which has no profile (lower power and FLOPS than SXM),
/// so it is skipped like GH200, A6000 and RTX6000.
fn lambda_accelerator(name: &str, instance_type: &str) -> Option<Accelerator> {
    Some(match name {
        "H100" if instance_type.contains("pcie") => return None,
        "H100" => Accelerator::H100,
        "A100" => Accelerator::A100_40GB,
        "A100-80GB" => Accelerator::A100_80GB,
        "B200" => Accelerator::B200,
        "A10" => Accelerator::A10,
        "V100" => Accelerator::V100,
        _ => return None,
    })
}

/// Parse the Lambda catalog into offers (spot is always absent).
pub(crate) fn parse(
    file: &str,
    text: &str,
    report: &mut BuildReport,
) -> Result<Vec<Offer>, CatalogError> {
    let csv = Csv::parse(file, text, 0, Extra::TrailingEmptyOnly)?;
    let [it, an, ac, pr, rg] = [
        "InstanceType",
        "AcceleratorName",
        "AcceleratorCount",
        "Price",
        "Region",
    ]
    .map(|c| csv.col(c));
    let (it, an, ac, pr, rg) = (it?, an?, ac?, pr?, rg?);
    let mut offers = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for (line, r) in &csv.rows {
        if r[an].is_empty() {
            continue;
        }
        let Some(acc) = lambda_accelerator(&r[an], &r[it]) else {
            *skipped
                .entry(format!("{} ({})", &r[an], &r[it]))
                .or_default() += 1;
            continue;
        };
        let count = csv.num(*line, "AcceleratorCount", &r[ac])?;
        let chips = whole_count(count).ok_or_else(|| {
            CatalogError::at(file, *line, format!("bad AcceleratorCount {count}"))
        })?;
        offers.push(Offer {
            provider: "lambda",
            region: r[rg].to_string(),
            instance_type: r[it].to_string(),
            accelerator: acc,
            chips,
            on_demand: csv.num(*line, "Price", &r[pr])?,
            spot: None,
            tpu: false,
        });
    }
    report.add(format!(
        "lambda: {} rows read from {file} -> {} pools (no spot market); skipped {} rows of GPUs without a profile: {}",
        csv.rows.len(),
        offers.len(),
        skipped.values().sum::<usize>(),
        skipped.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    ));
    Ok(offers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_known_gpus_and_skips_the_rest() {
        let text = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice
cpu_4x_general,,,4.0,16.0,0.2,us-east-1,,
gpu_8x_h100_sxm5,H100,8.0,208.0,1800.0,31.92,us-east-1,,
gpu_1x_h100_pcie,H100,1.0,26.0,200.0,3.29,us-east-1,,
gpu_1x_gh200,GH200,1.0,64.0,432.0,2.29,us-east-1,,
gpu_1x_a100,A100,1.0,30.0,200.0,1.99,us-east-1,,
";
        let mut rep = BuildReport::default();
        let offers = parse("lambda.csv", text, &mut rep).unwrap();
        assert_eq!(offers.len(), 2);
        assert_eq!(offers[0].accelerator, Accelerator::H100);
        assert_eq!(offers[1].accelerator, Accelerator::A100_40GB);
        assert!(rep.lines[0].contains("skipped 2 rows"), "{rep}");
    }
}
