//! The API the dashboard needs beyond the CLI's: who the caller is, the money view (live
//! bill, the current plan's projection under the commitments, plan history, power against
//! caps), a simulated outage, the inference gateway's metrics summarised per service, and
//! simulation reports.

use crate::api::{err, require, ApiError};
use crate::auth::Role;
use crate::{now_ms, App};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use stratus_model::fleet::region_id;

/// Hours the current plan is held for the money page's projection.
const PROJECTION_HOURS: f64 = 720.0;

/// `GET /v1/whoami`: the caller's role, so the page can hide what it may not do.
pub async fn whoami(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let role = require(&app, &headers, Role::Viewer).await?;
    Ok(Json(json!({ "role": role.name() })))
}

/// `GET /v1/ledger/summary`: the live bill so far, the current plan held for 30 days under the
/// commitments, the plan history's spend by provider and pricing category, power by region
/// against its cap, emissions.
pub async fn ledger_summary(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let internal = |e: stratus_ledger::focus::LedgerError| {
        err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    let a = app.clone();
    let (live, live_rows) = tokio::task::spawn_blocking(move || a.live_report())
        .await
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(internal)?;

    // The newest 30 plans, each parsed once, newest first.
    let history: Vec<(i64, i64, stratus_plan::Plan)> = app
        .store
        .recent_plans(30)
        .await?
        .iter()
        .filter_map(|sp| {
            let p = stratus_plan::Plan::deserialize(&sp.plan).ok()?;
            Some((sp.id, sp.created_ms, p))
        })
        .collect();
    let plan = history.first().map(|(_, _, p)| p);
    let now_s = now_ms() / 1000;
    // The projection changes only with the plan and the hour it starts from: build it (a
    // month of hourly rows) once per pair.
    let key = (history.first().map(|h| h.0).unwrap_or(0), now_s / 3600);
    let cached = app
        .projection
        .lock()
        .expect("projection lock")
        .as_ref()
        .filter(|c| c.0 == key)
        .map(|c| c.1.clone());
    let projection = match (cached, plan) {
        (Some(r), _) => r,
        (None, Some(p)) => {
            let opts = stratus_ledger::Options {
                epoch: now_s / 3600 * 3600,
                ..stratus_ledger::Options::default()
            };
            let rows = stratus_ledger::build(
                &app.fleet,
                &app.commitments,
                &stratus_ledger::meter::from_plan(p, PROJECTION_HOURS),
                &opts,
            )
            .map_err(internal)?;
            let r = stratus_ledger::burndown::report(&app.commitments, &rows);
            *crate::lock(&app.projection) = Some((key, r.clone()));
            r
        }
        (None, None) => stratus_ledger::burndown::report(&app.commitments, &[]),
    };
    let mut points = Vec::new();
    for (_, created_ms, p) in history.iter().rev() {
        let mut by_category: BTreeMap<String, f64> = BTreeMap::new();
        for x in &p.placements {
            let k = serde_json::to_value(x.category)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *by_category.entry(k).or_default() += x.cost_per_hour;
        }
        let by_provider: BTreeMap<String, f64> = p
            .summary
            .by_provider
            .iter()
            .map(|(k, v)| (k.clone(), v.cost_per_hour))
            .collect();
        points.push(
            json!({"at_ms": created_ms, "by_provider": by_provider, "by_category": by_category,
                           "tco2e_per_day": p.summary.tco2e_per_day}),
        );
    }
    let mut power: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(p) = plan {
        for x in &p.placements {
            *power.entry(x.region.clone()).or_default() += x.power_mw;
        }
    }
    let caps: BTreeMap<String, f64> = app
        .fleet
        .regions()
        .map(|(p, r)| (region_id(&p.name, &r.name), r.power_cap_mw.0))
        .collect();
    let mut power: Vec<(String, f64)> = power.into_iter().collect();
    power.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    // The 15 busiest regions for the chart; the total counts them all.
    let power: Vec<Value> = power
        .into_iter()
        .take(15)
        .map(|(r, mw)| json!({"region": r, "mw": mw, "cap_mw": caps.get(&r).copied().unwrap_or(0.0)}))
        .collect();
    Ok(Json(json!({
        "live": {"billed_usd": live.billed_usd, "effective_usd": live.effective_usd, "rows": live_rows,
                 "by_provider": live.effective_by_provider, "by_pricing": live.effective_by_pricing},
        "projection_hours": PROJECTION_HOURS,
        "projection": projection,
        "history": points,
        "power": power,
        "power_mw": plan.map(|p| p.summary.power_mw).unwrap_or(0.0),
        "tco2e_per_day": plan.map(|p| p.summary.tco2e_per_day).unwrap_or(0.0),
    })))
}

/// Body of `POST /v1/sim/outage`.
#[derive(Deserialize)]
pub struct Outage {
    region: String,
    down: bool,
}

/// `POST /v1/sim/outage`: take a region of the simulated provider down or bring it back
/// (operator; only when the service drives simulated providers).
pub async fn sim_outage(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(o): Json<Outage>,
) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Operator).await?;
    let known = app
        .fleet
        .regions()
        .any(|(p, r)| region_id(&p.name, &r.name) == o.region);
    if !known {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("region: no region `{}` in the fleet", o.region),
        ));
    }
    let lost = app.set_sim_region(&o.region, o.down).ok_or_else(|| {
        err(
            StatusCode::CONFLICT,
            "outages can be injected only into simulated providers (--driver sim)",
        )
    })?;
    Ok((
        axum::Extension(crate::api::AuditDetail(format!(
            "simulated region {} {} ({} instances lost)",
            o.region,
            if o.down { "down" } else { "back" },
            lost.len()
        ))),
        Json(json!({"region": o.region, "down": o.down, "instances_lost": lost})),
    )
        .into_response())
}

