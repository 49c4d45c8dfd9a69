//! Hand-built fleets and workloads for the solver's unit tests (and, included by path, the
//! property tests in `tests/properties.rs`): one provider, H100 pools of 4-chip nodes, small
//! enough that the right answer can be worked out by hand.

use std::collections::BTreeMap;
use stratus_model::*;

/// An on-demand H100 pool of `nodes` 4-chip nodes at `usd` per node-hour, one domain.
pub(crate) fn pool(id: &str, nodes: u32, usd: f64) -> Pool {
    Pool {
        id: id.into(),
        instance_type: id.into(),
        accelerator: Accelerator::H100,
        chips_per_node: 4,
        nodes,
        on_demand_per_node_hour: UsdPerHour(usd),
        spot_per_node_hour: None,
        spot_nodes: 0,
        committed: None,
        domain_chips: 4 * nodes,
        host_watts_per_node: Watts(500.0),
    }
}

/// A US region with a power cap of `cap_mw`.
pub(crate) fn region(name: &str, lat: f64, lon: f64, cap_mw: f64, pools: Vec<Pool>) -> Region {
    Region {
        name: name.into(),
        location: String::new(),
        jurisdictions: vec!["US".into()],
        lat,
        lon,
        carbon_g_per_kwh: GramsPerKwh(300.0),
        carbon_hourly: None,
        pue: 1.2,
        power_cap_mw: Megawatts(cap_mw),
        pools,
    }
}

/// One provider holding `regions`.
pub(crate) fn fleet(regions: Vec<Region>) -> Fleet {
    Fleet {
        name: "t".into(),
        notes: vec![],
        providers: vec![Provider {
            name: "aws".into(),
            regions,
        }],
        latency: vec![],
    }
}

/// A one-domain H100 gang of priority 100, 10 chip-hours, checkpointed every 30 min.
pub(crate) fn gang(name: &str, chips: u32) -> Training {
    Training {
        name: name.into(),
        priority: 100,
        chips,
        accelerators: vec![Accelerator::H100],
        images: images(),
        scope: GangScope::OneDomain,
        work_chip_hours: ChipHours(10.0),
        checkpoint_minutes: 30.0,
        deadline_hours: None,
        data_region: None,
        residency: vec![],
        spot: false,
    }
}

/// A CUDA image, all the fixtures' accelerators need.
pub(crate) fn images() -> BTreeMap<Arch, String> {
    BTreeMap::from([(Arch::Cuda, "c".to_string())])
}
