//! The request path, as named layers in order: **auth** (whose key) → **admit** (a readable,
//! well-formed request for a model the key may use and some replica serves, within the key's
//! limits and the gateway's bound on requests in flight) → **route** (pick a replica, retry
//! another before the first byte; `proxy`) → **forward** (stream the answer; `upstream`) →
//! **account** (tokens, limits, metrics, the usage log; `proxy::finish`).
//!
//! A layer that refuses a request says why with its own error type; [`Refused`] carries it to
//! the client as an OpenAI-shaped error and to `/metrics` as
//! `stratus_gateway_refused_total{layer,reason}`, so an operator sees which layer turned
//! requests away.

use crate::limit::Limit;
use crate::proxy::{json_response, Body};
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

/// Why the auth layer refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A key the gateway does not know.
    Unknown,
}

/// Why the admit layer refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    /// The body could not be read (too large, a broken connection).
    BodyUnreadable(String),
    /// The body did not arrive within the deadline, milliseconds.
    BodyTimeout(u64),
    /// Not a request the gateway forwards (the reason says why).
    Invalid(String),
    /// The key may not use this model.
    ModelNotAllowed {
        /// Key name.
        key: String,
        /// Model asked for.
        model: String,
    },
    /// No replica serves this model.
    ModelNotFound(String),
    /// The key is over a limit.
    RateLimited {
        /// Key name.
        key: String,
        /// Which limit.
        limit: Limit,
        /// Seconds until a request would be admitted.
        retry_after_s: u64,
    },
    /// The gateway holds its bound of requests in flight.
    Busy(usize),
}

/// Why the route layer gave up on a request (no replica answered before its first byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// Model asked for.
    pub model: String,
    /// The last replica's failure, or why none could be tried.
    pub last_error: String,
    /// Replicas tried.
    pub tried: usize,
}

/// A request the gateway answered itself, and the layer that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// By auth.
    Auth(AuthError),
    /// By admit.
    Admit(AdmitError),
    /// By route.
    Route(RouteError),
}

impl From<AuthError> for Refused {
    fn from(e: AuthError) -> Self {
        Refused::Auth(e)
    }
}
impl From<AdmitError> for Refused {
    fn from(e: AdmitError) -> Self {
        Refused::Admit(e)
    }
}
impl From<RouteError> for Refused {
    fn from(e: RouteError) -> Self {
        Refused::Route(e)
    }
}

