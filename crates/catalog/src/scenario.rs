//! Built-in workload sets: the demo set, and seeded generated sets for benchmarks. They live
//! beside the built-in fleet because both are what stratus plans with zero configuration.

use std::collections::BTreeMap;
use stratus_model::parse::{from_str, validate_workloads, Format};
use stratus_model::*;

/// The demo workload file, embedded so `stratus demo` needs nothing outside the binary.
pub const DEMO_YAML: &str = include_str!("../../../examples/demo-workloads.yaml");

/// Parse and validate the demo set against the fleet.
pub fn demo_workloads(fleet: &Fleet) -> Result<WorkloadSet, InputError> {
    let file = "examples/demo-workloads.yaml";
    let w: WorkloadSet = from_str(file, DEMO_YAML, Format::Yaml)?;
    validate_workloads(&w, fleet, file, DEMO_YAML)?;
    Ok(w)
}

/// splitmix64: a tiny seeded generator, so a benchmark's inputs depend only on its seed.
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn images(accs: &[Accelerator]) -> BTreeMap<Arch, String> {
    accs.iter()
        .map(|a| (a.arch(), format!("registry.lab/{}:latest", a.arch())))
        .collect()
}

/// A training gang in one interconnect domain with `hours_per_chip` of work per chip.
fn gang(
    name: String,
    priority: u32,
    chips: u32,
    accelerators: Vec<Accelerator>,
    hours_per_chip: f64,
    residency: Vec<String>,
    spot: bool,
) -> Training {
    Training {
        name,
        priority,
        chips,
        images: images(&accelerators),
        accelerators,
        scope: GangScope::OneDomain,
        work_chip_hours: ChipHours(chips as f64 * hours_per_chip),
        checkpoint_minutes: 30.0,
        deadline_hours: None,
        data_region: None,
        residency,
        spot,
    }
}

/// A generated workload set of `n` workloads shaped like the demo's mix: 0.5 % large training
/// runs (256–1,024 chips), 50 % fine-tunes (1–64 chips), 25 % deferrable batch jobs (8–32
/// chips) and 24 % inference services with 1–3 user locations of 5–50 req/s each. Demand is drawn from the demo's services so
/// replica sizes stay realistic.
pub fn generated(fleet: &Fleet, n: usize, seed: u64) -> Result<WorkloadSet, InputError> {
    use Accelerator::*;
    let demo = demo_workloads(fleet)?;
    let mut r = Rng(seed);
    let acc_sets: [&[Accelerator]; 8] = [
        &[H100, H200],
        &[A100_80GB, H100],
        &[A100_80GB, A100_40GB],
        &[H200],
        &[MI300X, H100],
        &[H100, H200, B200],
        &[A100_80GB],
        &[L4, A10G, A10],
    ];
    let locations: Vec<String> = demo
        .inference
        .iter()
        .flat_map(|s| s.demand.iter().map(|d| d.from.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut w = WorkloadSet::default();
    for i in 0..n {
        let roll = r.below(100);
        if roll < 1 && i % 2 == 0 {
            let accs = r.pick(&acc_sets[..6]).to_vec();
            let chips = *r.pick(&[256u32, 512, 1024]);
            w.training.push(gang(
                format!("train-{i}"),
                250,
                chips,
                accs,
                500.0,
                vec![],
                false,
            ));
        } else if roll < 51 {
            let accs = r.pick(&acc_sets).to_vec();
            let chips = if accs[0] == L4 {
                *r.pick(&[1u32, 2, 4, 8])
            } else {
                *r.pick(&[8u32, 8, 8, 16, 16, 32, 64])
            };
            let priority = *r.pick(&[100u32, 100, 120, 150]);
            let residency = if r.below(10) == 0 {
                vec!["EU".into()]
            } else {
                vec![]
            };
            let spot = r.below(3) == 0;
            w.training.push(gang(
                format!("ft-{i}"),
                priority,
                chips,
                accs,
                48.0,
                residency,
                spot,
            ));
        } else if roll < 76 {
            let accs = r.pick(&acc_sets).to_vec();
            let chips = *r.pick(&[8u32, 8, 16, 32]);
            w.batch.push(Batch {
                name: format!("batch-{i}"),
                priority: 10,
                chips,
                images: images(&accs),
                accelerators: accs,
                work_chip_hours: ChipHours(chips as f64 * 12.0),
                deadline_hours: None,
                max_usd_per_chip_hour: None,
                spot: true,
                residency: vec![],
            });
        } else {
            let t = r.pick(&demo.inference).clone();
            let k = 1 + r.below(3) as usize;
            let demand = (0..k)
                .map(|_| Demand {
                    from: r.pick(&locations).clone(),
                    rps: RequestsPerSec(5.0 + r.below(45) as f64),
                })
                .collect::<Vec<_>>();
            let mut demand_dedup: Vec<Demand> = Vec::new();
            for d in demand {
                match demand_dedup.iter_mut().find(|x| x.from == d.from) {
                    Some(x) => x.rps += d.rps,
                    None => demand_dedup.push(d),
                }
            }
            w.inference.push(Inference {
                name: format!("svc-{i}"),
                demand: demand_dedup,
                min_providers: t.min_providers.min(2),
                min_regions: t.min_regions.min(2),
                residency: vec![],
                ..t
            });
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_set_validates_against_the_built_in_fleet() {
        let w = demo_workloads(crate::builtin()).unwrap();
        assert_eq!(
            (w.training.len(), w.inference.len(), w.batch.len()),
            (41, 12, 10)
        );
    }

    #[test]
    fn generated_sets_depend_only_on_the_seed() {
        let f = crate::builtin();
        let a = generated(f, 200, 7).unwrap();
        assert_eq!(a, generated(f, 200, 7).unwrap());
        assert_ne!(a, generated(f, 200, 8).unwrap());
        assert_eq!(a.len(), 200);
        validate_workloads(&a, f, "<generated>", "").unwrap();
    }
}
