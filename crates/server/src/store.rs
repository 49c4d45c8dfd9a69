//! Persistence: SQLite (a file, the embedded default) or PostgreSQL (by URL), through one
//! runtime-generic pool and one set of migrations. Every change a request makes is one
//! transaction, so a crash never leaves half of it applied.

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Migrations, in order. Each runs once, in a transaction, and is recorded.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_usage.sql")),
    (3, include_str!("../migrations/0003_control.sql")),
    (4, include_str!("../migrations/0004_audit.sql")),
];

/// A storage failure (the database is down, a constraint broke).
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

/// A stored workload: its kind and spec (as the workload file's JSON for that kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWorkload {
    /// Name (unique across kinds).
    pub name: String,
    /// `training`, `inference` or `batch`.
    pub kind: String,
    /// The spec.
    pub spec: serde_json::Value,
    /// Bumped on every change.
    pub generation: i64,
    /// Last change, ms since the Unix epoch.
    pub updated_ms: i64,
}

/// One plan of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPlan {
    /// Increasing id.
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub created_ms: i64,
    /// Marginal $/h.
    pub cost_per_hour: f64,
    /// Units placed.
    pub placed: i64,
    /// Units left out.
    pub unplaced: i64,
    /// The planner's output.
    pub plan: serde_json::Value,
}

/// One entry of the actions log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAction {
    /// Increasing id.
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// `launch`, `stop`, `migrate`, `scale`, `launch-failed`, `lost`.
    pub kind: String,
    /// Unit key.
    pub unit: String,
    /// Pool.
    pub pool: String,
    /// Idempotency token of the instance.
    pub token: String,
    /// Why.
    pub reason: String,
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

