//! The fleet: providers → regions → pools, plus measured inter-region latency.
//!
//! This is the one schema for the built-in fleet, user fleet files (YAML, TOML or JSON) and
//! `stratus fleet show --format json`, so a fleet can round-trip through other tools.

use crate::accelerator::Accelerator;
use crate::units::{GramsPerKwh, Megawatts, Millis, UsdPerHour, Watts};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A whole fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Free-form name, shown in summaries.
    #[serde(default)]
    pub name: String,
    /// Provenance notes: which inputs and assumptions produced this fleet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Cloud providers (or on-prem sites) and their regions.
    pub providers: Vec<Provider>,
    /// Measured round-trip times between regions; missing pairs are estimated (see `latency`).
    #[serde(default)]
    pub latency: Vec<LatencyPair>,
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Short lowercase name: `aws`, `azure`, `gcp`, `lambda`, …
    pub name: String,
    /// Its regions.
    pub regions: Vec<Region>,
}

/// One region (a site with one grid, one power envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Provider's region name, e.g. `us-east-1`, `eastus`, `europe-west4`.
    pub name: String,
    /// Human place name.
    #[serde(default)]
    pub location: String,
    /// Jurisdictions this region sits in (country code first, then unions such as `EU`);
    /// residency rules match against these.
    #[serde(default)]
    pub jurisdictions: Vec<String>,
    /// Latitude, decimal degrees.
    pub lat: f64,
    /// Longitude, decimal degrees.
    pub lon: f64,
    /// Yearly average grid carbon intensity.
    pub carbon_g_per_kwh: GramsPerKwh,
    /// Optional hourly series (index 0 = the plan's hour 0); the planner uses the yearly value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon_hourly: Option<Vec<GramsPerKwh>>,
    /// Power usage effectiveness (facility power / IT power), ≥ 1.
    pub pue: f64,
    /// Facility power available to the pools of this region.
    pub power_cap_mw: Megawatts,
    /// Pools of identical nodes.
    pub pools: Vec<Pool>,
}

/// A pool of identical nodes in one region, bought at one set of prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Stable id, `provider:region:instance_type`; plans refer to pools by it.
    pub id: String,
    /// Provider's instance type (or a site's node class).
    pub instance_type: String,
    /// Accelerator model.
    pub accelerator: Accelerator,
    /// Chips per node.
    pub chips_per_node: u32,
    /// Nodes obtainable on demand (including those covered by a commitment).
    pub nodes: u32,
    /// On-demand price per node-hour.
    pub on_demand_per_node_hour: UsdPerHour,
    /// Spot price per node-hour, where a spot market exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_per_node_hour: Option<UsdPerHour>,
    /// Spot nodes obtainable, in addition to `nodes`.
    #[serde(default)]
    pub spot_nodes: u32,
    /// Capacity already paid for under a commitment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<Committed>,
    /// Chips reachable over one high-bandwidth interconnect domain (NVLink/IB fabric, TPU pod
    /// slice, UltraCluster); a gang that must stay in one domain can be at most this large.
    pub domain_chips: u32,
    /// Host power per node beyond the accelerators (CPUs, NICs, fans).
    #[serde(default)]
    pub host_watts_per_node: Watts,
}

/// Nodes of a pool covered by a commitment (reservation or a spend commitment's capacity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Committed {
    /// Name of the commitment, for reports.
    pub name: String,
    /// Nodes covered; at most the pool's `nodes`.
    pub nodes: u32,
    /// Contracted price per node-hour: paid whether used or not.
    pub rate_per_node_hour: UsdPerHour,
    /// Cost of actually using a committed node (use-it-or-lose-it: usually 0).
    #[serde(default)]
    pub marginal_per_node_hour: UsdPerHour,
}

/// A measured round-trip time between two regions (`provider:region` ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyPair {
    /// Region id.
    pub a: String,
    /// Region id.
    pub b: String,
    /// Round-trip time.
    pub rtt_ms: Millis,
}

impl Pool {
    /// Power one node draws at full load before PUE: chips × TDP + host.
    pub fn node_it_watts(&self) -> Watts {
        self.node_watts(1.0)
    }

    /// Power one node draws before PUE with its accelerators at `utilisation` of TDP: chips ×
    /// TDP × utilisation + host. Hosts do not idle down with the chips, so their power is
    /// counted whole.
    pub fn node_watts(&self, utilisation: f64) -> Watts {
        Watts(self.chips_per_node as f64 * self.accelerator.profile().tdp_watts * utilisation)
            + self.host_watts_per_node
    }
}

/// A region id, `provider:region`.
pub fn region_id(provider: &str, region: &str) -> String {
    format!("{provider}:{region}")
}