/// One Prometheus sample: name, labels, value.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while let Some((k, r)) = rest.split_once("=\"") {
            let mut val = String::new();
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(if n == 'n' { '\n' } else { n });
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            map.insert(k.trim_start_matches(',').to_string(), val);
            rest = &r[end..];
        }
        out.push((name.to_string(), map, v));
    }
    out
}

/// A quantile from cumulative histogram buckets (upper bound of the bucket it falls in), ms.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| le * 1000.0)
}

/// Requests and failures of one service: in total and per (provider, region).
type Counts = (f64, f64, BTreeMap<(String, String), (f64, f64)>);

/// Summarise the gateway's metrics per service (model): requests, rate since the gateway
/// started, errors (5xx or cut streams), TTFT and latency quantiles, and the share of
/// requests whose TTFT met the service's latency SLO.
pub fn summarise(text: &str, slo_ms: &BTreeMap<String, f64>) -> Value {
    let s = samples(text);
    let uptime = s
        .iter()
        .find(|x| x.0 == "stratus_gateway_uptime_seconds")
        .map(|x| x.2)
        .unwrap_or(0.0);
    let mut models: BTreeMap<String, Counts> = BTreeMap::new();
    for (name, l, v) in &s {
        if name != "stratus_gateway_requests_total" {
            continue;
        }
        let model = l.get("model").cloned().unwrap_or_default();
        let failed = l.get("status").is_some_and(|c| c.starts_with('5'))
            || l.get("end").is_some_and(|e| e == "cut");
        let m = models.entry(model).or_default();
        m.0 += v;
        if failed {
            m.1 += v;
        }
        let r =
            m.2.entry((
                l.get("provider").cloned().unwrap_or_default(),
                l.get("region").cloned().unwrap_or_default(),
            ))
            .or_default();
        r.0 += v;
        if failed {
            r.1 += v;
        }
    }
    let hist = |metric: &str, model: &str| -> Vec<(f64, f64)> {
        let mut b: Vec<(f64, f64)> = s
            .iter()
            .filter(|x| {
                x.0 == format!("{metric}_bucket")
                    && x.1.get("model").map(String::as_str) == Some(model)
            })
            .filter_map(|x| {
                let le = x.1.get("le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, x.2))
            })
            .collect();
        b.sort_by(|a, c| a.0.total_cmp(&c.0));
        b
    };
    let services: Vec<Value> = models
        .into_iter()
        .map(|(model, (n, errors, regions))| {
            let ttft = hist("stratus_gateway_ttft_seconds", &model);
            let dur = hist("stratus_gateway_request_duration_seconds", &model);
            let slo = slo_ms.get(&model).copied();
            let attainment = slo.and_then(|slo| {
                let total = ttft.last().map(|b| b.1).unwrap_or(0.0);
                let within = ttft.iter().filter(|b| b.0 * 1000.0 <= slo).map(|b| b.1).fold(0.0, f64::max);
                (total > 0.0).then(|| within / total)
            });
            json!({
                "model": model,
                "requests": n,
                "rate_per_s": if uptime > 0.0 { n / uptime } else { 0.0 },
                "errors": errors,
                "ttft_p50_ms": quantile(&ttft, 0.5),
                "ttft_p99_ms": quantile(&ttft, 0.99),
                "latency_p50_ms": quantile(&dur, 0.5),
                "latency_p99_ms": quantile(&dur, 0.99),
                "slo_ms": slo,
                "slo_attainment": attainment,
                "regions": regions.into_iter().map(|((p, r), (n, e))| json!({"provider": p, "region": r, "requests": n, "errors": e})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "configured": true, "uptime_s": uptime, "services": services })
}

/// The text at `url` (a gateway's `/metrics`), within 3 s.
pub(crate) async fn scrape(url: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || -> Result<String, String> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(3)))
            .build()
            .new_agent();
        let mut r = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        r.body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))
    })
    .await
    .unwrap_or_else(|e| Err(format!("scrape task: {e}")))
}

