//! An exact reference for the planner, written from the planning model's documented rules and
//! nothing else: it shares no code with `stratus_plan::problem` or `stratus_plan::solve`, only
//! the plain data types (`Fleet`, `WorkloadSet`, `Policy`, `Plan`).
//!
//! Three uses:
//! - [`Model::new`] turns a fleet and workloads into items (placement units) and their options
//!   under the rules below; [`solve`] writes them as a MILP (or its LP relaxation) in CPLEX LP
//!   format and solves it with HiGHS, an external program, so the optimum does not depend on
//!   any code under test;
//! - [`check`] re-derives every placement of a `Plan` from the rules, names each rule a
//!   placement breaks (capacity, power, redundancy, every filter, each node of a blend), and
//!   recomputes the plan's objective;
//! - `stratus bench plan --reference` and the property tests compare the planner's objective and
//!   bound with the optimum.
//!
//! # The planning model
//!
//! **Slots.** Each pool offers up to three ways to buy nodes: `committed` (its committed nodes,
//! at the commitment's marginal price), `on-demand` (its other nodes, at the list price) and
//! `spot` (its spot nodes, at the spot price, where a spot price exists). A slot with no nodes
//! does not exist. Each slot's nodes are a capacity; each region's power cap (MW) bounds the
//! facility power of what runs in it.
//!
//! **Items.** A training job or a batch job is one item, placed whole in one slot, or in a
//! *blend*: all of a pool's committed nodes plus on-demand nodes of the same pool for the rest,
//! when the job needs more nodes than the pool has committed. An inference service is one item
//! per user location; a service with fewer locations than `max(min_providers, min_regions)`
//! splits its first locations into shards until it has that many items: with `e` missing
//! items and `L` locations, each of the first `min(e, L)` locations becomes `1 + ⌈e / L⌉`
//! shards, each serving an equal share of the location's demand. Item keys are the workload
//! name, `service@location` and `service@location#k` for shards.
//!
//! **Options.** A job of `c` chips on a pool of `n` chips per node takes `⌈c / n⌉` nodes. An
//! inference item on accelerator `a` needs `r = max(1, ⌈rps / rps_a⌉)` replicas of `chips_a`
//! chips: `⌈r / ⌊n / chips_a⌋⌉` nodes when a replica fits in a node, else `r · ⌈chips_a / n⌉`.
//! An option exists only if every rule holds: the accelerator is allowed (for a service: it
//! has a replica shape for it); the region satisfies the residency rule (empty: anywhere); spot
//! only if the workload allows spot; a `one_domain` gang fits in the pool's interconnect domain
//! (`chips ≤ domain_chips`); the slot (for a blend, each of its two slots) has the nodes; the
//! option alone fits under its region's power cap; a job with a deadline finishes in time
//! (`work / (chips × rel_training) ≤ deadline`); a batch job's price ceiling holds for every node
//! (`price per node / chips per node ≤ max`, for both kinds of node of a blend); a service's
//! region is within its latency SLO of the item's users.
//!
//! **Power.** A node draws `(chips × TDP × power_cap_utilisation + host) × PUE` against its
//! region's cap, and `(chips × TDP × utilisation + host) × PUE` on average, which is what carbon
//! is charged on.
//!
//! **Cost, $/h.** A job's option costs its dollars per hour (nodes × price; a blend's two parts
//! at their own prices) divided by the accelerator's `rel_training` (progress at H100 speed),
//! × (1 + `spot_training_overhead`) for training on spot; plus carbon (average kW × g/kWh ×
//! `carbon_price` per tonne); plus `remote_data_usd_per_chip_hour` × chips when a training job
//! runs outside its `data_region`. A service's option costs its dollars plus carbon plus
//! `latency_usd_per_ms_krps_hour` × RTT × rps / 1000. With a previous plan, an option whose
//! pool or category (a blend is its own category) differs from the item's previous placement
//! adds a migration charge: max(dollars, nodes × the pool's on-demand price) × (half the
//! checkpoint interval + `restart_hours`) / `migration_amortization_hours` for a training job
//! (batch jobs: a 30-minute interval), × `restart_hours` / … for a service.
//!
//! **Penalty.** Leaving an item out costs 1000 $/h × chips × (1 + priority / 100), a tenth of it
//! for batch jobs; a service item counts the fewest chips any of its replica shapes needs for
//! its demand. An item with no option, and every item of a service whose options together
//! cannot span its required providers and regions, is left out by every plan and counts
//! nothing.
//!
//! **Redundancy.** The placed items of a service span at least `min_providers` providers and
//! `min_regions` regions, or none of them is placed.
//!
//! **Objective.** The sum of the placed options' costs and the left-out items' penalties.

mod check;
mod diff;
mod highs;
mod model;

pub use check::{check, Checked};
pub use diff::differences;
pub use highs::{find_highs, solve, Solution, SolveOptions, Status};
pub use model::{by_key, usage, Item, Kind, Model, Opt, Slot};