impl Refused {
    /// The layer, as the metric labels it.
    pub fn layer(&self) -> &'static str {
        match self {
            Refused::Auth(_) => "auth",
            Refused::Admit(_) => "admit",
            Refused::Route(_) => "route",
        }
    }

    /// The reason, as the metric labels it.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Auth(AuthError::Missing) => "missing_key",
            Refused::Auth(AuthError::Unknown) => "unknown_key",
            Refused::Admit(e) => match e {
                AdmitError::BodyUnreadable(_) => "body_unreadable",
                AdmitError::BodyTimeout(_) => "body_timeout",
                AdmitError::Invalid(_) => "invalid_request",
                AdmitError::ModelNotAllowed { .. } => "model_not_allowed",
                AdmitError::ModelNotFound(_) => "model_not_found",
                AdmitError::RateLimited {
                    limit: Limit::Requests,
                    ..
                } => "rpm",
                AdmitError::RateLimited {
                    limit: Limit::Tokens,
                    ..
                } => "tpm",
                AdmitError::Busy(_) => "busy",
            },
            Refused::Route(_) => "no_replica",
        }
    }

    /// HTTP status and the OpenAI error code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Refused::Auth(_) => (StatusCode::UNAUTHORIZED, "invalid_api_key"),
            Refused::Admit(e) => match e {
                AdmitError::BodyUnreadable(_) | AdmitError::Invalid(_) => {
                    (StatusCode::BAD_REQUEST, "invalid_request_error")
                }
                AdmitError::BodyTimeout(_) => {
                    (StatusCode::REQUEST_TIMEOUT, "invalid_request_error")
                }
                AdmitError::ModelNotAllowed { .. } => (StatusCode::FORBIDDEN, "model_not_allowed"),
                AdmitError::ModelNotFound(_) => (StatusCode::NOT_FOUND, "model_not_found"),
                AdmitError::RateLimited { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded")
                }
                AdmitError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            },
            Refused::Route(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_replica_available"),
        }
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Refused::Auth(AuthError::Missing) => "missing `Authorization: Bearer <key>`".into(),
            Refused::Auth(AuthError::Unknown) => "unknown API key".into(),
            Refused::Admit(e) => match e {
                AdmitError::BodyUnreadable(why) => format!("cannot read the request body: {why}"),
                AdmitError::BodyTimeout(ms) => {
                    format!("the request body did not arrive within {ms} ms")
                }
                AdmitError::Invalid(why) => why.clone(),
                AdmitError::ModelNotAllowed { key, model } => {
                    format!("key `{key}` may not use model `{model}`")
                }
                AdmitError::ModelNotFound(model) => format!("no replica serves model `{model}`"),
                AdmitError::RateLimited { key, limit, .. } => {
                    let which = match limit {
                        Limit::Requests => "requests per minute",
                        Limit::Tokens => "tokens per minute",
                    };
                    format!("key `{key}` is over its {which} limit")
                }
                AdmitError::Busy(n) => {
                    format!("the gateway has {n} requests in flight, its bound; retry shortly")
                }
            },
            Refused::Route(e) => format!(
                "model `{}`: {} (tried {} replicas)",
                e.model, e.last_error, e.tried
            ),
        }
    }

    /// The OpenAI-shaped answer (with `Retry-After` where waiting helps).
    pub fn response(&self) -> Response<Body> {
        let (status, code) = self.status();
        let mut r = json_response(
            status,
            &serde_json::json!({"error": {"message": self.message(), "type": code, "code": code}}),
        );
        let retry = match self {
            Refused::Admit(AdmitError::RateLimited { retry_after_s, .. }) => Some(*retry_after_s),
            Refused::Admit(AdmitError::Busy(_)) => Some(1),
            _ => None,
        };
        if let Some(s) = retry {
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_names_its_layer_and_reason_and_answers_openai_shaped() {
        let cases = [
            (
                Refused::Auth(AuthError::Missing),
                "auth",
                "missing_key",
                401,
            ),
            (
                Refused::Auth(AuthError::Unknown),
                "auth",
                "unknown_key",
                401,
            ),
            (
                AdmitError::BodyTimeout(10).into(),
                "admit",
                "body_timeout",
                408,
            ),
            (
                AdmitError::Invalid("no model".into()).into(),
                "admit",
                "invalid_request",
                400,
            ),
            (
                AdmitError::ModelNotFound("m".into()).into(),
                "admit",
                "model_not_found",
                404,
            ),
            (
                AdmitError::RateLimited {
                    key: "k".into(),
                    limit: Limit::Tokens,
                    retry_after_s: 7,
                }
                .into(),
                "admit",
                "tpm",
                429,
            ),
            (AdmitError::Busy(3).into(), "admit", "busy", 503),
            (
                RouteError {
                    model: "m".into(),
                    last_error: "down".into(),
                    tried: 2,
                }
                .into(),
                "route",
                "no_replica",
                503,
            ),
        ];
        for (r, layer, reason, status) in cases {
            assert_eq!((r.layer(), r.reason()), (layer, reason));
            let resp = r.response();
            assert_eq!(resp.status().as_u16(), status, "{r:?}");
            if matches!(reason, "tpm" | "busy") {
                assert!(resp.headers().contains_key("retry-after"), "{r:?}");
            }
        }
        let r: Refused = AdmitError::RateLimited {
            key: "k".into(),
            limit: Limit::Tokens,
            retry_after_s: 7,
        }
        .into();
        assert_eq!(r.response().headers()["retry-after"], "7");
        assert!(r.message().contains("tokens per minute"));
    }
}
