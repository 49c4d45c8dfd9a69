//! What tests, demos and benchmarks put around the gateway, kept out of the gateway's own
//! library so the data path carries none of it:
//!
//! * [`mock`]: a fault-injecting OpenAI-compatible replica (time to first token, inter-token
//!   delay, errors, disconnects, health, a queue of finite capacity), switchable at run time.
//! * [`loadgen`]: the open-loop load generator of `stratus bench gateway`.
#![warn(missing_docs)]

pub mod loadgen;
pub mod mock;
