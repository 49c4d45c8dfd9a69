//! Planning studies that answer questions beside placement, kept out of the planner so the
//! decision core stays small and pure: `buildout` (what a facility-power ramp turns into, year
//! by year; `stratus capacity plan`) and `shift` (moving deferrable batch jobs in time and space
//! on hourly grid carbon; `stratus carbon shift`). Neither is used by the planner, the
//! controller or the simulator.

pub mod buildout;
pub mod shift;
