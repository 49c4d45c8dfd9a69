//! `kubernetes`: a plan as manifests. A training gang becomes a JobSet (one indexed Job, a pod
//! per node, all-or-nothing), an inference unit a LeaderWorkerSet (a group of pods per replica),
//! a batch job an indexed Job. Each pod asks for its node's accelerators by the device plugin's
//! resource name and is pinned to the pool by node selectors, so the cluster's autoscaler
//! brings up exactly the capacity the planner chose. No API server exists offline: the output
//! is checked structurally.

use serde_json::{json, Value};
use stratus_model::{Accelerator, Arch, Fleet, WorkloadSet};
use stratus_plan::{Category, Placement, Plan, UnitKind};

/// The device-plugin resource a pod requests for `acc`, and how many for a node of `chips`
/// chips (one device per chip: a GPU, a Neuron device, a TPU chip).
pub fn resource(acc: Accelerator, chips: u32) -> (&'static str, u32) {
    match acc.arch() {
        Arch::Cuda => ("nvidia.com/gpu", chips),
        Arch::Rocm => ("amd.com/gpu", chips),
        Arch::Neuron => ("aws.amazon.com/neuron", chips),
        Arch::Xla => ("google.com/tpu", chips),
    }
}

/// Node selectors that pin a pod to a pool: instance type and region everywhere, the GKE
/// accelerator or TPU labels on GCP, and the provider's spot label for spot capacity.
pub fn node_selector(
    provider: &str,
    region: &str,
    instance_type: &str,
    acc: Accelerator,
    spot: bool,
) -> Value {
    let mut sel = serde_json::Map::new();
    sel.insert("topology.kubernetes.io/region".into(), json!(region));
    match provider {
        "gcp" => {
            if acc.arch() == Arch::Xla {
                let name = match acc {
                    Accelerator::TpuV5e => "tpu-v5-lite-podslice",
                    _ => "tpu-v5p-slice",
                };
                sel.insert("cloud.google.com/gke-tpu-accelerator".into(), json!(name));
            } else {
                sel.insert(
                    "cloud.google.com/gke-accelerator".into(),
                    json!(gke_accelerator(acc)),
                );
            }
            sel.insert(
                "node.kubernetes.io/instance-type".into(),
                json!(instance_type),
            );
            if spot {
                sel.insert("cloud.google.com/gke-spot".into(), json!("true"));
            }
        }
        "azure" => {
            sel.insert(
                "node.kubernetes.io/instance-type".into(),
                json!(instance_type),
            );
            if spot {
                sel.insert(
                    "kubernetes.azure.com/scalesetpriority".into(),
                    json!("spot"),
                );
            }
        }
        _ => {
            sel.insert(
                "node.kubernetes.io/instance-type".into(),
                json!(instance_type),
            );
            if spot {
                sel.insert("karpenter.sh/capacity-type".into(), json!("spot"));
            }
        }
    }
    Value::Object(sel)
}

fn gke_accelerator(acc: Accelerator) -> &'static str {
    match acc {
        Accelerator::H100 => "nvidia-h100-80gb",
        Accelerator::H200 => "nvidia-h200-141gb",
        Accelerator::B200 => "nvidia-b200",
        Accelerator::A100_80GB => "nvidia-a100-80gb",
        Accelerator::A100_40GB => "nvidia-tesla-a100",
        Accelerator::L4 => "nvidia-l4",
        Accelerator::T4 => "nvidia-tesla-t4",
        Accelerator::V100 | Accelerator::V100_32GB => "nvidia-tesla-v100",
        _ => "nvidia-gpu",
    }
}

