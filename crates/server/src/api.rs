//! The HTTP API. Reads need a viewer token, workload changes an operator, token management an
//! admin. Bad input is a 4xx whose message names the field and line, and changes nothing.

use crate::auth::{self, Role};
use crate::store::{StoreError, StoredWorkload};
use crate::{now_ms, App};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use stratus_model::parse::{self, Format};
use stratus_model::{Batch, Inference, Training, WorkloadSet};

/// Request bodies larger than this are refused (413) before they are parsed.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// An error answer: status and a JSON body `{"error": …}` (plus `line` and `field` for bad input).
#[derive(Debug)]
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        )
    }
}

pub(crate) fn err(code: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(code, json!({"error": msg.into()}))
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(crate::ui::index))
        .route("/ui/app.js", get(crate::ui::app_js))
        .route("/ui/app.css", get(crate::ui::app_css))
        .route("/ui/world.svgpath", get(crate::ui::world))
        .route("/v1/whoami", get(crate::dashboard::whoami))
        .route("/v1/ledger/summary", get(crate::dashboard::ledger_summary))
        .route("/v1/sim/outage", post(crate::dashboard::sim_outage))
        .route("/v1/inference", get(crate::dashboard::inference))
        .route("/v1/sim/reports", get(crate::dashboard::sim_reports))
        .route(
            "/v1/sim/reports/{name}/{file}",
            get(crate::dashboard::sim_report_file),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/fleet", get(fleet))
        .route("/v1/workloads", get(list_workloads).post(apply))
        .route(
            "/v1/workloads/{name}",
            get(get_workload).delete(delete_workload),
        )
        .route("/v1/plan", get(current_plan))
        .route("/v1/plans", get(plans))
        .route("/v1/plans/{id}", get(plan_by_id))
        .route("/v1/plans/{id}/diff", get(plan_diff))
        .route("/v1/actions", get(actions))
        .route("/v1/status", get(status))
        .route("/v1/usage", get(usage))
        .route("/v1/ledger/focus.csv", get(focus_csv))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/audit", get(audit_log))
        .route("/v1/endpoints", get(all_endpoints))
        .route("/v1/services/{name}/endpoints", get(service_endpoints))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(app.clone(), audit))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// Longest a request may take, its body included: a client sending a body slowly, or never
/// finishing it, does not hold a connection for longer.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => err(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

/// What a write changed, in one line, for the audit log (a handler attaches it to its
/// answer).
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Record every write (any method but GET, HEAD and OPTIONS) with who made it, what it was
/// and how it ended, after the handler ran.
async fn audit(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    if matches!(
        method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let who = match bearer(req.headers()) {
        Some(t) => app.store.token_of(&auth::hash(t)).await.ok().flatten(),
        None => None,
    };
    let resp = next.run(req).await;
    let detail = resp
        .extensions()
        .get::<AuditDetail>()
        .map(|d| d.0.clone())
        .unwrap_or_default();
    let rec = crate::store::AuditRecord {
        id: 0,
        at_ms: now_ms(),
        who: who
            .as_ref()
            .map(|t| format!("{} ({})", t.name, t.id))
            .unwrap_or_else(|| "-".into()),
        role: who.map(|t| t.role).unwrap_or_else(|| "-".into()),
        method: method.to_string(),
        path,
        status: i64::from(resp.status().as_u16()),
        detail,
    };
    if let Err(e) = app.store.audit(&rec).await {
        log!(
            "stratus serve: audit record of {} {} not stored: {e}",
            rec.method,
            rec.path
        );
    }
    resp
}

/// `GET /v1/audit`: every write through the API (`?since=ID&limit=`), for admins.
async fn audit_log(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Admin).await?;
    let list = app
        .store
        .audit_log(
            q.since.unwrap_or(0),
            q.limit.unwrap_or(500).clamp(1, 10_000),
        )
        .await?;
    Ok(Json(json!({ "audit": list })))
}

/// `GET /v1/tokens`: every token's id, name, role and age (never a value), for admins.
async fn list_tokens(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Admin).await?;
    Ok(Json(json!({ "tokens": app.store.tokens().await? })))
}

