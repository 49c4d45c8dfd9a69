//! The inference endpoint list gateways follow: what it lists, who may read it, and the
//! watch (a long poll on the version) waking on a change.

use serde_json::Value;
use std::time::{Duration, Instant};

mod common;
use common::{agent, start, ADMIN};

const WORKLOADS: &str = r#"
training:
  - name: ft
    chips: 64
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 6400
inference:
  - name: chat
    model: m
    replica: {H100: {chips: 8, rps: 10}}
    images: {cuda: "img"}
    demand: [{from: "aws:us-east-1", rps: 30}, {from: "gcp:europe-west4", rps: 30}]
    latency_slo_ms: 150
    min_regions: 2
"#;

fn list(s: &common::Server, path: &str) -> (u16, Value) {
    s.call("GET", path, Some(ADMIN), None)
}

#[test]
fn the_endpoint_list_names_every_replica_and_a_watch_wakes_on_change() {
    let dir = std::env::temp_dir().join(format!("stratus-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = start(&format!("sqlite://{}/e.db", dir.display()));
    let (code, v) = s.call(
        "POST",
        "/v1/workloads",
        Some(ADMIN),
        Some(("application/yaml", WORKLOADS.as_bytes())),
    );
    assert_eq!(code, 200, "{v}");
    s.reconcile();
    s.reconcile();

    // Only the service's instances, with where they run, what they cost, and their state.
    let (code, all) = list(&s, "/v1/endpoints");
    assert_eq!(code, 200, "{all}");
    let eps = all["endpoints"].as_array().unwrap().clone();
    assert!(eps.len() >= 2, "{all}");
    let mut regions = std::collections::BTreeSet::new();
    for e in &eps {
        assert_eq!(e["service"], "chat", "{e}");
        assert_eq!(e["model"], "m");
        assert_eq!(e["accelerator"], "H100");
        assert_eq!(e["state"], "serving", "{e}");
        assert!(e["url"].as_str().unwrap().starts_with("sim://"), "{e}");
        assert!(e["usd_per_hour"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["id"].as_str().unwrap().contains("chat@"), "{e}");
        regions.insert(e["region"].as_str().unwrap().to_string());
    }
    assert!(
        regions.len() >= 2,
        "min_regions holds in the list: {regions:?}"
    );
    let version = all["version"].as_u64().unwrap();

    // One service's set; other kinds and unknown names are refused by name.
    let (code, one) = list(&s, "/v1/services/chat/endpoints");
    assert_eq!(code, 200);
    assert_eq!(one["service"], "chat");
    assert_eq!(one["version"].as_u64(), Some(version));
    assert_eq!(one["endpoints"].as_array().unwrap().len(), eps.len());
    let (code, e) = list(&s, "/v1/services/ft/endpoints");
    assert_eq!(code, 404);
    assert!(e["error"].as_str().unwrap().contains("training"), "{e}");
    let (code, e) = list(&s, "/v1/services/nope/endpoints");
    assert_eq!(code, 404, "{e}");
    assert_eq!(s.call("GET", "/v1/endpoints", None, None).0, 401);
    let (code, e) = list(&s, "/v1/endpoints?version=x&wait=1");
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("query"), "{e}");

    // A watch on the current version with nothing changing answers the same list at the end
    // of its wait.
    let (code, same) = list(&s, &format!("/v1/endpoints?version={version}&wait=1"));
    assert_eq!(code, 200);
    assert_eq!(same["version"].as_u64(), Some(version));

    // A watch wakes when the list changes: the service is deleted, its replicas leave.
    let url = format!("{}/v1/endpoints?version={version}&wait=30", s.base);
    let watcher = std::thread::spawn(move || {
        let started = Instant::now();
        let mut r = agent()
            .get(&url)
            .header("Authorization", &format!("Bearer {ADMIN}"))
            .call()
            .unwrap();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        (v, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.call("DELETE", "/v1/workloads/chat", Some(ADMIN), None).0,
        204
    );
    s.reconcile();
    let (woke, after) = watcher.join().unwrap();
    assert!(woke["version"].as_u64().unwrap() > version, "{woke}");
    assert!(
        woke["endpoints"].as_array().unwrap().is_empty(),
        "a deleted service's replicas are not advertised: {woke}"
    );
    assert!(
        after < Duration::from_secs(30),
        "woke before its wait ran out"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