/// A DNS-1123 name from a unit key (`chat@aws:us-east-1#0` → `chat-aws-us-east-1-0`).
pub fn dns_name(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-');
    t.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn tolerations(provider: &str, spot: bool) -> Value {
    let mut v =
        vec![json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})];
    if spot && provider == "azure" {
        v.push(json!({"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}));
    }
    if provider == "gcp" {
        v.push(json!({"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}));
    }
    Value::Array(v)
}

/// The manifests of a plan, one JSON object per Kubernetes object, in placement order.
pub fn manifests(fleet: &Fleet, workloads: &WorkloadSet, plan: &Plan) -> Vec<Value> {
    plan.placements
        .iter()
        .filter_map(|p| manifest(fleet, workloads, p))
        .collect()
}

fn manifest(fleet: &Fleet, w: &WorkloadSet, p: &Placement) -> Option<Value> {
    let (_, region, pool) = fleet.pools().find(|(_, _, x)| x.id == p.pool)?;
    let acc = pool.accelerator;
    let spot = p.category == Category::Spot;
    let (res, per_node) = resource(acc, pool.chips_per_node);
    let region_name = region.name.as_str();
    let sel = node_selector(&p.provider, region_name, &pool.instance_type, acc, spot);
    let name = dns_name(&p.unit);
    let labels = json!({
        "app.kubernetes.io/managed-by": "stratus",
        "stratus.dev/workload": dns_name(&p.workload),
        "stratus.dev/unit": name,
        "stratus.dev/pool": dns_name(&p.pool),
        "stratus.dev/category": format!("{:?}", p.category).to_lowercase(),
    });
    let image = |images: &std::collections::BTreeMap<Arch, String>| {
        images.get(&acc.arch()).cloned().unwrap_or_default()
    };
    let pod = |image: String, gpus: u32| {
        json!({
            "restartPolicy": "Never",
            "nodeSelector": sel,
            "tolerations": tolerations(&p.provider, spot),
            "containers": [{
                "name": "main",
                "image": image,
                "env": [{"name": "STRATUS_UNIT", "value": p.unit}],
                "resources": {"limits": {res: gpus}, "requests": {res: gpus}},
            }],
        })
    };
    match p.kind {
        UnitKind::Training => {
            let t = w.training.iter().find(|t| t.name == p.workload)?;
            let mut spec = pod(image(&t.images), per_node);
            spec["restartPolicy"] = json!("Never");
            Some(json!({
                "apiVersion": "jobset.x-k8s.io/v1alpha2",
                "kind": "JobSet",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "failurePolicy": {"maxRestarts": 3},
                    "replicatedJobs": [{
                        "name": "workers",
                        "replicas": 1,
                        "template": {"spec": {
                            "parallelism": p.nodes,
                            "completions": p.nodes,
                            "completionMode": "Indexed",
                            "backoffLimit": 0,
                            "template": {"metadata": {"labels": labels}, "spec": spec},
                        }},
                    }],
                },
            }))
        }
        UnitKind::Batch => {
            let b = w.batch.iter().find(|b| b.name == p.workload)?;
            let spec = pod(image(&b.images), per_node);
            Some(json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "parallelism": p.nodes,
                    "completions": p.nodes,
                    "completionMode": "Indexed",
                    "backoffLimit": 6,
                    "template": {"metadata": {"labels": labels}, "spec": spec},
                },
            }))
        }
        UnitKind::Inference => {
            let s = w.inference.iter().find(|s| s.name == p.workload)?;
            let replica_chips = s.replica.get(&acc).map(|r| r.chips).unwrap_or(per_node);
            // A replica spans this many pods (one per node); each asks for its share of chips.
            let size = replica_chips.div_ceil(pool.chips_per_node).max(1);
            let per_pod = replica_chips.min(pool.chips_per_node);
            let mut leader = pod(image(&s.images), per_pod);
            leader["restartPolicy"] = json!("Always");
            Some(json!({
                "apiVersion": "leaderworkerset.x-k8s.io/v1",
                "kind": "LeaderWorkerSet",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "replicas": p.replicas,
                    "leaderWorkerTemplate": {
                        "size": size,
                        "leaderTemplate": {"metadata": {"labels": labels}, "spec": leader},
                        "workerTemplate": {"metadata": {"labels": labels}, "spec": leader},
                    },
                },
            }))
        }
    }
}