/// `DELETE /v1/tokens/{id}`: revoke a token (not the last admin one).
async fn revoke_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Admin).await?;
    match app.store.revoke_token(&id).await? {
        crate::store::Revoke::Revoked(t) => Ok((
            axum::Extension(AuditDetail(format!(
                "revoked token {} ({}, {})",
                t.name, t.role, t.id
            ))),
            StatusCode::NO_CONTENT,
        )
            .into_response()),
        crate::store::Revoke::NotFound => Err(err(
            StatusCode::NOT_FOUND,
            format!("no token with id `{id}` (see GET /v1/tokens)"),
        )),
        crate::store::Revoke::LastAdmin => Err(err(
            StatusCode::CONFLICT,
            format!("`{id}` is the last admin token; create another admin token first"),
        )),
    }
}

/// The page's content security policy: its own scripts, styles and data only (plots arrive
/// as blobs), in no frame.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// Headers every answer carries: the page may not be framed or run anything but its own
/// files, and no answer is sniffed into another type.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The caller's role, or 401 (no or unknown token) / 403 (role too low).
pub(crate) async fn require(app: &App, headers: &HeaderMap, need: Role) -> Result<Role, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        err(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`",
        )
    })?;
    let role = app
        .store
        .role_of(&auth::hash(token))
        .await?
        .and_then(|r| Role::parse(&r))
        .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "unknown token"))?;
    if role < need {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {} role; the token is {}",
                need.name(),
                role.name()
            ),
        ));
    }
    Ok(role)
}

/// Ready when the database answers and the reconcile loop works: not since a panic it has
/// not yet recovered from, and not stalled.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if !app.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response();
    }
    match app.loop_trouble() {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
        None => (StatusCode::OK, "ready\n").into_response(),
    }
}

/// Stored workloads as a workload set, checked one by one against `fleet` as the API checks
/// them: a spec that no longer parses or validates (stored by an older version that
/// accepted it) is left out and returned with why, so one bad record never stops the
/// service.
pub fn checked_workloads(
    items: &[StoredWorkload],
    fleet: &stratus_model::Fleet,
) -> (WorkloadSet, BTreeMap<String, String>) {
    let mut out = WorkloadSet::default();
    let mut bad = BTreeMap::new();
    for it in items {
        let file = format!("stored workload {}", it.name);
        let one = match it.kind.as_str() {
            "training" => {
                serde_json::from_value::<Training>(it.spec.clone()).map(|t| WorkloadSet {
                    training: vec![t],
                    ..Default::default()
                })
            }
            "inference" => {
                serde_json::from_value::<Inference>(it.spec.clone()).map(|s| WorkloadSet {
                    inference: vec![s],
                    ..Default::default()
                })
            }
            "batch" => serde_json::from_value::<Batch>(it.spec.clone()).map(|b| WorkloadSet {
                batch: vec![b],
                ..Default::default()
            }),
            k => {
                bad.insert(it.name.clone(), format!("{file}: unknown kind `{k}`"));
                continue;
            }
        };
        let one = match one {
            Ok(w) => w,
            Err(e) => {
                bad.insert(it.name.clone(), format!("{file}: {e}"));
                continue;
            }
        };
        let names_match = stratus_control::strategy::names(&one).all(|n| n == it.name);
        if !names_match {
            bad.insert(
                it.name.clone(),
                format!("{file}: the spec names another workload"),
            );
            continue;
        }
        if let Err(e) = parse::validate_workloads(&one, fleet, &file, "") {
            bad.insert(it.name.clone(), e.to_string());
            continue;
        }
        out.extend(one);
    }
    (out, bad)
}

/// Stored workloads as a workload set (specs that no longer parse are skipped).
pub fn workload_set(items: &[StoredWorkload]) -> WorkloadSet {
    let mut w = WorkloadSet::default();
    for it in items {
        match it.kind.as_str() {
            "training" => {
                if let Ok(t) = serde_json::from_value::<Training>(it.spec.clone()) {
                    w.training.push(t);
                }
            }
            "inference" => {
                if let Ok(s) = serde_json::from_value::<Inference>(it.spec.clone()) {
                    w.inference.push(s);
                }
            }
            "batch" => {
                if let Ok(b) = serde_json::from_value::<Batch>(it.spec.clone()) {
                    w.batch.push(b);
                }
            }
            _ => {}
        }
    }
    w
}

/// The fleet plans are made on (the fleet file format).
async fn fleet(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    Ok(Json(json!(*app.fleet)))
}

async fn list_workloads(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let items = app.store.workloads().await?;
    Ok(Json(json!({ "workloads": items })))
}

/// A workload name from a path, checked against the grammar every name entering stratus
/// follows (`stratus_model::name`).
fn path_name(name: &str) -> Result<(), ApiError> {
    stratus_model::name::check_workload_name(name)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("path: {e}")))
}

/// Longest a watch (`?version=V&wait=S`) waits for a change: under the request deadline.
pub const MAX_WATCH_S: u64 = 50;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Watch {
    /// The version the caller has.
    version: Option<u64>,
    /// Seconds to wait for a version other than `version`.
    wait: Option<u64>,
}

/// The endpoint list now, or (with `version` and `wait`) once its version differs from the
/// caller's, or when the wait is over.
async fn watch_endpoints(app: &App, q: &Watch) -> Arc<crate::endpoints::EndpointList> {
    let mut rx = app.endpoints.subscribe();
    if let (Some(v), Some(w)) = (q.version, q.wait) {
        let wait = std::time::Duration::from_secs(w.min(MAX_WATCH_S));
        let changed = async {
            let _ = rx.wait_for(|l| l.version != v).await;
        };
        let _ = tokio::time::timeout(wait, changed).await;
    }
    let list = rx.borrow().clone();
    list
}

fn watch_query(
    q: Result<Query<Watch>, axum::extract::rejection::QueryRejection>,
) -> Result<Watch, ApiError> {
    q.map(|Query(w)| w).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            format!(
                "query: {} (expected ?version=N&wait=SECONDS)",
                e.body_text()
            ),
        )
    })
}

/// Every inference endpoint (what a gateway follows).
async fn all_endpoints(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<Watch>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let q = watch_query(q)?;
    Ok(Json(json!(*watch_endpoints(&app, &q).await)))
}

/// One service's endpoints: its live replica set.
async fn service_endpoints(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<Watch>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    path_name(&name)?;
    let q = watch_query(q)?;
    match app.store.workload(&name).await? {
        Some(w) if w.kind == "inference" => {}
        Some(w) => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!(
                    "`{name}` is a {} workload, not an inference service",
                    w.kind
                ),
            ))
        }
        None => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("no workload named `{name}`"),
            ))
        }
    }
    let list = watch_endpoints(&app, &q).await;
    let endpoints: Vec<&crate::endpoints::Endpoint> = list
        .endpoints
        .iter()
        .filter(|e| e.service == name)
        .collect();
    Ok(Json(
        json!({"service": name, "version": list.version, "endpoints": endpoints}),
    ))
}

async fn get_workload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    path_name(&name)?;
    match app.store.workload(&name).await? {
        Some(w) => Ok(Json(json!(w))),
        None => Err(err(
            StatusCode::NOT_FOUND,
            format!("no workload named `{name}`"),
        )),
    }
}

async fn delete_workload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Operator).await?;
    path_name(&name)?;
    if app.store.delete(&name).await? {
        app.changed.store(true, std::sync::atomic::Ordering::SeqCst);
        app.wake.notify_one();
        Ok((
            axum::Extension(AuditDetail(format!("deleted workload {name}"))),
            StatusCode::NO_CONTENT,
        )
            .into_response())
    } else {
        Err(err(
            StatusCode::NOT_FOUND,
            format!("no workload named `{name}`"),
        ))
    }
}

/// A workload set as the store keeps it: (name, kind, spec) per workload.
pub fn workload_items(w: &WorkloadSet) -> Vec<(String, String, Value)> {
    let kinds = [
        (
            "training",
            w.training
                .iter()
                .map(|t| (t.name.clone(), json!(t)))
                .collect::<Vec<_>>(),
        ),
        (
            "inference",
            w.inference
                .iter()
                .map(|s| (s.name.clone(), json!(s)))
                .collect(),
        ),
        (
            "batch",
            w.batch.iter().map(|b| (b.name.clone(), json!(b))).collect(),
        ),
    ];
    kinds
        .into_iter()
        .flat_map(|(kind, items)| {
            items
                .into_iter()
                .map(move |(n, v)| (n, kind.to_string(), v))
        })
        .collect()
}

/// Apply a workload document (the workload file format, YAML or JSON by `Content-Type`):
/// every workload in it is created or replaced, all or none.
async fn apply(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Operator).await?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let fmt = if json_body {
        Format::Json
    } else {
        Format::Yaml
    };
    let bad = |e: stratus_model::InputError| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({"error": e.to_string(), "line": e.line, "field": e.field, "reason": e.reason}),
        )
    };
    let w: WorkloadSet = parse::from_str("request body", &body, fmt).map_err(bad)?;
    parse::validate_workloads(&w, &app.fleet, "request body", &body).map_err(bad)?;
    if w.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "request body: no workloads (expected `training`, `inference` or `batch` lists)",
        ));
    }
    let result = app.store.apply(&workload_items(&w), now_ms()).await?;
    app.changed.store(true, std::sync::atomic::Ordering::SeqCst);
    app.wake.notify_one();
    let detail = result
        .iter()
        .map(|(name, r)| format!("{name} {r}"))
        .collect::<Vec<_>>()
        .join(", ");
    let applied: Vec<Value> = result
        .into_iter()
        .map(|(name, r)| json!({"name": name, "result": r}))
        .collect();
    Ok((
        axum::Extension(AuditDetail(format!("applied {detail}"))),
        Json(json!({ "applied": applied })),
    )
        .into_response())
}

async fn current_plan(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    match app.store.plan(None).await? {
        Some(p) => Ok(Json(json!(p))),
        None => Err(err(StatusCode::NOT_FOUND, "no plan yet")),
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
    since: Option<i64>,
}

async fn plans(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let list = app
        .store
        .plans(q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "plans": list })))
}

async fn plan_by_id(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    match app.store.plan(Some(id)).await? {
        Some(p) => Ok(Json(json!(p))),
        None => Err(err(StatusCode::NOT_FOUND, format!("no plan {id}"))),
    }
}

/// Units added, removed and moved between plan `id` and the one before it.
async fn plan_diff(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let new = app
        .store
        .plan(Some(id))
        .await?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no plan {id}")))?;
    let old = app.store.plan(Some(id - 1)).await?;
    let places = |p: &Value| -> BTreeMap<String, (String, String)> {
        p["placements"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        (
                            x["unit"].as_str().unwrap_or("").to_string(),
                            (
                                x["pool"].as_str().unwrap_or("").to_string(),
                                x["category"].as_str().unwrap_or("").to_string(),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let b = places(&new.plan);
    let a = old.as_ref().map(|o| places(&o.plan)).unwrap_or_default();
    let added: Vec<Value> = b
        .iter()
        .filter(|(u, _)| !a.contains_key(*u))
        .map(|(u, (p, c))| json!({"unit": u, "pool": p, "category": c}))
        .collect();
    let removed: Vec<Value> = a
        .iter()
        .filter(|(u, _)| !b.contains_key(*u))
        .map(|(u, (p, c))| json!({"unit": u, "pool": p, "category": c}))
        .collect();
    let moved: Vec<Value> = b
        .iter()
        .filter_map(|(u, to)| {
            a.get(u).filter(|from| *from != to).map(|from| {
                json!({"unit": u, "from": {"pool": from.0, "category": from.1},
                       "to": {"pool": to.0, "category": to.1}})
            })
        })
        .collect();
    Ok(Json(json!({
        "plan": id,
        "against": old.map(|o| o.id),
        "added": added,
        "removed": removed,
        "moved": moved,
    })))
}

async fn actions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let list = app
        .store
        .actions(
            q.since.unwrap_or(0),
            q.limit.unwrap_or(500).clamp(1, 10_000),
        )
        .await?;
    Ok(Json(json!({ "actions": list })))
}

/// Usage records (JSON lines, times in Unix seconds): `stratus ledger export --usage F
/// --start 0` bills them. Read from the store, not the meter: a record metered but not yet
/// committed by its reconcile would vanish on a crash, and a bill must not shrink.
async fn usage(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let records = app.store.usage().await?;
    let mut out = String::new();
    for u in &records {
        out.push_str(&serde_json::to_string(u).expect("usage serializes"));
        out.push('\n');
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}

/// The bill so far as FOCUS 1.2 CSV, under the service's commitments.
async fn focus_csv(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let rows = app
        .live_rows()
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut out = Vec::new();
    stratus_ledger::write_csv(&rows, "lab", &mut out)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/csv")], out).into_response())
}

/// Run `f`, which takes the control lock, on a blocking thread rather than an async worker.
/// The reconcile loop holds that lock while it waits on the database; a worker blocked on it
/// can stall the very I/O the loop waits for (seen: `stratus status` during a reconcile hung
/// the server with both in wait).
async fn off_worker<R: Send + 'static>(app: &Arc<App>, f: fn(&App) -> R) -> R {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .expect("reading the control state does not panic")
}

/// Counters and observed state, for `stratus status` and dashboards.
fn observed(app: &App) -> Value {
    let c = crate::lock(&app.control);
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    let mut chips: u64 = 0;
    // The controller's last observation: the API never calls a driver (it may block on a
    // remote API).
    for i in c.controller.observed() {
        let s = match i.state {
            stratus_control::InstanceState::Pending { .. } => "pending",
            stratus_control::InstanceState::Running => "running",
            stratus_control::InstanceState::Stopping { .. } => "stopping",
            stratus_control::InstanceState::Lost(_) => "lost",
        };
        *states.entry(s).or_default() += 1;
        if s == "running" {
            let cpn = app
                .fleet
                .pools()
                .find(|(_, _, p)| p.id == i.request.pool)
                .map(|(_, _, p)| p.chips_per_node)
                .unwrap_or(0);
            chips += (i.request.nodes * cpn) as u64;
        }
    }
    let mut unplaced: BTreeMap<String, String> = c.controller.unplaced().clone();
    unplaced.extend(c.invalid.clone());
    let unobserved: Vec<Value> = c
        .controller
        .observation()
        .unobserved
        .iter()
        .map(|u| json!({"scope": u.scope, "error": u.error.to_string()}))
        .collect();
    let orphans: Vec<Value> = c
        .controller
        .orphans()
        .map(|(t, at)| json!({"token": t, "first_seen_s": at.0}))
        .collect();
    json!({
        "reconciles": c.ticks,
        "controller": c.controller.stats,
        "instances": states,
        "running_chips": chips,
        "unplaced_workloads": unplaced.keys().collect::<Vec<_>>(),
        "unplaced": unplaced,
        "unobserved": unobserved,
        "adoption_pending": c.controller.adoption_pending(),
        "orphans": orphans,
    })
}

async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&app, &headers, Role::Viewer).await?;
    let workloads = app.store.workload_count().await?;
    let plan = app.store.plans(1).await?.into_iter().next();
    let mut v = off_worker(&app, observed).await;
    v["reconcile_loop"] = json!(*crate::lock(&app.health));
    v["workloads"] = json!(workloads);
    v["plan"] = json!(plan);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