fn workload(r: &AnyRow) -> Result<StoredWorkload, sqlx::Error> {
    let spec: String = r.try_get("spec")?;
    Ok(StoredWorkload {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
        generation: r.try_get("generation")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

/// A plan-history row; the body (sixth column) when the query selected it.
fn plan_row(r: &AnyRow) -> Result<StoredPlan, sqlx::Error> {
    let plan = match r.try_get::<String, _>(5) {
        Ok(body) => serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    };
    Ok(StoredPlan {
        id: r.try_get(0)?,
        created_ms: r.try_get(1)?,
        cost_per_hour: r.try_get(2)?,
        placed: r.try_get(3)?,
        unplaced: r.try_get(4)?,
        plan,
    })
}

impl Store {
    /// Connect (`sqlite://FILE` creates the file; `postgres://…`) and migrate.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.contains('?') {
                url.to_string()
            } else {
                format!("sqlite://{path}?mode=rwc")
            }
        } else {
            url.to_string()
        };
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // One writer at a time is what SQLite allows anyway.
            .max_connections(if sqlite { 1 } else { 8 })
            .connect(&url)
            .await?;
        if sqlite {
            // Durable writes that survive a kill -9 of the server.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA synchronous=FULL")
                .execute(&pool)
                .await?;
        }
        let s = Store { pool };
        s.migrate().await?;
        Ok(s)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            for stmt in statements(sql) {
                sqlx::query(&stmt).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(*version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Insert or update usage records (by token), all or none.
    pub async fn save_usage(&self, records: &[stratus_ledger::Usage]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        save_usage(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What one reconcile changed, in one transaction: its actions, the usage records it
    /// extended, a new plan for the history, and the owned instances that changed
    /// (`owned`: token → unit and record; `None` deletes the row).
    pub async fn save_reconcile(&self, r: &ReconcileWrite<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        add_actions(&mut tx, r.actions, r.now_ms).await?;
        save_usage(&mut tx, r.usage).await?;
        if let Some(p) = r.plan {
            add_plan(&mut tx, r.now_ms, p).await?;
        }
        for (token, row) in r.owned {
            put_owned(
                &mut tx,
                token,
                row.as_ref().map(|(u, t)| (u.as_str(), t.as_str())),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Write (or, with `None`, delete) one owned instance's row: the launch journal.
    pub async fn put_owned(
        &self,
        token: &str,
        row: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        put_owned(&mut tx, token, row).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every owned instance's row: (token, unit, record).
    pub async fn owned(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query("SELECT token, unit, record FROM owned ORDER BY token")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError)
    }

    /// The highest token sequence number reserved so far (0 if none).
    pub async fn token_seq(&self) -> Result<u64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT value FROM control_state WHERE name = 'token_seq'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Reserve token sequence numbers up to at least `above + block`; returns the new
    /// highest reserved number. Numbers at or below it are never handed out again.
    pub async fn reserve_token_seq(&self, above: u64, block: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let cur: Option<i64> =
            sqlx::query_scalar("SELECT value FROM control_state WHERE name = 'token_seq'")
                .fetch_optional(&mut *tx)
                .await?;
        let new = (cur.unwrap_or(0).max(0) as u64)
            .max(above)
            .saturating_add(block);
        let v = i64::try_from(new).unwrap_or(i64::MAX);
        if cur.is_some() {
            sqlx::query("UPDATE control_state SET value = $1 WHERE name = 'token_seq'")
                .bind(v)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("INSERT INTO control_state (name, value) VALUES ('token_seq', $1)")
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(v as u64)
    }

    /// Every usage record stored, in start order.
    pub async fn usage(&self) -> Result<Vec<stratus_ledger::Usage>, StoreError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT record FROM usage ORDER BY start_s, token")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Insert or replace workloads, all or none.
    pub async fn apply(
        &self,
        items: &[(String, String, serde_json::Value)],
        now_ms: i64,
    ) -> Result<Vec<(String, &'static str)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::new();
        for (name, kind, spec) in items {
            let text = spec.to_string();
            let row = sqlx::query("SELECT kind, spec, generation FROM workloads WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                None => {
                    sqlx::query(
                        "INSERT INTO workloads (name, kind, spec, generation, updated_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(name)
                    .bind(kind)
                    .bind(&text)
                    .bind(1i64)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    out.push((name.clone(), "created"));
                }
                Some(r) => {
                    let (k, s, g): (String, String, i64) =
                        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                    let same = k == *kind
                        && serde_json::from_str::<serde_json::Value>(&s).ok().as_ref()
                            == Some(spec);
                    if same {
                        out.push((name.clone(), "unchanged"));
                        continue;
                    }
                    sqlx::query(
                        "UPDATE workloads SET kind = $1, spec = $2, generation = $3, \
                         updated_ms = $4 WHERE name = $5",
                    )
                    .bind(kind)
                    .bind(&text)
                    .bind(g + 1)
                    .bind(now_ms)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                    out.push((name.clone(), "configured"));
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Every workload, by name.
    pub async fn workloads(&self) -> Result<Vec<StoredWorkload>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, kind, spec, generation, updated_ms FROM workloads ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(workload).collect::<Result<_, _>>()?)
    }

    /// How many workloads are stored (without reading their specs).
    pub async fn workload_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM workloads")
            .fetch_one(&self.pool)
            .await?)
    }

    /// One workload.
    pub async fn workload(&self, name: &str) -> Result<Option<StoredWorkload>, StoreError> {
        let row = sqlx::query(
            "SELECT name, kind, spec, generation, updated_ms FROM workloads WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(workload).transpose()?)
    }

    /// Delete one workload; whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM workloads WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Append a plan to the history; returns its id.
    pub async fn add_plan(
        &self,
        now_ms: i64,
        plan: &stratus_plan::Plan,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = add_plan(&mut tx, now_ms, plan).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Plan history, newest first, without the plan bodies.
    pub async fn plans(&self, limit: i64) -> Result<Vec<StoredPlan>, StoreError> {
        self.history(limit, false).await
    }

    /// The newest `limit` plans with their bodies, newest first.
    pub async fn recent_plans(&self, limit: i64) -> Result<Vec<StoredPlan>, StoreError> {
        self.history(limit, true).await
    }

    async fn history(&self, limit: i64, bodies: bool) -> Result<Vec<StoredPlan>, StoreError> {
        let q = if bodies {
            "SELECT id, created_ms, cost_per_hour, placed, unplaced, plan FROM plans \
             ORDER BY id DESC LIMIT $1"
        } else {
            "SELECT id, created_ms, cost_per_hour, placed, unplaced FROM plans \
             ORDER BY id DESC LIMIT $1"
        };
        let rows = sqlx::query(q).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(plan_row).collect::<Result<_, _>>()?)
    }

    /// One plan with its body (`None` id: the newest).
    pub async fn plan(&self, id: Option<i64>) -> Result<Option<StoredPlan>, StoreError> {
        let q = match id {
            Some(_) => "SELECT id, created_ms, cost_per_hour, placed, unplaced, plan FROM plans WHERE id = $1",
            None => "SELECT id, created_ms, cost_per_hour, placed, unplaced, plan FROM plans ORDER BY id DESC LIMIT 1",
        };
        let mut query = sqlx::query(q);
        if let Some(i) = id {
            query = query.bind(i);
        }
        let row = query.fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(plan_row).transpose()?)
    }

    /// Append actions, all or none.
    pub async fn add_actions(
        &self,
        actions: &[stratus_control::Action],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if actions.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        add_actions(&mut tx, actions, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Actions after `since` (exclusive), oldest first, at most `limit`.
    pub async fn actions(&self, since: i64, limit: i64) -> Result<Vec<StoredAction>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, unit, pool, token, reason FROM actions WHERE id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredAction {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    unit: r.try_get(3)?,
                    pool: r.try_get(4)?,
                    token: r.try_get(5)?,
                    reason: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError)
    }

    /// Store an API token's hash with its role (replacing one of the same hash).
    pub async fn add_token(
        &self,
        hash: &str,
        name: &str,
        role: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM api_tokens WHERE hash = $1")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_tokens (hash, name, role, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(name)
        .bind(role)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The role of a token hash, if known.
    pub async fn role_of(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self.token_of(hash).await?.map(|t| t.role))
    }

    /// A token by its hash, if known.
    pub async fn token_of(&self, hash: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row =
            sqlx::query("SELECT hash, name, role, created_ms FROM api_tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(token_row).transpose()?)
    }

    /// Every token (never its value: the id is the start of its hash), oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT hash, name, role, created_ms FROM api_tokens ORDER BY created_ms, hash",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(token_row).collect::<Result<_, _>>()?)
    }

    /// Revoke the token whose id is `id`; the last admin token is never revoked.
    pub async fn revoke_token(&self, id: &str) -> Result<Revoke, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("SELECT hash, name, role, created_ms FROM api_tokens")
            .fetch_all(&mut *tx)
            .await?;
        let all: Vec<TokenInfo> = rows.iter().map(token_row).collect::<Result<_, _>>()?;
        let Some(t) = all.iter().find(|t| t.id == id) else {
            return Ok(Revoke::NotFound);
        };
        if t.role == "admin" && all.iter().filter(|x| x.role == "admin").count() == 1 {
            return Ok(Revoke::LastAdmin);
        }
        sqlx::query("DELETE FROM api_tokens WHERE hash = $1")
            .bind(&t.hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Revoke::Revoked(t.clone()))
    }

    /// Store the admin token a file or the environment gives at start, named
    /// `bootstrap-admin`, revoking any earlier one of that name (a rotated file revokes the
    /// old token).
    pub async fn set_bootstrap_admin(&self, hash: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM api_tokens WHERE name = 'bootstrap-admin' OR hash = $1")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_tokens (hash, name, role, created_ms) \
             VALUES ($1, 'bootstrap-admin', 'admin', $2)",
        )
        .bind(hash)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Append one audit record.
    pub async fn audit(&self, a: &AuditRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM audit")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO audit (id, at_ms, who, role, method, path, status, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(a.at_ms)
        .bind(&a.who)
        .bind(&a.role)
        .bind(&a.method)
        .bind(&a.path)
        .bind(a.status)
        .bind(&a.detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit records after `since` (exclusive), oldest first, at most `limit`.
    pub async fn audit_log(&self, since: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, who, role, method, path, status, detail FROM audit \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    who: r.try_get(2)?,
                    role: r.try_get(3)?,
                    method: r.try_get(4)?,
                    path: r.try_get(5)?,
                    status: r.try_get(6)?,
                    detail: r.try_get(7)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError)
    }

    /// Whether any API token is stored.
    pub async fn has_tokens(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// An API token as listed: never its value; `id` is the first 16 hex digits of its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The start of the hash: what `DELETE /v1/tokens/{id}` takes.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: i64,
    /// The whole hash (not listed).
    #[serde(skip)]
    pub hash: String,
}

fn token_row(r: &AnyRow) -> Result<TokenInfo, sqlx::Error> {
    let hash: String = r.try_get(0)?;
    Ok(TokenInfo {
        id: hash.chars().take(16).collect(),
        name: r.try_get(1)?,
        role: r.try_get(2)?,
        created_ms: r.try_get(3)?,
        hash,
    })
}

/// What revoking a token did.
#[derive(Debug, Clone, PartialEq)]
pub enum Revoke {
    /// Revoked.
    Revoked(TokenInfo),
    /// No token has this id.
    NotFound,
    /// It is the last admin token: revoking it would lock every admin out.
    LastAdmin,
}

/// One write through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing id (0 before it is stored).
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// The token's name (and id), or `-` when no valid token was given.
    pub who: String,
    /// The token's role, or `-`.
    pub role: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The answer's status.
    pub status: i64,
    /// What changed, in one line.
    pub detail: String,
}

/// What one reconcile writes (see [`Store::save_reconcile`]).
pub struct ReconcileWrite<'a> {
    /// When, ms since the Unix epoch.
    pub now_ms: i64,
    /// Actions to append.
    pub actions: &'a [stratus_control::Action],
    /// Usage records to insert or update.
    pub usage: &'a [stratus_ledger::Usage],
    /// A plan for the history.
    pub plan: Option<&'a stratus_plan::Plan>,
    /// Owned instances changed: token → (unit, record), `None` to delete.
    pub owned: &'a [(String, Option<(String, String)>)],
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

async fn save_usage(tx: &mut Tx, records: &[stratus_ledger::Usage]) -> Result<(), StoreError> {
    for u in records {
        sqlx::query(
            "INSERT INTO usage (token, start_s, end_s, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (token) DO UPDATE SET start_s = excluded.start_s, end_s = excluded.end_s, \
             record = excluded.record",
        )
        .bind(&u.token)
        .bind(u.start_s)
        .bind(u.end_s)
        .bind(serde_json::to_string(u).expect("usage serializes"))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn add_plan(tx: &mut Tx, now_ms: i64, plan: &stratus_plan::Plan) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM plans")
        .fetch_one(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO plans (id, created_ms, cost_per_hour, placed, unplaced, plan) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(now_ms)
    .bind(plan.cost_per_hour)
    .bind(plan.placements.len() as i64)
    .bind(plan.unplaced.len() as i64)
    .bind(serde_json::to_string(plan).expect("a plan serializes"))
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

async fn add_actions(
    tx: &mut Tx,
    actions: &[stratus_control::Action],
    now_ms: i64,
) -> Result<(), StoreError> {
    if actions.is_empty() {
        return Ok(());
    }
    let mut id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM actions")
        .fetch_one(&mut **tx)
        .await?;
    for a in actions {
        id += 1;
        let kind = serde_json::to_value(a.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO actions (id, at_ms, kind, unit, pool, token, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(now_ms)
        .bind(kind)
        .bind(&a.unit)
        .bind(&a.pool)
        .bind(&a.token)
        .bind(&a.reason)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn put_owned(tx: &mut Tx, token: &str, row: Option<(&str, &str)>) -> Result<(), StoreError> {
    match row {
        Some((unit, record)) => {
            sqlx::query(
                "INSERT INTO owned (token, unit, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (token) DO UPDATE SET unit = excluded.unit, record = excluded.record",
            )
            .bind(token)
            .bind(unit)
            .bind(record)
            .execute(&mut **tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM owned WHERE token = $1")
                .bind(token)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// The statements of a migration file: split on `;`, comments and blanks dropped.
fn statements(sql: &str) -> Vec<String> {
    sql.split(';')
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
        .collect()
}
