//! GCP: the full anycloud catalog (per zone). A GPU machine's price is its host row plus the
//! GPU row of the same zone; TPU slices are priced per slice.

use crate::csvutil::{median, round, Csv, Extra};
use crate::error::{BuildReport, CatalogError};
use crate::offer::Offer;
use std::collections::{BTreeMap, BTreeSet};
use stratus_model::Accelerator;

/// Path of the full GCP catalog under the data directory.
pub(crate) const GCP_FILE: &str = "cloud_gpu_catalog/gcp/anycloud_gcp_vms.csv";

/// A GPU row is a mirror artefact when its price is below this fraction of the 75th percentile
/// of the same (GPU, count) across zones. Why not "half the median": the artefact rows are so
/// common (12 of 24 zones for H100-MEGA, 6 of 9 for H200) that the median sits on them, and
/// the A100 x1 artefact (1.61-1.71 vs 2.93-3.44 $/h) is at 55 % of the median. All flagged
/// rows also show the artefact's signature: spot ≈ or above on-demand.
pub(crate) const ARTEFACT_FRACTION: f64 = 0.6;

/// TPU slices kept: power-of-two sizes up to this many chips (larger slices are sold by
/// reservation; 100+ v5p shapes would bloat the fleet without adding a decision).
pub(crate) const MAX_TPU_SLICE_CHIPS: u32 = 1024;

/// Host machine type → (GPU row name, GPU count, model). `None` for machine types that are not
/// GPU machines of the families we model. a3-edgegpu and -nolssd variants are handled by the
/// caller (skipped as duplicates of a3-highgpu/a3-ultragpu).
pub(crate) fn gcp_family(itype: &str) -> Option<(&'static str, u32, Accelerator)> {
    let gpus = |prefix: &str| -> Option<u32> {
        itype.strip_prefix(prefix)?.strip_suffix('g')?.parse().ok()
    };
    if let Some(n) = gpus("a2-highgpu-").or_else(|| gpus("a2-megagpu-")) {
        return Some(("A100", n, Accelerator::A100_40GB));
    }
    if let Some(n) = gpus("a2-ultragpu-") {
        return Some(("A100-80GB", n, Accelerator::A100_80GB));
    }
    if let Some(n) = gpus("a3-highgpu-") {
        return Some(("H100", n, Accelerator::H100));
    }
    Some(match itype {
        "a3-megagpu-8g" => ("H100-MEGA", 8, Accelerator::H100),
        "a3-ultragpu-8g" => ("H200", 8, Accelerator::H200),
        "a4-highgpu-8g" => ("B200", 8, Accelerator::B200),
        // g2-standard-N: L4 count by vCPU count (GCP G2 machine table).
        "g2-standard-4" | "g2-standard-8" | "g2-standard-12" | "g2-standard-16"
        | "g2-standard-32" => ("L4", 1, Accelerator::L4),
        "g2-standard-24" => ("L4", 2, Accelerator::L4),
        "g2-standard-48" => ("L4", 4, Accelerator::L4),
        "g2-standard-96" => ("L4", 8, Accelerator::L4),
        _ => return None,
    })
}

/// TPU slice name → (model, chips). `tpu-v5litepod-N` has N chips; `tpu-v5p-N` counts
/// TensorCores, two per chip, so N/2 chips (v5p-16 = 8 chips at $4.20/chip-h = $33.60).
pub(crate) fn tpu_slice(name: &str) -> Option<(Accelerator, u32)> {
    if let Some(n) = name.strip_prefix("tpu-v5litepod-") {
        return Some((Accelerator::TpuV5e, n.parse().ok()?));
    }
    let cores: u32 = name.strip_prefix("tpu-v5p-")?.parse().ok()?;
    Some((Accelerator::TpuV5p, cores / 2))
}

/// Zones whose price is an artefact among `rows` = (zone, price) of one (GPU, count).
pub(crate) fn artefact_zones(rows: &[(String, f64)]) -> BTreeSet<String> {
    let mut prices: Vec<f64> = rows.iter().map(|r| r.1).collect();
    prices.sort_by(f64::total_cmp);
    if prices.is_empty() {
        return BTreeSet::new();
    }
    let p75 = prices[(prices.len() * 3).div_ceil(4) - 1];
    rows.iter()
        .filter(|r| r.1 < ARTEFACT_FRACTION * p75)
        .map(|r| r.0.clone())
        .collect()
}

/// One priced row: region, zone, on-demand, spot.
#[derive(Debug, Clone)]
struct Row {
    region: String,
    zone: String,
    od: f64,
    spot: Option<f64>,
}

/// Everything read from the file, before pricing.
#[derive(Default)]
struct Rows {
    hosts: BTreeMap<String, Vec<Row>>,
    gpus: BTreeMap<(String, u32), Vec<Row>>,
    tpus: BTreeMap<String, Vec<Row>>,
    variants: usize,
}