async fn create_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    require(&app, &headers, Role::Admin).await?;
    let req: NewToken = serde_json::from_str(&body).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            format!(
                "request body:{}: {e} (expected {{\"name\": …, \"role\": viewer|operator|admin}})",
                e.line()
            ),
        )
    })?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            format!(
                "request body: field `role`: `{}` is not viewer, operator or admin",
                req.role
            ),
        )
    })?;
    let token = auth::new_token().map_err(|e| {
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no random source: {e}"),
        )
    })?;
    auth::check_token_name(&req.name).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            format!("request body: field `name`: {e}"),
        )
    })?;
    let hash = auth::hash(&token);
    app.store
        .add_token(&hash, &req.name, role.name(), now_ms())
        .await?;
    let id: String = hash.chars().take(16).collect();
    Ok((
        axum::Extension(AuditDetail(format!(
            "created token {} ({}, {id})",
            req.name,
            role.name()
        ))),
        Json(json!({"name": req.name, "role": role.name(), "id": id, "token": token})),
    )
        .into_response())
}

/// Prometheus text exposition. Unauthenticated, so it reads only counters: one count of
/// the stored workloads and the newest plan's summary row, never the specs.
async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let workloads = app.store.workload_count().await?;
    let plan = app.store.plans(1).await?.into_iter().next();
    let o = off_worker(&app, observed).await;
    let mut s = String::new();
    let mut g = |name: &str, help: &str, kind: &str, v: f64| {
        s.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    };
    g(
        "stratus_workloads",
        "Workloads stored.",
        "gauge",
        workloads as f64,
    );
    g(
        "stratus_reconciles_total",
        "Reconciles run.",
        "counter",
        o["reconciles"].as_f64().unwrap_or(0.0),
    );
    for k in [
        "replans",
        "launches",
        "stops",
        "migrations",
        "scales",
        "losses",
        "capacity_errors",
        "unreachable_errors",
    ] {
        g(
            &format!("stratus_controller_{k}_total"),
            &format!("Controller {} since start.", k.replace('_', " ")),
            "counter",
            o["controller"][k].as_f64().unwrap_or(0.0),
        );
    }
    g(
        "stratus_running_chips",
        "Chips on running instances.",
        "gauge",
        o["running_chips"].as_f64().unwrap_or(0.0),
    );
    if let Some(p) = plan {
        g(
            "stratus_plan_cost_per_hour_usd",
            "Marginal $/h of the current plan.",
            "gauge",
            p.cost_per_hour,
        );
        g(
            "stratus_plan_unplaced_units",
            "Units the current plan leaves out.",
            "gauge",
            p.unplaced as f64,
        );
    }
    s.push_str("# HELP stratus_instances Instances by state.\n# TYPE stratus_instances gauge\n");
    if let Some(m) = o["instances"].as_object() {
        for (k, v) in m {
            s.push_str(&format!(
                "stratus_instances{{state=\"{k}\"}} {}\n",
                v.as_f64().unwrap_or(0.0)
            ));
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response())
}

