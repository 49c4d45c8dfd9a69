//! Azure: the full anycloud VM catalog (per region, no zones), GPU rows only.

use crate::csvutil::{Csv, Extra};
use crate::error::{BuildReport, CatalogError};
use crate::offer::{whole_count, Offer};
use std::collections::BTreeMap;
use stratus_model::Accelerator;

/// Path of the full Azure catalog under the data directory.
pub(crate) const AZURE_FILE: &str = "cloud_gpu_catalog/azure/anycloud_azure_vms.csv";

/// Catalog GPU name (+ instance type) → model. Azure's `H100` is the SXM part in ND-series VMs
/// and the H100 NVL card in NC-series VMs (`NC40ads_H100_v5`, `NC80adis_H100_v5`,
/// `NCC40ads_H100_v5`). `None` for GPUs without a profile (MI25, M60).
fn azure_accelerator(name: &str, instance_type: &str) -> Option<Accelerator> {
    Some(match name {
        "H100" if instance_type.starts_with("Standard_NC") => Accelerator::H100Nvl,
        "H100" => Accelerator::H100,
        "H200" => Accelerator::H200,
        "MI300X" => Accelerator::MI300X,
        "A100-80GB" => Accelerator::A100_80GB,
        "A100" => Accelerator::A100_40GB,
        "V100" => Accelerator::V100,
        "V100-32GB" => Accelerator::V100_32GB,
        "T4" => Accelerator::T4,
        "A10" => Accelerator::A10,
        _ => return None,
    })
}

/// Parse the Azure catalog. 27,141 source rows carry an unquoted `Generation` value `V1,V2`
/// (11 fields for 10 columns); the extra field is joined back into `Generation`. Rows with a
/// fractional GPU count (partitioned A10 VMs) and GPUs without a profile are skipped, counted.
pub(crate) fn parse(
    file: &str,
    text: &str,
    report: &mut BuildReport,
) -> Result<Vec<Offer>, CatalogError> {
    let csv = Csv::parse(file, text, 0, Extra::JoinIntoLast)?;
    let [it, an, ac, pr, sp, rg] = [
        "InstanceType",
        "AcceleratorName",
        "AcceleratorCount",
        "Price",
        "SpotPrice",
        "Region",
    ]
    .map(|c| csv.col(c));
    let (it, an, ac, pr, sp, rg) = (it?, an?, ac?, pr?, sp?, rg?);
    let mut by_key: BTreeMap<(String, String), Offer> = BTreeMap::new();
    let (mut gpu_rows, mut fractional, mut dup) = (0, 0, 0);
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for (line, r) in &csv.rows {
        if r[an].is_empty() {
            continue;
        }
        gpu_rows += 1;
        let Some(acc) = azure_accelerator(&r[an], &r[it]) else {
            *unknown.entry(r[an].to_string()).or_default() += 1;
            continue;
        };
        let Some(chips) = whole_count(csv.num(*line, "AcceleratorCount", &r[ac])?) else {
            fractional += 1;
            continue;
        };
        let offer = Offer {
            provider: "azure",
            region: r[rg].to_string(),
            instance_type: r[it].to_string(),
            accelerator: acc,
            chips,
            on_demand: csv.num(*line, "Price", &r[pr])?,
            spot: csv.opt_num(*line, "SpotPrice", &r[sp])?,
            tpu: false,
        };
        let key = (offer.region.clone(), offer.instance_type.clone());
        if by_key.insert(key, offer).is_some() {
            dup += 1;
        }
    }
    report.add(format!(
        "azure: {} rows read from {file}; {} rows had an unquoted Generation value (V1,V2) split into 11 fields and were rejoined",
        csv.rows.len(),
        csv.joined
    ));
    report.add(format!(
        "azure: {gpu_rows} GPU rows -> {} pools; skipped {fractional} rows with a fractional GPU count (partitioned A10), {} rows of GPUs without a profile ({})",
        by_key.len(),
        unknown.values().sum::<usize>(),
        unknown.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    ));
    if dup > 0 {
        report.add(format!(
            "azure: {dup} duplicate (region, instance type) rows; kept the last"
        ));
    }
    Ok(by_key.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNIPPET: &str = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,Generation
Standard_A1_v2,,,1,2,,0.05,0.00924,australiacentral,V1
Standard_ND96isr_H100_v5,H100,8,96,1900,\"{'Gpus': [{'Name': 'H100', 'Count': 8}]}\",98.32,40.0,eastus,V1,V2
Standard_NC40ads_H100_v5,H100,1,40,320,,6.98,2.7,eastus,V1,V2
Standard_NV6ads_A10_v5,A10,0.167,6,55,,0.45,0.1,eastus,V1,V2
Standard_NV4as_v4,MI25,1,4,14,,0.2,0.05,eastus,V1,V2
";

    #[test]
    fn generation_split_is_rejoined_and_gpus_mapped() {
        let mut rep = BuildReport::default();
        let offers = parse("azure.csv", SNIPPET, &mut rep).unwrap();
        assert_eq!(offers.len(), 2);
        let nc = offers
            .iter()
            .find(|o| o.instance_type.contains("NC40"))
            .unwrap();
        assert_eq!(nc.accelerator, Accelerator::H100Nvl);
        let nd = offers
            .iter()
            .find(|o| o.instance_type.contains("ND96"))
            .unwrap();
        assert_eq!(
            (nd.accelerator, nd.chips, nd.on_demand),
            (Accelerator::H100, 8, 98.32)
        );
        assert!(
            rep.lines[0].contains("4 rows had an unquoted Generation"),
            "{rep}"
        );
        assert!(
            rep.lines[1].contains("skipped 1 rows with a fractional")
                && rep.lines[1].contains("MI25 1"),
            "{rep}"
        );
    }

    #[test]
    fn a_truncated_row_is_an_error_with_its_line() {
        let text = format!("{}Standard_NC6s_v3,V100,1,6\n", SNIPPET);
        let e = parse("azure.csv", &text, &mut BuildReport::default()).unwrap_err();
        assert!(
            e.to_string().starts_with("azure.csv:7: too few fields"),
            "{e}"
        );
    }
}
