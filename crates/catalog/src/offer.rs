//! A priced instance type in one region, before capacity assumptions are applied.

use stratus_model::Accelerator;

/// One (provider, region, instance type) with list prices, aggregated over zones.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Offer {
    /// `aws`, `azure`, `gcp`, `lambda`.
    pub provider: &'static str,
    /// Provider's region name.
    pub region: String,
    /// Provider's instance type (for TPUs, the slice type, e.g. `tpu-v5p-16`).
    pub instance_type: String,
    /// Accelerator model.
    pub accelerator: Accelerator,
    /// Chips per node (per slice for TPUs).
    pub chips: u32,
    /// On-demand USD per node-hour.
    pub on_demand: f64,
    /// Spot USD per node-hour, if the source has one.
    pub spot: Option<f64>,
    /// Whether this is a TPU slice (capacity counted in slices).
    pub tpu: bool,
}

/// Parse an accelerator count such as `8.0`; `None` for fractions or values below 1.
pub(crate) fn whole_count(x: f64) -> Option<u32> {
    (x >= 1.0 && x.fract() == 0.0 && x <= 100_000.0).then_some(x as u32)
}
