//! Accelerator models and their profiles.
//!
//! Relative throughput is measured against the H100 SXM and derived by one stated rule so that
//! every figure can be checked against its datasheet:
//! * training = dense BF16 (FP16 where BF16 is absent) peak TFLOPS / H100's 989;
//! * inference = HBM bandwidth / H100's 3.35 TB/s, since LLM decoding is bandwidth-bound.
//!
//! Peak ratios overstate young software stacks (ROCm, Neuron); a lab that has measured its own
//! models overrides them per workload (`replica` throughput per accelerator in inference specs).
//! Where a vendor publishes no TDP, the figure is an estimate and says so in `source`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Software architecture an image must be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// NVIDIA CUDA.
    Cuda,
    /// AMD ROCm.
    Rocm,
    /// AWS Neuron (Trainium, Inferentia).
    Neuron,
    /// Google XLA on TPU.
    Xla,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Cuda => "cuda",
            Arch::Rocm => "rocm",
            Arch::Neuron => "neuron",
            Arch::Xla => "xla",
        })
    }
}

/// Static facts about one accelerator model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    /// Canonical name, as written in fleet and workload files.
    pub name: &'static str,
    /// Memory per chip, GB.
    pub memory_gb: f64,
    /// Board/chip power, watts, used for power caps and energy.
    pub tdp_watts: f64,
    /// Image architecture.
    pub arch: Arch,
    /// Training throughput relative to H100 (see module doc for the rule).
    pub rel_training: f64,
    /// Inference throughput relative to H100 (see module doc for the rule).
    pub rel_inference: f64,
    /// Where the figures come from.
    pub source: &'static str,
}

macro_rules! accelerators {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal { $mem:expr, $tdp:expr, $arch:ident, $tr:expr, $inf:expr, $src:literal } ),* $(,)?) => {
        /// Accelerator model. Closed set: an unknown name in a file is an error, not a silent skip.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Accelerator { $( $(#[$doc])* $variant ),* }

        impl Accelerator {
            /// Every model, in declaration order.
            pub const ALL: &'static [Accelerator] = &[ $( Accelerator::$variant ),* ];

            /// The profile of this model.
            pub fn profile(self) -> &'static Profile {
                match self {
                    $( Accelerator::$variant => {
                        const P: Profile = Profile {
                            name: $name, memory_gb: $mem as f64, tdp_watts: $tdp as f64,
                            arch: Arch::$arch, rel_training: $tr, rel_inference: $inf, source: $src,
                        };
                        &P
                    } ),*
                }
            }
        }
    };
}