/// The manifests as one multi-document YAML stream.
pub fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| stratus_model::parse::to_yaml(d).unwrap_or_default())
        .map(|y| format!("---\n{y}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_model::parse::{from_str, Format};

    #[test]
    fn the_demo_plan_renders_to_well_formed_pinned_manifests() {
        let fleet = stratus_catalog::builtin();
        let w = stratus_catalog::scenario::demo_workloads(fleet).unwrap();
        let plan = stratus_plan::plan(fleet, &w, &stratus_plan::Policy::default(), None);
        let docs = manifests(fleet, &w, &plan);
        assert_eq!(docs.len(), plan.placements.len());
        let yaml = to_yaml(&docs);
        let parsed: Vec<Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| from_str("manifests.yaml", d, Format::Yaml).unwrap())
            .collect();
        assert_eq!(parsed, docs, "YAML round trip");
        let mut kinds = std::collections::BTreeSet::new();
        for (p, d) in plan.placements.iter().zip(&docs) {
            let kind = d["kind"].as_str().unwrap();
            kinds.insert(kind.to_string());
            let want = match p.kind {
                UnitKind::Training => "JobSet",
                UnitKind::Batch => "Job",
                UnitKind::Inference => "LeaderWorkerSet",
            };
            assert_eq!(kind, want, "{}", p.unit);
            let name = d["metadata"]["name"].as_str().unwrap();
            assert!(name.len() <= 63 && !name.is_empty(), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            let (_, _, pool) = fleet.pools().find(|(_, _, x)| x.id == p.pool).unwrap();
            let (res, _) = resource(pool.accelerator, pool.chips_per_node);
            let (pod, pods) = match p.kind {
                UnitKind::Training => {
                    let j = &d["spec"]["replicatedJobs"][0]["template"]["spec"];
                    (
                        j["template"]["spec"].clone(),
                        j["parallelism"].as_u64().unwrap(),
                    )
                }
                UnitKind::Batch => (
                    d["spec"]["template"]["spec"].clone(),
                    d["spec"]["parallelism"].as_u64().unwrap(),
                ),
                UnitKind::Inference => {
                    let t = &d["spec"]["leaderWorkerTemplate"];
                    assert_eq!(d["spec"]["replicas"].as_u64().unwrap(), p.replicas as u64);
                    (
                        t["leaderTemplate"]["spec"].clone(),
                        d["spec"]["replicas"].as_u64().unwrap() * t["size"].as_u64().unwrap(),
                    )
                }
            };
            // Pinned to the pool, spot where bought as spot.
            let sel = &pod["nodeSelector"];
            assert_eq!(
                sel["node.kubernetes.io/instance-type"],
                pool.instance_type.as_str(),
                "{}",
                p.unit
            );
            let spot = sel.as_object().unwrap().iter().any(|(k, v)| {
                (k == "karpenter.sh/capacity-type" && v == "spot")
                    || (k == "cloud.google.com/gke-spot" && v == "true")
                    || (k == "kubernetes.azure.com/scalesetpriority" && v == "spot")
            });
            assert_eq!(spot, p.category == Category::Spot, "{}", p.unit);
            // Enough accelerators requested for the unit's chips, never more than the nodes hold.
            let per_pod = pod["containers"][0]["resources"]["limits"][res]
                .as_u64()
                .unwrap();
            assert!(per_pod <= pool.chips_per_node as u64, "{}", p.unit);
            assert!(
                per_pod * pods >= p.chips as u64,
                "{}: {per_pod} x {pods} < {}",
                p.unit,
                p.chips
            );
            assert!(
                pods <= (p.nodes as u64).max(p.replicas as u64 * 64),
                "{}",
                p.unit
            );
        }
        assert!(
            kinds.contains("JobSet") && kinds.contains("LeaderWorkerSet") && kinds.contains("Job"),
            "{kinds:?}"
        );
    }

    #[test]
    fn resource_names_follow_the_device_plugins() {
        assert_eq!(resource(Accelerator::H100, 8), ("nvidia.com/gpu", 8));
        assert_eq!(resource(Accelerator::MI300X, 8), ("amd.com/gpu", 8));
        assert_eq!(
            resource(Accelerator::Trainium2, 16),
            ("aws.amazon.com/neuron", 16)
        );
        assert_eq!(resource(Accelerator::TpuV5p, 4), ("google.com/tpu", 4));
        assert_eq!(dns_name("chat@aws:us-east-1#0"), "chat-aws-us-east-1-0");
        let s = node_selector(
            "gcp",
            "us-central2",
            "ct5p-hightpu-4t",
            Accelerator::TpuV5p,
            true,
        );
        assert_eq!(s["cloud.google.com/gke-tpu-accelerator"], "tpu-v5p-slice");
        assert_eq!(s["cloud.google.com/gke-spot"], "true");
    }
}
