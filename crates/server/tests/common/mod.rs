//! The service on 127.0.0.1 for the API tests, and a client.
#![allow(dead_code)]

use serde_json::Value;
use std::sync::Arc;
use stratus_server::{reconcile_once, App, Config};

pub const ADMIN: &str = "test-admin-token";

pub struct Server {
    pub base: String,
    pub app: Arc<App>,
    pub rt: tokio::runtime::Runtime,
}

pub fn start(db: &str) -> Server {
    start_with(db, stratus_server::Limits::default())
}

pub fn start_with(db: &str, limits: stratus_server::Limits) -> Server {
    start_app(config(db), None, limits)
}

/// The service's configuration for tests: simulated providers, an hour between reconciles.
pub fn config(db: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: db.into(),
        tick_s: 3600.0,
        boot_s: 0.0,
        admin_token: Some(ADMIN.into()),
        driver: stratus_server::DriverChoice::Sim,
        gateway_metrics: None,
        reports: None,
        commitments: None,
        autoscale: None,
    }
}

/// The service from `config`, with `backend` instead of the one the configuration names.
pub fn start_app(
    config: Config,
    backend: Option<stratus_server::Backend>,
    limits: stratus_server::Limits,
) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, base) = rt.block_on(async {
        let fleet = stratus_catalog::builtin().clone();
        let app = match backend {
            Some(b) => stratus_server::app_with(&config, fleet, b).await,
            None => stratus_server::app(&config, fleet).await,
        }
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(stratus_server::serve_on_with(
            app.clone(),
            listener,
            std::future::pending(),
            limits,
        ));
        (app, format!("http://{addr}"))
    });
    Server { base, app, rt }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

impl Server {
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let a = agent();
        let auth = token.map(|t| format!("Bearer {t}"));
        let r = match (method, body) {
            ("GET", _) => {
                let mut q = a.get(&url);
                if let Some(h) = &auth {
                    q = q.header("Authorization", h);
                }
                q.call()
            }
            ("DELETE", _) => {
                let mut q = a.delete(&url);
                if let Some(h) = &auth {
                    q = q.header("Authorization", h);
                }
                q.call()
            }
            (_, Some((ct, b))) => {
                let mut q = a.post(&url).header("Content-Type", ct);
                if let Some(h) = &auth {
                    q = q.header("Authorization", h);
                }
                q.send(b)
            }
            _ => unreachable!(),
        };
        let mut r = r.unwrap();
        let code = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn reconcile(&self) {
        self.rt.block_on(reconcile_once(&self.app)).unwrap();
    }
}
