//! Active health checks and queue-depth scraping, one probe round per interval.
//!
//! A replica goes down after `unhealthy_after` failed probes in a row and comes back after
//! `healthy_after` good ones (hysteresis, so one slow probe does not flap it). Replicas that
//! expose Prometheus metrics report their queue depth, which routing adds to the gateway's own
//! in-flight count.

use crate::proxy::Gateway;
use crate::replica::Replica;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Metric names read as queue depth (summed when several are present): vLLM, llama.cpp's
/// server, SGLang, and the project's mock replica.
pub const QUEUE_METRICS: [&str; 4] = [
    "vllm:num_requests_waiting",
    "llamacpp:requests_deferred",
    "sglang:num_queue_reqs",
    "stratus_mock_queue_depth",
];

/// Probe until `stop` turns true.
pub async fn run(gw: Arc<Gateway>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_millis(gw.cfg.health.interval_ms);
    loop {
        // The set as it is at the start of the round: a replica added since waits for the
        // next round (it was advertised healthy), one removed gets one more probe at most.
        let round: Vec<_> = gw
            .replicas()
            .replicas
            .iter()
            .map(|r| {
                let (gw, r) = (gw.clone(), r.clone());
                tokio::spawn(async move { probe(&gw, &r).await })
            })
            .collect();
        for p in round {
            let _ = p.await;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Largest body read from a replica's probe or metrics, or from the control plane: a peer
/// that sends without end costs a bounded buffer, never the gateway's memory.
pub const MAX_SIDE_BODY: usize = 8 << 20;

/// GET `url` (with `bearer` as its token), status and body, within `timeout`: the gateway's
/// side requests (probes, scrapes, the control plane's watch), never the request path.
pub(crate) async fn get_within(
    gw: &Gateway,
    url: String,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let mut req = Request::get(url);
    if let Some(t) = bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = gw.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_SIDE_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| "timeout".to_string())?
}

async fn get(gw: &Gateway, url: String) -> Result<(u16, Bytes), String> {
    get_within(
        gw,
        url,
        None,
        Duration::from_millis(gw.cfg.health.timeout_ms),
    )
    .await
}

async fn probe(gw: &Gateway, r: &Replica) {
    let ok = matches!(
        get(gw, format!("{}{}", r.base, gw.cfg.health.path)).await,
        Ok((200..=299, _))
    );
    {
        let mut p = r.probes.lock().expect("probe lock");
        if ok {
            p.good += 1;
            p.bad = 0;
            if p.good >= gw.cfg.health.healthy_after {
                r.healthy.store(true, Ordering::Relaxed);
            }
        } else {
            p.bad += 1;
            p.good = 0;
            if p.bad >= gw.cfg.health.unhealthy_after {
                r.healthy.store(false, Ordering::Relaxed);
            }
        }
    }
    if ok && r.scrape {
        if let Ok((200, body)) = get(gw, format!("{}/metrics", r.base)).await {
            if let Some(q) = queue_depth(&String::from_utf8_lossy(&body)) {
                r.queue.store(q, Ordering::Relaxed);
            }
        }
    }
}

/// Sum of the [`QUEUE_METRICS`] samples in a Prometheus text exposition.
pub fn queue_depth(text: &str) -> Option<u32> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        if !QUEUE_METRICS.contains(&&line[..name_end]) {
            continue;
        }
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| v.is_finite() && *v >= 0.0) {
            *found.get_or_insert(0u32) += v as u32;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_reads_the_known_metrics_and_ignores_the_rest() {
        let text = "# HELP vllm:num_requests_waiting waiting\n\
                    vllm:num_requests_waiting{model_name=\"m\"} 3.0\n\
                    vllm:num_requests_running{model_name=\"m\"} 9\n\
                    llamacpp:requests_deferred 2\n";
        assert_eq!(queue_depth(text), Some(5));
        assert_eq!(queue_depth("other 1\n"), None);
    }
}
