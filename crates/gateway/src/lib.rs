//! `stratus gateway`: the inference gateway users reach the lab's models through.
//!
//! * [`config`]: the configuration file, validated whole before anything starts.
//! * [`layer`]: the request path's layers (auth → admit → route → forward → account) and
//!   why each refuses a request.
//! * [`route`]: the pure routing decision (nearest, least loaded, prefix affinity with bounded
//!   load, cost), tested without sockets.
//! * [`limit`]: per-key request and token buckets, time passed in.
//! * [`usage`]: what is read from requests (model, prefix) and responses (token usage).
//! * [`proxy`]: the hyper server and the request path: streams answers through as they
//!   arrive, retries before the first byte, ends cut streams with an error event.
//! * [`replica`]: each replica's state and the replica set, an immutable snapshot swapped whole.
//! * [`upstream`]: the pooled HTTP/1.1 client to replicas, read by the request's own task.
//! * [`health`]: active health checks and queue-depth scraping; passive ejection is in `proxy`.
//! * [`follow`]: the replica set kept in step with a control plane's endpoint list.
//! * [`metrics`]: the Prometheus exposition.

pub mod config;
pub mod follow;
pub mod health;
pub mod layer;
pub mod limit;
pub mod listen;
pub mod metrics;
pub mod proxy;
pub mod replica;
pub mod route;
pub mod upstream;
pub mod usage;

pub use config::Config;
pub use proxy::{start, Gateway, Running};