/// `GET /v1/inference`: the gateway's metrics per service, with each service's SLO from its
/// workload.
pub async fn inference(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let Some(url) = app.gateway_metrics.clone() else {
        return Ok(Json(json!({"configured": false})));
    };
    let slo: BTreeMap<String, f64> = crate::api::workload_set(&app.store.workloads().await?)
        .inference
        .into_iter()
        .map(|s| (s.model, s.latency_slo_ms.0))
        .collect();
    let text = scrape(url).await;
    Ok(Json(match text {
        Ok(t) => summarise(&t, &slo),
        Err(e) => {
            json!({"configured": true, "error": format!("could not read the gateway's metrics: {e}")})
        }
    }))
}

/// Whether `p` is a file or directory itself, not a symbolic link (links under the reports
/// directory could lead anywhere on the machine).
fn plain(p: &std::path::Path, dir: bool) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| {
        let t = m.file_type();
        !t.is_symlink() && if dir { t.is_dir() } else { t.is_file() }
    })
}

fn reports(dir: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut dirs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| plain(p, true) && plain(&p.join("metrics.json"), false))
        .collect();
    dirs.sort();
    for d in dirs {
        let Some(name) = d.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let m: Value = std::fs::read_to_string(d.join("metrics.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let mut plots: Vec<String> = std::fs::read_dir(&d)
            .map(|it| {
                it.flatten()
                    .filter(|e| plain(&e.path(), false))
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|f| f.ends_with(".svg"))
                    .collect()
            })
            .unwrap_or_default();
        plots.sort();
        out.push(json!({
            "name": name,
            "scenario": m["scenario"],
            "policies": m["policies"].as_array().map(|a| a.iter().map(|p| p["policy"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "plots": plots,
        }));
    }
    out
}

/// `GET /v1/sim/reports`: the `stratus sim run` output directories under `--reports`.
pub async fn sim_reports(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    Ok(Json(match &app.reports {
        Some(d) => json!({"configured": true, "reports": reports(d)}),
        None => json!({"configured": false, "reports": []}),
    }))
}

/// `GET /v1/sim/reports/{name}/{file}`: `report.md`, `metrics.json` or a plot of one report.
pub async fn sim_report_file(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let Some(dir) = &app.reports else {
        return Err(err(
            StatusCode::NOT_FOUND,
            "no report directory (--reports)",
        ));
    };
    let safe = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let kind = match file.rsplit_once('.').map(|x| x.1) {
        Some("svg") => "image/svg+xml",
        Some("md") => "text/markdown; charset=utf-8",
        Some("json") => "application/json",
        _ => {
            return Err(err(
                StatusCode::NOT_FOUND,
                "only report.md, metrics.json and plots are served",
            ))
        }
    };
    if !safe(&name) || !safe(&file) {
        return Err(err(StatusCode::NOT_FOUND, "no such report file"));
    }
    let (report, path) = (dir.join(&name), dir.join(&name).join(&file));
    if !plain(&report, true) || !plain(&path, false) {
        return Err(err(StatusCode::NOT_FOUND, "no such report file"));
    }
    let body =
        std::fs::read(&path).map_err(|_| err(StatusCode::NOT_FOUND, "no such report file"))?;
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_metrics_summarise_per_service() {
        let text = "# TYPE x counter\n\
stratus_gateway_requests_total{key=\"a\",model=\"chat\",replica=\"r1\",provider=\"aws\",region=\"us-east-1\",end=\"complete\",status=\"200\"} 90\n\
stratus_gateway_requests_total{key=\"a\",model=\"chat\",replica=\"r1\",provider=\"aws\",region=\"us-east-1\",end=\"complete\",status=\"503\"} 4\n\
stratus_gateway_requests_total{key=\"a\",model=\"chat\",replica=\"r2\",provider=\"gcp\",region=\"eu\",end=\"cut\",status=\"200\"} 6\n\
stratus_gateway_ttft_seconds_bucket{model=\"chat\",le=\"0.05\"} 50\n\
stratus_gateway_ttft_seconds_bucket{model=\"chat\",le=\"0.1\"} 80\n\
stratus_gateway_ttft_seconds_bucket{model=\"chat\",le=\"0.5\"} 99\n\
stratus_gateway_ttft_seconds_bucket{model=\"chat\",le=\"+Inf\"} 100\n\
stratus_gateway_uptime_seconds 50\n";
        let slo = BTreeMap::from([("chat".to_string(), 100.0)]);
        let v = summarise(text, &slo);
        let s = &v["services"][0];
        assert_eq!(s["requests"], 100.0);
        assert_eq!(s["errors"], 10.0);
        assert_eq!(s["rate_per_s"], 2.0);
        assert_eq!(s["ttft_p50_ms"], 50.0);
        assert_eq!(s["ttft_p99_ms"], 500.0);
        assert_eq!(s["slo_attainment"], 0.8);
        assert_eq!(s["regions"].as_array().unwrap().len(), 2);
    }
}
