//! Following a control plane: the gateway watches `GET /v1/endpoints` (a long poll on the
//! list's version) and swaps its replica set whenever the list changes, so a replica the
//! controller launches receives traffic once it is advertised as serving, a draining one
//! receives no new requests, and a removed one is gone. When the control plane cannot be
//! reached, the last list keeps serving (it is the cache) and the watch is retried with a
//! backoff; the request path never waits for the control plane.

use crate::config::{parse_base_url, ControlPlaneConfig, ReplicaConfig};
use crate::proxy::Gateway;
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One endpoint as the control plane lists it (fields the gateway does not use are
/// ignored, so the control plane may add more).
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    /// The instance's client token: unique, and the same for the instance's whole life.
    pub id: String,
    /// Model served.
    pub model: String,
    /// `http://host:port` (or a synthetic `sim://` address, which is not routed to).
    pub url: String,
    /// Region id.
    pub region: String,
    /// $/h of the instance.
    #[serde(default)]
    pub usd_per_hour: f64,
    /// `starting`, `serving` or `draining`.
    pub state: String,
}

/// The control plane's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointList {
    /// Changes whenever the list does.
    pub version: u64,
    /// Every endpoint of every service.
    pub endpoints: Vec<Endpoint>,
}

/// The replicas an endpoint list gives: serving ones, and draining ones marked so; starting
/// ones (not yet healthy) and non-HTTP addresses are left out.
pub fn replicas_of(list: &EndpointList) -> Vec<ReplicaConfig> {
    list.endpoints
        .iter()
        .filter(|e| matches!(e.state.as_str(), "serving" | "draining"))
        .filter(|e| parse_base_url(&e.url).is_some())
        .map(|e| ReplicaConfig {
            id: e.id.clone(),
            url: e.url.clone(),
            region: e.region.clone(),
            models: vec![e.model.clone()],
            cost_per_hour: if e.usd_per_hour.is_finite() && e.usd_per_hour >= 0.0 {
                e.usd_per_hour
            } else {
                0.0
            },
            metrics: true,
            draining: e.state == "draining",
        })
        .collect()
}

/// Read a token file: the first line, trimmed; an empty file is an error.
pub fn read_token(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("token file {path}: {e}"))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("token file {path}: empty"));
    }
    Ok(token)
}

/// One watch request: the list once its version differs from `version` (or after
/// `wait_s` seconds, unchanged).
async fn fetch(
    gw: &Gateway,
    base: &str,
    token: &str,
    version: u64,
    wait_s: u64,
) -> Result<EndpointList, String> {
    let (status, body) = crate::health::get_within(
        gw,
        format!("{base}/v1/endpoints?version={version}&wait={wait_s}"),
        Some(token),
        Duration::from_secs(wait_s + 10),
    )
    .await?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    serde_json::from_slice::<EndpointList>(&body).map_err(|e| format!("bad answer: {e}"))
}

/// Follow the control plane until `stop` turns true.
pub async fn run(
    gw: Arc<Gateway>,
    cp: ControlPlaneConfig,
    token: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let base = parse_base_url(&cp.url).expect("validated").1;
    let mut version = 0u64;
    let mut backoff = Duration::from_millis(250);
    let mut last_error = String::new();
    loop {
        let got = tokio::select! {
            r = fetch(&gw, &base, &token, version, cp.watch_s) => r,
            _ = stop.changed() => return,
        };
        match got {
            Ok(list) => {
                backoff = Duration::from_millis(250);
                last_error.clear();
                if list.version != version {
                    version = list.version;
                    let mut replicas = gw.cfg.replicas.clone();
                    replicas.extend(replicas_of(&list));
                    gw.set_replicas(version, &replicas);
                    gw.metrics
                        .control_plane_updates
                        .fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            Err(e) => {
                gw.metrics
                    .control_plane_errors
                    .fetch_add(1, Ordering::Relaxed);
                if e != last_error {
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        format!(
                            "stratus gateway: control plane {base}: {e} (serving the last list)\n"
                        )
                        .as_bytes(),
                    );
                    last_error = e;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serving_and_draining_http_endpoints_become_replicas() {
        let list: EndpointList = serde_json::from_str(
            r#"{"version": 7, "endpoints": [
              {"id": "a", "model": "m", "url": "http://127.0.0.1:1", "region": "aws:us-east-1", "usd_per_hour": 3.5, "state": "serving", "extra": 1},
              {"id": "b", "model": "m", "url": "http://127.0.0.1:2", "region": "aws:us-east-1", "state": "starting"},
              {"id": "c", "model": "m", "url": "http://127.0.0.1:3", "region": "gcp:europe-west4", "state": "draining"},
              {"id": "d", "model": "m", "url": "sim://aws:us-east-1/d", "region": "aws:us-east-1", "state": "serving"},
              {"id": "e", "model": "m", "url": "http://127.0.0.1:5", "region": "aws:us-east-1", "usd_per_hour": -1, "state": "serving"}
            ]}"#,
        )
        .unwrap();
        let r = replicas_of(&list);
        let ids: Vec<&str> = r.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "e"]);
        assert!(!r[0].draining && r[1].draining);
        assert_eq!(r[0].cost_per_hour, 3.5);
        assert_eq!(r[2].cost_per_hour, 0.0, "a negative price is not trusted");
    }

    #[test]
    fn an_empty_token_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("stratus-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token(f.to_str().unwrap())
            .unwrap_err()
            .contains("empty"));
        std::fs::write(&f, " tok \nrest").unwrap();
        assert_eq!(read_token(f.to_str().unwrap()).unwrap(), "tok");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