/// Great-circle distance in km between two points given in degrees.
pub fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// RTT estimate for a pair the matrices do not cover: 5 ms + 0.0135 ms/km of great-circle
/// distance (light in fibre covers 200 km/ms one way; 0.0135 ms/km round trip is a path stretch
/// of 1.35). Fitted by hand to US east↔west 64 ms, trans-Atlantic 70 ms and US east↔Singapore
/// 219 ms in the AWS matrix; `catalog` tests its median error against the real matrices.
pub fn estimate_rtt(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> Millis {
    Millis(5.0 + 0.0135 * great_circle_km(lat1, lon1, lat2, lon2))
}

/// Dense RTT lookup between the fleet's regions: measured where the fleet has a pair,
/// great-circle estimate otherwise.
#[derive(Debug, Clone)]
pub struct LatencyTable {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    rtt: Vec<f32>,
    measured: Vec<bool>,
}

impl LatencyTable {
    /// Build the table for every region of the fleet.
    pub fn new(fleet: &Fleet) -> LatencyTable {
        let mut ids = Vec::new();
        let mut coords = Vec::new();
        for p in &fleet.providers {
            for r in &p.regions {
                ids.push(region_id(&p.name, &r.name));
                coords.push((r.lat, r.lon));
            }
        }
        let n = ids.len();
        let index: HashMap<String, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        let mut rtt = vec![0f32; n * n];
        let mut measured = vec![false; n * n];
        for i in 0..n {
            for j in 0..n {
                let (a, b) = (coords[i], coords[j]);
                rtt[i * n + j] = estimate_rtt(a.0, a.1, b.0, b.1).0 as f32;
            }
        }
        // A measured value overrides the estimate in both directions unless the reverse
        // direction was measured too (then each keeps its own).
        for l in &fleet.latency {
            if let (Some(&i), Some(&j)) = (index.get(&l.a), index.get(&l.b)) {
                rtt[i * n + j] = l.rtt_ms.0 as f32;
                measured[i * n + j] = true;
                if !measured[j * n + i] {
                    rtt[j * n + i] = l.rtt_ms.0 as f32;
                }
            }
        }
        LatencyTable {
            ids,
            index,
            rtt,
            measured,
        }
    }

    /// The table for `fleet`, memoised per thread on the fleet's region ids, coordinates and
    /// measured pairs: the controller plans many views of one fleet that differ only in pools,
    /// and the table (trigonometry for every pair of regions) would dominate their cost.
    pub fn cached(fleet: &Fleet) -> std::sync::Arc<LatencyTable> {
        use std::cell::RefCell;
        use std::sync::Arc;
        thread_local! {
            static CACHE: RefCell<Option<(u64, Arc<LatencyTable>)>> = const { RefCell::new(None) };
        }
        // A word-at-a-time multiplicative hash over everything the table depends on.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            let mut mix = |w: u64| {
                h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                h ^= h >> 29;
            };
            mix(bytes.len() as u64);
            let mut chunks = bytes.chunks_exact(8);
            for c in &mut chunks {
                mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
            }
            let mut last = [0u8; 8];
            last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
            mix(u64::from_le_bytes(last));
        };
        for p in &fleet.providers {
            eat(p.name.as_bytes());
            for r in &p.regions {
                eat(r.name.as_bytes());
                eat(&r.lat.to_bits().to_le_bytes());
                eat(&r.lon.to_bits().to_le_bytes());
            }
            eat(b"/");
        }
        for l in &fleet.latency {
            eat(l.a.as_bytes());
            eat(l.b.as_bytes());
            eat(&l.rtt_ms.0.to_bits().to_le_bytes());
        }
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            match &*c {
                Some((k, t)) if *k == h => t.clone(),
                _ => {
                    let t = Arc::new(LatencyTable::new(fleet));
                    *c = Some((h, t.clone()));
                    t
                }
            }
        })
    }

    /// Index of a region id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Region id at an index.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// RTT between two region indices.
    pub fn rtt(&self, i: usize, j: usize) -> Millis {
        Millis(self.rtt[i * self.ids.len() + j] as f64)
    }

    /// Whether the pair was measured (rather than estimated).
    pub fn is_measured(&self, i: usize, j: usize) -> bool {
        let n = self.ids.len();
        self.measured[i * n + j] || self.measured[j * n + i]
    }
}

impl Fleet {
    /// Iterate over (provider, region) pairs.
    pub fn regions(&self) -> impl Iterator<Item = (&Provider, &Region)> {
        self.providers
            .iter()
            .flat_map(|p| p.regions.iter().map(move |r| (p, r)))
    }

    /// Iterate over (provider, region, pool).
    pub fn pools(&self) -> impl Iterator<Item = (&Provider, &Region, &Pool)> {
        self.regions()
            .flat_map(|(p, r)| r.pools.iter().map(move |pl| (p, r, pl)))
    }

    /// Number of pools.
    pub fn pool_count(&self) -> usize {
        self.pools().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn great_circle_matches_known_distances() {
        // New York (40.71, -74.01) to London (51.51, -0.13): about 5,570 km.
        let d = great_circle_km(40.71, -74.01, 51.51, -0.13);
        assert!((d - 5570.0).abs() < 30.0, "{d}");
    }
}