fn read_rows(csv: &Csv) -> Result<Rows, CatalogError> {
    let [it, an, ac, rg, az, pr, sp] = [
        "InstanceType",
        "AcceleratorName",
        "AcceleratorCount",
        "Region",
        "AvailabilityZone",
        "Price",
        "SpotPrice",
    ]
    .map(|c| csv.col(c));
    let (it, an, ac, rg, az, pr, sp) = (it?, an?, ac?, rg?, az?, pr?, sp?);
    let mut rows = Rows::default();
    for (line, r) in &csv.rows {
        let is_tpu = r[an].starts_with("tpu-");
        let variant = r[it].starts_with("a3-edgegpu") || r[it].ends_with("-nolssd");
        let is_gpu = r[it].is_empty() && !r[an].is_empty() && !is_tpu;
        if !(is_tpu || is_gpu || variant || gcp_family(&r[it]).is_some()) {
            continue;
        }
        let Some(od) = csv.opt_num(*line, "Price", &r[pr])? else {
            continue;
        };
        let row = Row {
            region: r[rg].to_string(),
            zone: r[az].to_string(),
            od,
            spot: csv.opt_num(*line, "SpotPrice", &r[sp])?,
        };
        if variant {
            rows.variants += 1;
        } else if is_tpu {
            rows.tpus.entry(r[an].to_string()).or_default().push(row);
        } else if is_gpu {
            let n = csv.num(*line, "AcceleratorCount", &r[ac])?;
            rows.gpus
                .entry((r[an].to_string(), n as u32))
                .or_default()
                .push(row);
        } else {
            rows.hosts.entry(r[it].to_string()).or_default().push(row);
        }
    }
    Ok(rows)
}

/// Drop artefact GPU rows (see [`ARTEFACT_FRACTION`]); report the zones per GPU.
fn drop_artefacts(gpus: &mut BTreeMap<(String, u32), Vec<Row>>, report: &mut BuildReport) {
    let mut flagged: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for ((name, _), rows) in gpus.iter_mut() {
        let pairs: Vec<(String, f64)> = rows.iter().map(|r| (r.zone.clone(), r.od)).collect();
        let bad = artefact_zones(&pairs);
        if bad.is_empty() {
            continue;
        }
        let e = flagged.entry(name.clone()).or_default();
        e.0 += bad.len();
        e.1.extend(bad.iter().cloned());
        rows.retain(|r| !bad.contains(&r.zone));
    }
    for (name, (n, zones)) in flagged {
        report.add(format!(
            "gcp: dropped {n} {name} GPU rows priced below {:.0}% of the 75th percentile across zones (mirror artefact, spot ~ on-demand) in {} zones: {}",
            ARTEFACT_FRACTION * 100.0,
            zones.len(),
            zones.into_iter().collect::<Vec<_>>().join(" ")
        ));
    }
}

/// One offer per region from zone prices: on-demand = min over zones, spot = median.
fn per_region(
    zones: Vec<(String, f64, Option<f64>)>,
    make: impl Fn(String, f64, Option<f64>) -> Offer,
) -> Vec<Offer> {
    let mut by_region: BTreeMap<String, (f64, Vec<f64>)> = BTreeMap::new();
    for (region, od, spot) in zones {
        let e = by_region
            .entry(region)
            .or_insert((f64::INFINITY, Vec::new()));
        e.0 = e.0.min(od);
        e.1.extend(spot);
    }
    by_region
        .into_iter()
        .map(|(region, (od, spots))| {
            make(region, round(od, 6), median(&spots).map(|s| round(s, 6)))
        })
        .collect()
}

fn gpu_offers(rows: &Rows, report: &mut BuildReport) -> Vec<Offer> {
    let mut offers = Vec::new();
    let mut unmatched = 0;
    for (itype, hosts) in &rows.hosts {
        let Some((gpu, n, acc)) = gcp_family(itype) else {
            continue;
        };
        let gpu_rows = rows
            .gpus
            .get(&(gpu.to_string(), n))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut zones = Vec::new();
        for h in hosts {
            let Some(g) = gpu_rows.iter().find(|g| g.zone == h.zone) else {
                unmatched += 1;
                continue;
            };
            let spot = h.spot.zip(g.spot).map(|(a, b)| a + b);
            zones.push((h.region.clone(), h.od + g.od, spot));
        }
        offers.extend(per_region(zones, |region, od, spot| Offer {
            provider: "gcp",
            region,
            instance_type: itype.clone(),
            accelerator: acc,
            chips: n,
            on_demand: od,
            spot,
            tpu: false,
        }));
    }
    report.add(format!(
        "gcp: {} GPU machine pools (host row + GPU row of the same zone; on-demand = min over zones, spot = median); {unmatched} host zone rows without a usable GPU row skipped; {} a3-edgegpu/-nolssd variant rows skipped",
        offers.len(),
        rows.variants
    ));
    offers
}

