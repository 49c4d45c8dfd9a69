//! The ledger: what the fleet's use cost, in the FinOps Open Cost and Usage Specification
//! (FOCUS 1.2), and where the lab's commitments stand.
//!
//! Data flows one way: a harness (the simulator, the live service) feeds a [`meter::Meter`]
//! with its driver's instances; the [`meter::Usage`] records, the fleet's prices and the
//! [`commitment::Commitment`]s give [`focus::build`]'s rows; [`check::check_csv`] verifies
//! the written file against the specification's column rules; [`burndown::report`] reads
//! the rows back into commitment burn-down and forecast; [`steer`] turns a projected
//! minimum-draw shortfall into free capacity the planner will fill.
#![warn(missing_docs)]

pub mod burndown;
pub mod check;
pub mod commitment;
pub mod focus;
pub mod meter;
pub mod steer;
pub mod time;

pub use commitment::{Commitment, Kind, Terms};
pub use focus::{build, write_csv, Options, Row};
pub use meter::{Meter, Usage};