accelerators! {
    /// NVIDIA H100 SXM 80 GB, the reference.
    H100 = "H100" { 80, 700, Cuda, 1.0, 1.0,
        "NVIDIA H100 datasheet: 989 TFLOPS BF16 dense, 3.35 TB/s HBM3, 700 W (SXM)" },
    /// NVIDIA H100 NVL 94 GB (PCIe pair card, Azure NC H100 v5).
    H100Nvl = "H100-NVL" { 94, 400, Cuda, 0.84, 1.16,
        "NVIDIA H100 datasheet (NVL): 835 TFLOPS BF16 dense, 3.9 TB/s, 350-400 W" },
    /// NVIDIA H200 SXM 141 GB.
    H200 = "H200" { 141, 700, Cuda, 1.0, 1.43,
        "NVIDIA H200 datasheet: 989 TFLOPS BF16 dense, 4.8 TB/s HBM3e, up to 700 W" },
    /// NVIDIA GB200 (one Blackwell GPU of a GB200 NVL72).
    GB200 = "GB200" { 186, 1200, Cuda, 2.53, 2.39,
        "NVIDIA GB200 NVL72 spec: 180 PFLOPS FP16/BF16 dense per 72 GPUs, 8 TB/s per GPU; ~1.2 kW per GPU (estimate from 120 kW rack)" },
    /// NVIDIA B200 SXM.
    B200 = "B200" { 180, 1000, Cuda, 2.27, 2.39,
        "NVIDIA HGX B200 spec: 2.25 PFLOPS FP16/BF16 dense, 8 TB/s, 1000 W" },
    /// NVIDIA A100 SXM 80 GB.
    A100_80GB = "A100-80GB" { 80, 400, Cuda, 0.315, 0.61,
        "NVIDIA A100 datasheet: 312 TFLOPS BF16 dense, 2.039 TB/s (80 GB SXM), 400 W" },
    /// NVIDIA A100 SXM 40 GB.
    A100_40GB = "A100-40GB" { 40, 400, Cuda, 0.315, 0.46,
        "NVIDIA A100 datasheet: 312 TFLOPS BF16 dense, 1.555 TB/s (40 GB), 400 W" },
    /// NVIDIA L40S 48 GB.
    L40S = "L40S" { 48, 350, Cuda, 0.37, 0.26,
        "NVIDIA L40S datasheet: 362 TFLOPS BF16 dense, 864 GB/s, 350 W" },
    /// NVIDIA L4 24 GB.
    L4 = "L4" { 24, 72, Cuda, 0.122, 0.09,
        "NVIDIA L4 datasheet: 121 TFLOPS BF16 dense, 300 GB/s, 72 W" },
    /// NVIDIA A10G 24 GB (AWS g5).
    A10G = "A10G" { 24, 300, Cuda, 0.126, 0.18,
        "AWS G5 page and NVIDIA A10 datasheet: 125 TFLOPS BF16 dense, 600 GB/s; 300 W board (AWS)" },
    /// NVIDIA A10 24 GB (Azure NVads A10 v5).
    A10 = "A10" { 24, 150, Cuda, 0.126, 0.18,
        "NVIDIA A10 datasheet: 125 TFLOPS BF16 dense, 600 GB/s, 150 W" },
    /// NVIDIA T4 16 GB.
    T4 = "T4" { 16, 70, Cuda, 0.066, 0.096,
        "NVIDIA T4 datasheet: 65 TFLOPS FP16, 320 GB/s, 70 W" },
    /// NVIDIA V100 SXM2 16 GB.
    V100 = "V100" { 16, 300, Cuda, 0.126, 0.27,
        "NVIDIA V100 datasheet: 125 TFLOPS FP16 tensor, 900 GB/s, 300 W (SXM2)" },
    /// NVIDIA V100 SXM2 32 GB.
    V100_32GB = "V100-32GB" { 32, 300, Cuda, 0.126, 0.27,
        "NVIDIA V100 datasheet: 125 TFLOPS FP16 tensor, 900 GB/s, 300 W (SXM2 32 GB)" },
    /// AMD Instinct MI300X 192 GB.
    MI300X = "MI300X" { 192, 750, Rocm, 1.32, 1.58,
        "AMD MI300X datasheet: 1307 TFLOPS BF16 dense, 5.3 TB/s, 750 W" },
    /// Google TPU v5e.
    TpuV5e = "TPU-v5e" { 16, 250, Xla, 0.2, 0.24,
        "Google Cloud TPU v5e docs: 197 TFLOPS BF16, 819 GB/s, 16 GB; power unpublished, 250 W estimate" },
    /// Google TPU v5p.
    TpuV5p = "TPU-v5p" { 95, 500, Xla, 0.46, 0.83,
        "Google Cloud TPU v5p docs: 459 TFLOPS BF16, 2.765 TB/s, 95 GB; power unpublished, 500 W estimate" },
    /// AWS Trainium (trn1).
    Trainium1 = "Trainium1" { 32, 300, Neuron, 0.19, 0.24,
        "AWS Trainium docs: 190 TFLOPS BF16 per chip, 820 GB/s, 32 GB; power unpublished, 300 W estimate" },
    /// AWS Trainium2 (trn2).
    Trainium2 = "Trainium2" { 96, 500, Neuron, 0.67, 0.87,
        "AWS Trainium2 docs: 667 TFLOPS BF16 dense per chip, 2.9 TB/s, 96 GB; power unpublished, 500 W estimate" },
    /// AWS Inferentia2 (inf2).
    Inferentia2 = "Inferentia2" { 32, 175, Neuron, 0.19, 0.24,
        "AWS Inferentia2 docs: 190 TFLOPS FP16/BF16 per chip, 820 GB/s, 32 GB; power unpublished, 175 W estimate" },
}

impl Accelerator {
    /// Canonical name.
    pub fn name(self) -> &'static str {
        self.profile().name
    }
    /// Image architecture.
    pub fn arch(self) -> Arch {
        self.profile().arch
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a name that is not a known accelerator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown accelerator {0:?} (known: {known})", known = known_names())]
pub struct UnknownAccelerator(pub String);

fn known_names() -> String {
    Accelerator::ALL
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

struct KnownAccelerators;

impl serde::de::Expected for KnownAccelerators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a known accelerator ({})", known_names())
    }
}

impl FromStr for Accelerator {
    type Err = UnknownAccelerator;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Accelerator::ALL
            .iter()
            .copied()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAccelerator(s.to_string()))
    }
}

impl Serialize for Accelerator {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Accelerator {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: UnknownAccelerator| {
            serde::de::Error::invalid_value(serde::de::Unexpected::Str(&e.0), &KnownAccelerators)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_has_a_source_and_sane_numbers() {
        for a in Accelerator::ALL {
            let p = a.profile();
            assert!(!p.source.is_empty());
            assert!(p.tdp_watts > 10.0 && p.tdp_watts < 2000.0, "{}", p.name);
            assert!(p.rel_training > 0.0 && p.rel_inference > 0.0);
            assert_eq!(p.name.parse::<Accelerator>().unwrap(), *a);
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = "H1000".parse::<Accelerator>().unwrap_err().to_string();
        assert!(e.contains("H1000") && e.contains("MI300X"), "{e}");
    }
}