fn tpu_offers(rows: &Rows, report: &mut BuildReport) -> Vec<Offer> {
    let (mut placeholder, mut other_gen, mut odd_size) = (0, 0, 0);
    let mut offers = Vec::new();
    for (name, slice_rows) in &rows.tpus {
        let Some((acc, chips)) = tpu_slice(name) else {
            other_gen += slice_rows.len();
            continue;
        };
        if !chips.is_power_of_two() || chips > MAX_TPU_SLICE_CHIPS {
            odd_size += slice_rows.len();
            continue;
        }
        let mut zones = Vec::new();
        for r in slice_rows {
            if r.od == 700.0 {
                placeholder += 1;
                continue;
            }
            zones.push((r.region.clone(), r.od, r.spot));
        }
        offers.extend(per_region(zones, |region, od, spot| Offer {
            provider: "gcp",
            region,
            instance_type: name.clone(),
            accelerator: acc,
            chips,
            on_demand: od,
            spot,
            tpu: true,
        }));
    }
    let placeholder_total: usize = rows
        .tpus
        .values()
        .flatten()
        .filter(|r| r.od == 700.0)
        .count();
    report.add(format!(
        "gcp: {} TPU slice pools (v5e, v5p; power-of-two slices up to {MAX_TPU_SLICE_CHIPS} chips); skipped {other_gen} rows of TPU generations without a profile (v2/v3/v4/v6e), {odd_size} rows of other slice sizes, {placeholder} v5 rows with the 700.0 placeholder price ({placeholder_total} placeholder rows in all)",
        offers.len()
    ));
    offers
}

/// Parse the GCP catalog into offers (GPU machines and TPU slices).
pub(crate) fn parse(
    file: &str,
    text: &str,
    report: &mut BuildReport,
) -> Result<Vec<Offer>, CatalogError> {
    let csv = Csv::parse(file, text, 0, Extra::TrailingEmptyOnly)?;
    report.add(format!("gcp: {} rows read from {file}", csv.rows.len()));
    let mut rows = read_rows(&csv)?;
    drop_artefacts(&mut rows.gpus, report);
    let mut offers = gpu_offers(&rows, report);
    offers.extend(tpu_offers(&rows, report));
    Ok(offers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artefact_rule_flags_the_h100_rows_only() {
        let mut rows: Vec<(String, f64)> =
            (0..11).map(|i| (format!("low-{i}"), 33.60609)).collect();
        rows.extend((0..18).map(|i| (format!("ok-{i}"), 78.37 + i as f64)));
        let bad = artefact_zones(&rows);
        assert_eq!(bad.len(), 11);
        assert!(bad.iter().all(|z| z.starts_with("low")));
    }

    #[test]
    fn host_plus_gpu_and_artefact_dropped() {
        let text = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice
a3-highgpu-8g,208.0,1872.0,,,,us-east4,us-east4-a,10.0,3.0
a3-highgpu-8g,208.0,1872.0,,,,us-east4,us-east4-b,10.0,3.0
a3-highgpu-8g,208.0,1872.0,,,,us-central1,us-central1-a,10.0,3.0
a3-highgpu-8g,208.0,1872.0,,,,us-west1,us-west1-a,11.0,3.0
a3-highgpu-8g,208.0,1872.0,,,,europe-west4,europe-west4-a,12.0,3.0
,,,H100,8,,us-east4,us-east4-a,78.0,20.0
,,,H100,8,,us-east4,us-east4-b,80.0,24.0
,,,H100,8,,us-central1,us-central1-a,33.60609,32.0
,,,H100,8,,us-west1,us-west1-a,86.0,25.0
,,,H100,8,,europe-west4,europe-west4-a,101.0,29.0
,,,tpu-v5p-16,1,,us-east5,us-east5-a,33.6,6.6
,,,tpu-v6e-8,1,,us-east5,us-east5-a,700.0,
";
        let mut rep = BuildReport::default();
        let offers = parse("gcp.csv", text, &mut rep).unwrap();
        let east4 = offers.iter().find(|o| o.region == "us-east4").unwrap();
        assert_eq!((east4.on_demand, east4.spot), (88.0, Some(25.0)));
        assert!(
            offers.iter().all(|o| o.region != "us-central1"),
            "artefact zone kept: {offers:?}"
        );
        let tpu = offers.iter().find(|o| o.tpu).unwrap();
        assert_eq!(
            (tpu.accelerator, tpu.chips, tpu.on_demand),
            (Accelerator::TpuV5p, 8, 33.6)
        );
        assert!(
            rep.lines
                .iter()
                .any(|l| l.contains("dropped 1 H100 GPU rows") && l.contains("us-central1-a")),
            "{rep}"
        );
    }

    #[test]
    fn families_and_slices() {
        assert_eq!(
            gcp_family("a2-ultragpu-4g"),
            Some(("A100-80GB", 4, Accelerator::A100_80GB))
        );
        assert_eq!(
            gcp_family("a2-megagpu-16g"),
            Some(("A100", 16, Accelerator::A100_40GB))
        );
        assert_eq!(
            gcp_family("g2-standard-48"),
            Some(("L4", 4, Accelerator::L4))
        );
        assert_eq!(gcp_family("n1-standard-8"), None);
        assert_eq!(
            tpu_slice("tpu-v5litepod-16"),
            Some((Accelerator::TpuV5e, 16))
        );
        assert_eq!(tpu_slice("tpu-v4-8"), None);
    }
}
