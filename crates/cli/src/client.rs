//! `stratus apply|get|status`: a thin client of `stratus serve`'s API.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;
use std::path::Path;

/// Where the server is and who we are.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Server URL (default: STRATUS_SERVER or http://127.0.0.1:8470).
    #[arg(long)]
    pub server: Option<String>,
    /// API token (default: STRATUS_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
}

/// What `stratus get` reads.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum What {
    /// Stored workloads.
    Workloads,
    /// The current plan.
    Plan,
    /// Plan history.
    Plans,
    /// The controller's actions log.
    Actions,
    /// Every write through the API: who, what, when (admins).
    Audit,
}

/// What `stratus tokens` does (admins).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TokensCmd {
    /// Every token's id, name, role and age (never a value).
    List,
    /// Make a token; its value is printed once.
    Create {
        /// A name for it (who or what uses it).
        #[arg(long)]
        name: String,
        /// `viewer`, `operator` or `admin`.
        #[arg(long)]
        role: String,
    },
    /// Revoke a token by its id (see `stratus tokens list`).
    Revoke {
        /// The token's id.
        id: String,
    },
}

struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(a: &ServerArgs) -> Result<Client> {
        let base = a
            .server
            .clone()
            .or_else(|| std::env::var("STRATUS_SERVER").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8470".into());
        let token = a
            .token
            .clone()
            .or_else(|| std::env::var("STRATUS_TOKEN").ok())
            .context("no API token: pass --token or set STRATUS_TOKEN")?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        })
    }

    fn answer(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value> {
        let mut r = r.with_context(|| format!("cannot reach {}", self.base))?;
        let status = r.status();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = v["error"]
                .as_str()
                .map(String::from)
                .unwrap_or(v.to_string());
            bail!("server answered {status}: {msg}");
        }
        Ok(v)
    }

    fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        self.answer(r)
    }
}

/// `stratus apply -f FILE`.
pub fn apply(a: &ServerArgs, file: &Path) -> Result<()> {
    let c = Client::new(a)?;
    let body =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ct = if file.extension().is_some_and(|e| e == "json") {
        "application/json"
    } else {
        "application/yaml"
    };
    let r = c
        .agent
        .post(&format!("{}/v1/workloads", c.base))
        .header("Authorization", &format!("Bearer {}", c.token))
        .header("Content-Type", ct)
        .send(body.as_bytes());
    let v = c
        .answer(r)
        .with_context(|| format!("applying {}", file.display()))?;
    for it in v["applied"].as_array().into_iter().flatten() {
        println!(
            "{} {}",
            it["name"].as_str().unwrap_or(""),
            it["result"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `stratus get …`.
pub fn get(a: &ServerArgs, what: What) -> Result<()> {
    let c = Client::new(a)?;
    match what {
        What::Workloads => {
            let v = c.get("/v1/workloads")?;
            println!("{:<32} {:<10} {:>4}", "NAME", "KIND", "GEN");
            for w in v["workloads"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<10} {:>4}",
                    w["name"].as_str().unwrap_or(""),
                    w["kind"].as_str().unwrap_or(""),
                    w["generation"]
                );
            }
        }
        What::Plan => {
            let v = c.get("/v1/plan")?;
            let p = &v["plan"];
            println!(
                "plan {}: {} placements, {} unplaced, ${:.0}/h, gap {:.2}%",
                v["id"],
                v["placed"],
                v["unplaced"],
                v["cost_per_hour"].as_f64().unwrap_or(0.0),
                p["gap"].as_f64().unwrap_or(0.0) * 100.0
            );
            for x in p["placements"].as_array().into_iter().flatten() {
                println!(
                    "  {:<40} {:<48} {:>4} nodes  {}",
                    x["unit"].as_str().unwrap_or(""),
                    x["pool"].as_str().unwrap_or(""),
                    x["nodes"],
                    x["category"].as_str().unwrap_or("")
                );
            }
            for u in p["unplaced"].as_array().into_iter().flatten() {
                println!(
                    "  unplaced {}: {}",
                    u["unit"].as_str().unwrap_or(""),
                    u["reason"].as_str().unwrap_or("")
                );
            }
        }
        What::Plans => {
            let v = c.get("/v1/plans")?;
            for p in v["plans"].as_array().into_iter().flatten() {
                println!(
                    "plan {:>4}  {} placed  {} unplaced  ${:.0}/h",
                    p["id"],
                    p["placed"],
                    p["unplaced"],
                    p["cost_per_hour"].as_f64().unwrap_or(0.0)
                );
            }
        }
        What::Audit => {
            let v = c.get("/v1/audit")?;
            for x in v["audit"].as_array().into_iter().flatten() {
                println!(
                    "{:>6} {} {:<40} {:<8} {:<6} {:<28} {:>3} {}",
                    x["id"],
                    x["at_ms"],
                    x["who"].as_str().unwrap_or(""),
                    x["role"].as_str().unwrap_or(""),
                    x["method"].as_str().unwrap_or(""),
                    x["path"].as_str().unwrap_or(""),
                    x["status"],
                    x["detail"].as_str().unwrap_or("")
                );
            }
        }
        What::Actions => {
            let v = c.get("/v1/actions")?;
            for x in v["actions"].as_array().into_iter().flatten() {
                println!(
                    "{:>6} {:<14} {:<40} {:<44} {}",
                    x["id"],
                    x["kind"].as_str().unwrap_or(""),
                    x["unit"].as_str().unwrap_or(""),
                    x["pool"].as_str().unwrap_or(""),
                    x["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// `stratus tokens …`.
pub fn tokens(a: &ServerArgs, cmd: &TokensCmd) -> Result<()> {
    let c = Client::new(a)?;
    match cmd {
        TokensCmd::List => {
            let v = c.get("/v1/tokens")?;
            println!("{:<16}  {:<8}  {:<13}  NAME", "ID", "ROLE", "CREATED_MS");
            for t in v["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{:<16}  {:<8}  {:<13}  {}",
                    t["id"].as_str().unwrap_or(""),
                    t["role"].as_str().unwrap_or(""),
                    t["created_ms"],
                    t["name"].as_str().unwrap_or("")
                );
            }
        }
        TokensCmd::Create { name, role } => {
            let body = serde_json::json!({"name": name, "role": role}).to_string();
            let r = c
                .agent
                .post(&format!("{}/v1/tokens", c.base))
                .header("Authorization", &format!("Bearer {}", c.token))
                .header("Content-Type", "application/json")
                .send(body.as_bytes());
            let v = c.answer(r)?;
            println!(
                "{}  (id {}, {}; shown once)",
                v["token"].as_str().unwrap_or(""),
                v["id"].as_str().unwrap_or(""),
                v["role"].as_str().unwrap_or("")
            );
        }
        TokensCmd::Revoke { id } => {
            let r = c
                .agent
                .delete(&format!("{}/v1/tokens/{id}", c.base))
                .header("Authorization", &format!("Bearer {}", c.token))
                .call();
            c.answer(r)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// `stratus status`.
pub fn status(a: &ServerArgs) -> Result<()> {
    let c = Client::new(a)?;
    let v = c.get("/v1/status")?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
