//! Assumptions the public data does not give: capacity, spot capacity, interconnect domains,
//! host power, power caps and two illustrative commitments. Each rule is deterministic and is
//! also written into the fleet's `notes` ([`NOTES`]).

use crate::offer::Offer;
use std::collections::{BTreeMap, BTreeSet};
use stratus_model::units::{Megawatts, UsdPerHour, Watts};
use stratus_model::{Accelerator, Committed, Pool};

/// The rules, as stored in `fleet.notes`.
pub const NOTES: &[&str] = &[
    "nodes (capacity is not public): pools of >= 8 chips per node of H100, H200, GB200, B200, MI300X, Trainium2 or A100-80GB get 512 nodes in the 3 cheapest regions (per-chip on-demand) of that provider and accelerator, 96 elsewhere; other pools 256 nodes with <= 2 chips per node, else 64; TPU slices 16 slices",
    "spot_nodes = nodes / 4 where a spot price exists and is below on-demand; otherwise 0 and no spot price",
    "domain_chips: instance types on a scale-out fabric with >= 8 chips per node (AWS p4d/p4de/p5/p5e/p5en/trn1/trn2 UltraClusters, Azure ND*, GCP a2-*/a3-*/a4-*, Lambda 8x H100/B200) = min(nodes x chips, 32768); GB200 = 72; TPU = slice chips; else chips per node",
    "host_watts_per_node = 0.8 x chips x TDP for nodes of >= 8 chips (DGX H100: 10.2 kW max with 5.6 kW of GPUs), else 150 W + 0.3 x chips x TDP",
    "power_cap_mw = 70 % of the facility power to run every pool of the region at full load (sum of nodes x (chips x TDP + host) x PUE), rounded up to 0.1 MW, so caps bind only when most of a region is busy",
    "committed (illustrative): azure ND96isr_H100_v5 in eastus 256 nodes at 60 % of on-demand (azure-h100-7y); aws trn2.48xlarge in the cheapest trn2 region 128 nodes at 50 % (aws-trainium-reserved); marginal cost 0",
    "prices are list prices in USD per node-hour; zone prices aggregate to regions (AWS: list on-demand, median spot; GCP: min on-demand, median spot over artefact-free zones)",
];

const BIG: &[Accelerator] = &[
    Accelerator::H100,
    Accelerator::H200,
    Accelerator::GB200,
    Accelerator::B200,
    Accelerator::MI300X,
    Accelerator::Trainium2,
    Accelerator::A100_80GB,
];

/// Whether a pool is a large training node (the 512/96 capacity rule).
fn is_big(o: &Offer) -> bool {
    !o.tpu && o.chips >= 8 && BIG.contains(&o.accelerator)
}

/// The 3 cheapest regions per (provider, accelerator) among big pools, by per-chip on-demand
/// price, ties broken by region name.
pub(crate) fn cheapest_regions(offers: &[Offer]) -> BTreeSet<(String, Accelerator, String)> {
    let mut best: BTreeMap<(&str, Accelerator), BTreeMap<&str, f64>> = BTreeMap::new();
    for o in offers.iter().filter(|o| is_big(o)) {
        let per_chip = o.on_demand / o.chips as f64;
        let e = best
            .entry((o.provider, o.accelerator))
            .or_default()
            .entry(&o.region)
            .or_insert(per_chip);
        *e = e.min(per_chip);
    }
    let mut out = BTreeSet::new();
    for ((p, a), regions) in best {
        let mut v: Vec<(&str, f64)> = regions.into_iter().collect();
        v.sort_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(y.0)));
        out.extend(
            v.into_iter()
                .take(3)
                .map(|(r, _)| (p.to_string(), a, r.to_string())),
        );
    }
    out
}

/// Nodes of a pool (see [`NOTES`]).
pub(crate) fn nodes(o: &Offer, cheapest: &BTreeSet<(String, Accelerator, String)>) -> u32 {
    if o.tpu {
        16
    } else if is_big(o) {
        if cheapest.contains(&(o.provider.to_string(), o.accelerator, o.region.clone())) {
            512
        } else {
            96
        }
    } else if o.chips <= 2 {
        256
    } else {
        64
    }
}

/// Whether an instance type sits on a scale-out fabric.
fn on_fabric(o: &Offer) -> bool {
    let it = o.instance_type.as_str();
    o.chips >= 8
        && match o.provider {
            "aws" => ["p4d.", "p4de.", "p5.", "p5e.", "p5en.", "trn1.", "trn2."]
                .iter()
                .any(|p| it.starts_with(p)),
            "azure" => it.starts_with("Standard_ND"),
            "gcp" => ["a2-", "a3-", "a4-"].iter().any(|p| it.starts_with(p)),
            "lambda" => matches!(o.accelerator, Accelerator::H100 | Accelerator::B200),
            _ => false,
        }
}