async fn openapi() -> Json<Value> {
    Json(openapi_doc())
}

/// The OpenAPI 3.0 document of this API.
pub fn openapi_doc() -> Value {
    let bearer = json!([{"bearer": []}]);
    let op = |summary: &str, role: &str| {
        json!({
            "summary": summary,
            "description": format!("Needs the {role} role."),
            "security": bearer,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "401": {"description": "No or unknown token"},
                "403": {"description": "Role too low"}
            }
        })
    };
    let mut apply = op(
        "Create or replace the workloads of a workload document (YAML or JSON), all or none",
        "operator",
    );
    apply["requestBody"] = json!({"required": true, "content": {
        "application/yaml": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object"}}}});
    apply["responses"]["400"] =
        json!({"description": "Bad input: the message names line and field; nothing is stored"});
    apply["responses"]["413"] = json!({"description": "Body larger than 1 MiB"});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "stratus", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Multi-cloud control plane for AI compute."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: the database answers and the reconcile loop works", "responses": {"200": {"description": "ready"}, "503": {"description": "database unavailable, or the reconcile loop panicked or stalled"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
            "/v1/fleet": {"get": op("The fleet plans are made on, in the fleet file format", "viewer")},
            "/v1/workloads": {"get": op("List workloads", "viewer"), "post": apply},
            "/v1/workloads/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": op("One workload", "viewer"),
                "delete": op("Delete a workload (its units are stopped at the next reconcile)", "operator")},
            "/v1/plan": {"get": op("The current plan", "viewer")},
            "/v1/plans": {"get": op("Plan history, newest first (?limit=)", "viewer")},
            "/v1/plans/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "get": op("One plan of the history", "viewer")},
            "/v1/plans/{id}/diff": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "get": op("Units added, removed and moved since the plan before it", "viewer")},
            "/v1/actions": {"get": op("The controller's actions log (?since=ID&limit=)", "viewer")},
            "/v1/status": {"get": op("Counters, observed instances, the current plan's summary", "viewer")},
            "/v1/usage": {"get": op("Usage records (stored across restarts), JSON lines", "viewer")},
            "/v1/whoami": {"get": op("The caller's role", "viewer")},
            "/v1/ledger/summary": {"get": op("Live bill, the current plan's 30-day projection under the commitments, plan history spend, power by region against caps", "viewer")},
            "/v1/sim/outage": {"post": op("Take a region of the simulated provider down or back {region, down}", "operator")},
            "/v1/inference": {"get": op("The gateway's metrics per service (with --gateway-metrics)", "viewer")},
            "/v1/sim/reports": {"get": op("Simulation reports under --reports", "viewer")},
            "/v1/sim/reports/{name}/{file}": {"get": op("report.md, metrics.json or a plot of one report", "viewer")},
            "/v1/ledger/focus.csv": {"get": op("The usage billed as FOCUS 1.2 CSV", "viewer")},
            "/v1/tokens": {"post": op("Create an API token {name, role}; the token is shown once", "admin"),
                           "get": op("Every token's id, name, role and creation time (never a value)", "admin")},
            "/v1/tokens/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "delete": op("Revoke a token (409 for the last admin token)", "admin")},
            "/v1/audit": {"get": op("Every write through the API: who, what, when (?since=ID&limit=)", "admin")},
            "/v1/endpoints": {"get": op("Every inference service's endpoints (url, region, provider, accelerator, $/h, state starting|serving|draining) and the list's version; ?version=V&wait=S waits up to S s (at most 50) for another version", "viewer")},
            "/v1/services/{name}/endpoints": {"get": op("One service's live replica set, as /v1/endpoints", "viewer")}
        }
    })
}
