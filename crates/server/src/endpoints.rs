//! The inference endpoints the control plane advertises: every instance of an inference
//! service that a driver gave an address, with where it runs, what it costs and whether it
//! takes traffic. Gateways follow this list (`GET /v1/endpoints`, a long poll on its
//! version), so the replicas the controller launches are the replicas users reach.
//!
//! Computed after every reconcile from the controller's last observation and what it owns:
//! the API never calls a driver.

use serde::Serialize;
use std::collections::HashMap;
use stratus_control::{Controller, InstanceState, Phase, PoolCapacity, UnitKey};
use stratus_model::{Fleet, WorkloadSet};

/// Whether an endpoint takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    /// Launched, not yet answering its health check: not routed to.
    Starting,
    /// Running and healthy: routed to.
    Serving,
    /// On its way out (the controller stopped it, or no unit owns it any more): no new
    /// requests; those in flight finish.
    Draining,
}

/// One serving instance of an inference service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// The instance's client token (`token/i` for the i-th of an instance's replica
    /// processes): unique, stable for its life.
    pub id: String,
    /// Service (workload) name.
    pub service: String,
    /// Model served.
    pub model: String,
    /// The planner's unit (`service@location[#shard]`).
    pub unit: String,
    /// Address (`http://host:port`; `sim://…` for simulated providers).
    pub url: String,
    /// Region id (`provider:region`).
    pub region: String,
    /// Provider.
    pub provider: String,
    /// Pool id.
    pub pool: String,
    /// Accelerator model.
    pub accelerator: String,
    /// How the nodes are bought.
    pub category: stratus_plan::Category,
    /// Nodes of the instance.
    pub nodes: u32,
    /// Replicas the instance carries.
    pub replicas: u32,
    /// What the instance costs, $/h (committed nodes at the contracted rate).
    pub usd_per_hour: f64,
    /// Whether it takes traffic.
    pub state: EndpointState,
}

/// Every endpoint of every inference service, sorted by service then id.
pub fn compute(controller: &Controller, workloads: &WorkloadSet, fleet: &Fleet) -> Vec<Endpoint> {
    // Looked up once per reconcile, not once per instance.
    let services: HashMap<&str, &str> = workloads
        .inference
        .iter()
        .map(|s| (s.name.as_str(), s.model.as_str()))
        .collect();
    let phases: HashMap<&str, Phase> = controller
        .owned()
        .map(|o| (o.request.token.as_str(), o.phase))
        .collect();
    let mut pools: HashMap<&str, &stratus_model::Pool> = HashMap::new();
    let mut out = Vec::new();
    for i in controller.observed() {
        if i.endpoints.is_empty() {
            continue;
        }
        let r = &i.request;
        if !UnitKey::parse(&r.unit).is_ok_and(|u| u.is_replicas()) {
            continue;
        }
        let Some(&model) = services.get(r.workload.as_str()) else {
            // A deleted service's instances are being stopped: no gateway should pick them.
            continue;
        };
        let state = match (i.state, phases.get(r.token.as_str()).copied()) {
            (InstanceState::Lost(_), _) => continue,
            (InstanceState::Stopping { .. }, _)
            | (_, Some(Phase::Stopping { .. }))
            | (_, Some(Phase::WrittenOff))
            | (_, None) => EndpointState::Draining,
            (InstanceState::Pending { .. }, _) => EndpointState::Starting,
            (InstanceState::Running, _) => EndpointState::Serving,
        };
        if pools.is_empty() {
            pools = fleet.pools().map(|(_, _, p)| (p.id.as_str(), p)).collect();
        }
        let pool = pools.get(r.pool.as_str()).copied();
        let usd_per_hour = pool.map_or(0.0, |p| {
            let split = PoolCapacity::of(r);
            let committed = p
                .committed
                .as_ref()
                .map_or(p.on_demand_per_node_hour.0, |c| c.rate_per_node_hour.0);
            f64::from(split.committed) * committed
                + f64::from(split.on_demand) * p.on_demand_per_node_hour.0
                + f64::from(split.spot)
                    * p.spot_per_node_hour
                        .map_or(p.on_demand_per_node_hour.0, |s| s.0)
        });
        // One endpoint per address: an instance whose replicas are separate processes lists
        // each (`token/i`), with its share of the replicas and the cost.
        let n = i.endpoints.len();
        for (k, url) in i.endpoints.iter().enumerate() {
            out.push(Endpoint {
                id: if n == 1 {
                    r.token.clone()
                } else {
                    format!("{}/{k}", r.token)
                },
                service: r.workload.clone(),
                model: model.to_string(),
                unit: r.unit.clone(),
                url: url.clone(),
                region: r.region.clone(),
                provider: r.region.split(':').next().unwrap_or("").to_string(),
                pool: r.pool.clone(),
                accelerator: pool.map_or(String::new(), |p| p.accelerator.name().to_string()),
                category: r.category,
                nodes: r.nodes,
                replicas: if n == 1 { r.replicas } else { 1 },
                usd_per_hour: usd_per_hour / n as f64,
                state,
            });
        }
    }
    out.sort_by(|a, b| (&a.service, &a.id).cmp(&(&b.service, &b.id)));
    out
}

/// The cumulative `stratus_gateway_demand_total{model,location}` counters in a gateway's
/// metrics text: what traffic-driven sizing is fed.
pub fn demand_counts(text: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("stratus_gateway_demand_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| -> Option<String> {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let mut v = String::new();
            let mut chars = labels[start..].chars();
            while let Some(ch) = chars.next() {
                match ch {
                    '"' => return Some(v),
                    '\\' => v.push(chars.next()?),
                    _ => v.push(ch),
                }
            }
            None
        };
        let (Some(model), Some(location), Ok(n)) = (
            label("model"),
            label("location"),
            value.trim().parse::<u64>(),
        ) else {
            continue;
        };
        *out.entry((model, location)).or_default() += n;
    }
    out
}

/// The list gateways watch: a version that changes whenever the endpoints do, and the
/// endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointList {
    /// Starts at the service's start time in milliseconds and grows by one per change, so
    /// a restarted control plane never answers a gateway's old version with a new list.
    pub version: u64,
    /// Every endpoint of every service.
    pub endpoints: Vec<Endpoint>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn demand_counters_are_read_from_a_gateways_metrics() {
        let text = "# TYPE stratus_gateway_demand_total counter\n\
            stratus_gateway_demand_total{model=\"tiny\",location=\"aws:us-east-1\"} 42\n\
            stratus_gateway_demand_total{model=\"a\\\"b\",location=\"unknown\"} 7\n\
            stratus_gateway_demand_total{model=\"x\"} 1\n\
            stratus_gateway_requests_total{model=\"tiny\"} 5\n";
        let c = super::demand_counts(text);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[&("tiny".to_string(), "aws:us-east-1".to_string())], 42);
        assert_eq!(c[&("a\"b".to_string(), "unknown".to_string())], 7);
    }
}