/// Chips in one interconnect domain (see [`NOTES`]).
pub(crate) fn domain_chips(o: &Offer, nodes: u32) -> u32 {
    if o.tpu {
        o.chips
    } else if o.accelerator == Accelerator::GB200 {
        72.max(o.chips)
    } else if on_fabric(o) {
        (nodes * o.chips).min(32768)
    } else {
        o.chips
    }
}

/// Host power per node (see [`NOTES`]).
pub(crate) fn host_watts(accelerator: Accelerator, chips: u32) -> f64 {
    let gpu = chips as f64 * accelerator.profile().tdp_watts;
    if chips >= 8 {
        0.8 * gpu
    } else {
        150.0 + 0.3 * gpu
    }
}

/// Power cap of a region from its pools and PUE (see [`NOTES`]).
pub(crate) fn power_cap(pools: &[Pool], pue: f64) -> Megawatts {
    let it_watts: f64 = pools
        .iter()
        .map(|p| p.nodes as f64 * p.node_it_watts().0)
        .sum();
    let mw = 0.7 * it_watts * pue / 1e6;
    Megawatts(((mw * 10.0) - 1e-9).ceil().max(1.0) / 10.0)
}

/// Build a pool from an offer (without commitment).
pub(crate) fn pool(o: &Offer, cheapest: &BTreeSet<(String, Accelerator, String)>) -> Pool {
    let n = nodes(o, cheapest);
    let spot = o.spot.filter(|s| *s < o.on_demand);
    Pool {
        id: format!("{}:{}:{}", o.provider, o.region, o.instance_type),
        instance_type: o.instance_type.clone(),
        accelerator: o.accelerator,
        chips_per_node: o.chips,
        nodes: n,
        on_demand_per_node_hour: UsdPerHour(o.on_demand),
        spot_per_node_hour: spot.map(UsdPerHour),
        spot_nodes: if spot.is_some() { n / 4 } else { 0 },
        committed: None,
        domain_chips: domain_chips(o, n),
        host_watts_per_node: Watts(host_watts(o.accelerator, o.chips)),
    }
}

/// Attach a commitment of `nodes` at `fraction` of on-demand, capped at the pool's nodes.
pub(crate) fn commit(pool: &mut Pool, name: &str, nodes: u32, fraction: f64) {
    pool.committed = Some(Committed {
        name: name.to_string(),
        nodes: nodes.min(pool.nodes),
        rate_per_node_hour: UsdPerHour(crate::csvutil::round(
            pool.on_demand_per_node_hour.0 * fraction,
            4,
        )),
        marginal_per_node_hour: UsdPerHour(0.0),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(
        provider: &'static str,
        region: &str,
        it: &str,
        acc: Accelerator,
        chips: u32,
        od: f64,
    ) -> Offer {
        Offer {
            provider,
            region: region.into(),
            instance_type: it.into(),
            accelerator: acc,
            chips,
            on_demand: od,
            spot: None,
            tpu: false,
        }
    }

    #[test]
    fn capacity_rules() {
        let offers: Vec<Offer> = [("r1", 98.0), ("r2", 99.0), ("r3", 100.0), ("r4", 120.0)]
            .iter()
            .map(|(r, p)| offer("aws", r, "p5.48xlarge", Accelerator::H100, 8, *p))
            .collect();
        let cheap = cheapest_regions(&offers);
        assert_eq!(nodes(&offers[0], &cheap), 512);
        assert_eq!(nodes(&offers[3], &cheap), 96);
        let small = offer("aws", "r1", "g5.xlarge", Accelerator::A10G, 1, 1.0);
        assert_eq!(nodes(&small, &cheap), 256);
        assert_eq!(domain_chips(&offers[0], 512), 4096);
        assert_eq!(domain_chips(&small, 256), 1);
        assert_eq!(host_watts(Accelerator::H100, 8), 4480.0);
        assert_eq!(host_watts(Accelerator::L4, 1), 150.0 + 0.3 * 72.0);
    }

    #[test]
    fn spot_only_when_below_on_demand_and_cap_rounds_up() {
        let mut o = offer("gcp", "r", "a3-ultragpu-8g", Accelerator::H200, 8, 80.0);
        o.spot = Some(90.0);
        let p = pool(&o, &BTreeSet::new());
        assert_eq!((p.spot_per_node_hour, p.spot_nodes, p.nodes), (None, 0, 96));
        o.spot = Some(30.0);
        let p = pool(&o, &BTreeSet::new());
        assert_eq!(p.spot_nodes, 24);
        // 96 nodes x (8 x 700 + 4480) W x 1.1 x 0.7 = 0.745 MW -> 0.8 MW.
        assert_eq!(power_cap(&[p], 1.1), Megawatts(0.8));
    }
}
