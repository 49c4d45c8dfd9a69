//! The gateway's configuration file (YAML, TOML or JSON, by extension), validated as a whole
//! before the gateway starts: a bad file never half-applies.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use stratus_model::parse::{from_str, read_file, Format, InputError};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Routing policy (see [`crate::route::Policy`]); `balanced` unless set.
    #[serde(default)]
    pub policy: crate::route::Policy,
    /// Header that carries the user's location as a region id (`provider:region`).
    #[serde(default = "default_header")]
    pub user_region_header: String,
    /// Client address ranges mapped to a location, used when the header is absent.
    #[serde(default)]
    pub client_networks: Vec<ClientNetwork>,
    /// Location assumed when neither the header nor an address range says.
    #[serde(default)]
    pub default_location: Option<String>,
    /// Replicas within this many milliseconds of the nearest count as equally near.
    #[serde(default = "default_near_slack")]
    pub near_slack_ms: f64,
    /// Prefix affinity: bytes of the prompt that form its key.
    #[serde(default = "default_prefix_bytes")]
    pub prefix_bytes: usize,
    /// Bounded-load factor for prefix affinity: a replica takes a prefix's request only while
    /// its in-flight count is below this factor times the mean (plus one).
    #[serde(default = "default_load_factor")]
    pub load_factor: f64,
    /// Extra replicas tried when one fails before the first byte.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Milliseconds to wait for a replica's response head and first body bytes.
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout_ms: u64,
    /// Active health checking.
    #[serde(default)]
    pub health: HealthConfig,
    /// Passive outlier ejection.
    #[serde(default)]
    pub ejection: EjectionConfig,
    /// API keys; with none, the gateway is open (and accounts usage to `anonymous`).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// JSON-lines file that receives one usage record per completed request.
    #[serde(default)]
    pub usage_log: Option<String>,
    /// Client connections open at once; more are answered 503 and closed (HTTP/1 serves one
    /// request at a time per connection, so this also bounds requests in flight).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests admitted and not yet answered in full, at most; more are answered 503 with
    /// `Retry-After` before their body is read (default: `max_connections`).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Milliseconds a client has to send a request's head, and again its body.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: u64,
    /// The replicas (may be empty when a control plane gives them).
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// A stratus control plane whose inference endpoints the gateway follows: its serving
    /// replicas are routed to as they come and go, in addition to `replicas`.
    #[serde(default)]
    pub control_plane: Option<ControlPlaneConfig>,
}

/// Where the replica list comes from when it follows a control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// The control plane's base URL, `http://host:port`.
    pub url: String,
    /// A file holding a viewer token of the control plane.
    pub token_file: String,
    /// Seconds one watch request waits for a change before it is sent again.
    #[serde(default = "default_watch_s")]
    pub watch_s: u64,
}

fn default_watch_s() -> u64 {
    20
}

/// A client address range and the location its users are at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientNetwork {
    /// CIDR, e.g. `10.1.0.0/16`.
    pub cidr: String,
    /// Region id (`provider:region`).
    pub location: String,
}

/// Active health checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path probed on each replica.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Milliseconds between probes.
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
    /// Milliseconds a probe may take.
    #[serde(default = "default_health_timeout")]
    pub timeout_ms: u64,
    /// Failed probes in a row that mark a replica down.
    #[serde(default = "default_two")]
    pub unhealthy_after: u32,
    /// Good probes in a row that bring it back.
    #[serde(default = "default_two")]
    pub healthy_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: default_health_path(),
            interval_ms: default_health_interval(),
            timeout_ms: default_health_timeout(),
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

/// Passive outlier ejection (as Envoy's): failures seen on live traffic eject a replica for a
/// time that doubles with each ejection in a row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectionConfig {
    /// Consecutive failed requests that eject a replica.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// First ejection, milliseconds.
    #[serde(default = "default_base_ejection")]
    pub base_ms: u64,
    /// Longest ejection, milliseconds.
    #[serde(default = "default_max_ejection")]
    pub max_ms: u64,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: default_consecutive(),
            base_ms: default_base_ejection(),
            max_ms: default_max_ejection(),
        }
    }
}

/// An API key and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Name usage is accounted under (never the key itself).
    pub name: String,
    /// The key in clear (convenient for tests and local use).
    #[serde(default)]
    pub key: Option<String>,
    /// Hex SHA-256 of the key (what a production file should hold).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Requests per minute; unlimited when absent.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute; unlimited when absent.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Models the key may use; all when empty.
    #[serde(default)]
    pub models: Vec<String>,
}

/// One replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// Unique name.
    pub id: String,
    /// Base URL, `http://host:port`.
    pub url: String,
    /// Region id (`provider:region`) it runs in.
    pub region: String,
    /// Models it serves.
    pub models: Vec<String>,
    /// Its cost in $/h: the tie-breaker between otherwise equal replicas.
    #[serde(default)]
    pub cost_per_hour: f64,
    /// Whether to scrape its `/metrics` for queue depth.
    #[serde(default)]
    pub metrics: bool,
    /// Taking no new requests (requests in flight finish); the control plane sets it on a
    /// replica it is retiring.
    #[serde(default)]
    pub draining: bool,
}

fn default_max_connections() -> usize {
    crate::listen::ConnLimits::default().max_connections
}
fn default_header_timeout() -> u64 {
    crate::listen::ConnLimits::default()
        .header_timeout
        .as_millis() as u64
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_header() -> String {
    "x-user-region".into()
}
fn default_near_slack() -> f64 {
    20.0
}
fn default_prefix_bytes() -> usize {
    256
}
fn default_load_factor() -> f64 {
    1.25
}
fn default_retries() -> u32 {
    2
}
fn default_first_byte_timeout() -> u64 {
    60_000
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_health_interval() -> u64 {
    1000
}
fn default_health_timeout() -> u64 {
    500
}
fn default_two() -> u32 {
    2
}
fn default_consecutive() -> u32 {
    3
}
fn default_base_ejection() -> u64 {
    2000
}
fn default_max_ejection() -> u64 {
    60_000
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n` or `x::y/n` (a bare address is a /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, b) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = if b.is_empty() {
            max
        } else {
            b.trim().parse().ok()?
        };
        (bits <= max).then_some(Cidr { addr, bits })
    }
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, InputError> {
        let (c, text): (Config, String) = read_file(path)?;
        c.validate(&path.display().to_string(), &text)?;
        Ok(c)
    }

    /// Read and validate a file, or (with no file) the defaults, with `control_plane` (from
    /// the command line) in place of the file's: a gateway that follows a control plane
    /// needs no file at all.
    pub fn load_with(
        path: Option<&Path>,
        control_plane: Option<ControlPlaneConfig>,
    ) -> Result<Config, InputError> {
        let (mut c, text, file): (Config, String, String) = match path {
            Some(p) => {
                let (c, t) = read_file(p)?;
                (c, t, p.display().to_string())
            }
            None => {
                let c = from_str("(command line)", "{}", Format::Yaml)?;
                (c, String::new(), "(command line)".into())
            }
        };
        if control_plane.is_some() {
            c.control_plane = control_plane;
        }
        c.validate(&file, &text)?;
        Ok(c)
    }

    /// Parse and validate text (named `file` in errors).
    pub fn parse(file: &str, text: &str, format: Format) -> Result<Config, InputError> {
        let c: Config = from_str(file, text, format)?;
        c.validate(file, text)?;
        Ok(c)
    }

    /// Checks serde cannot express; errors name the field and, where found, its line.
    fn validate(&self, file: &str, text: &str) -> Result<(), InputError> {
        let err = |field: String, needle: &str, reason: String| {
            let line = text
                .lines()
                .position(|l| !needle.is_empty() && l.contains(needle))
                .map(|i| i + 1);
            Err(InputError {
                file: file.into(),
                line,
                field: Some(field),
                reason,
            })
        };
        if self.replicas.is_empty() && self.control_plane.is_none() {
            return err(
                "replicas".into(),
                "replicas",
                "at least one replica is needed (or a control_plane to follow)".into(),
            );
        }
        if let Some(cp) = &self.control_plane {
            if parse_base_url(&cp.url).is_none() {
                return err(
                    "control_plane.url".into(),
                    &cp.url,
                    format!("`{}` is not an http://host:port URL", cp.url),
                );
            }
            if cp.watch_s == 0 || cp.watch_s > 50 {
                return err(
                    "control_plane.watch_s".into(),
                    "watch_s",
                    "must be between 1 and 50 seconds (the control plane ends a request at 60 s)"
                        .into(),
                );
            }
        }
        if self.max_in_flight == Some(0) {
            return err(
                "max_in_flight".into(),
                "max_in_flight",
                "must be at least 1".into(),
            );
        }
        if self.max_connections == 0 {
            return err(
                "max_connections".into(),
                "max_connections",
                "must be at least 1".into(),
            );
        }
        if self.header_timeout_ms == 0 {
            return err(
                "header_timeout_ms".into(),
                "header_timeout_ms",
                "must be at least 1".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if !seen.insert(r.id.as_str()) {
                return err(
                    format!("replicas[{i}].id"),
                    &r.id,
                    format!("duplicate replica id `{}`", r.id),
                );
            }
            if parse_base_url(&r.url).is_none() {
                return err(
                    format!("replicas[{i}].url"),
                    &r.url,
                    format!("`{}` is not an http://host:port URL", r.url),
                );
            }
            if !r.region.contains(':') {
                return err(
                    format!("replicas[{i}].region"),
                    &r.region,
                    format!("`{}` is not a region id (provider:region)", r.region),
                );
            }
            if r.models.is_empty() {
                return err(
                    format!("replicas[{i}].models"),
                    &r.id,
                    "a replica must serve at least one model".into(),
                );
            }
            if !(r.cost_per_hour.is_finite() && r.cost_per_hour >= 0.0) {
                return err(
                    format!("replicas[{i}].cost_per_hour"),
                    "cost_per_hour",
                    "must be a non-negative number".into(),
                );
            }
        }
        for (i, n) in self.client_networks.iter().enumerate() {
            if Cidr::parse(&n.cidr).is_none() {
                return err(
                    format!("client_networks[{i}].cidr"),
                    &n.cidr,
                    format!("`{}` is not a CIDR such as 10.0.0.0/8", n.cidr),
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if !names.insert(k.name.as_str()) {
                return err(
                    format!("keys[{i}].name"),
                    &k.name,
                    format!("duplicate key name `{}`", k.name),
                );
            }
            match (&k.key, &k.key_sha256) {
                (None, None) | (Some(_), Some(_)) => {
                    return err(
                        format!("keys[{i}]"),
                        &k.name,
                        "give exactly one of `key` and `key_sha256`".into(),
                    )
                }
                (_, Some(h)) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    return err(
                        format!("keys[{i}].key_sha256"),
                        h,
                        "must be 64 hex digits".into(),
                    )
                }
                _ => {}
            }
            if k.rpm == Some(0) || k.tpm == Some(0) {
                return err(
                    format!("keys[{i}]"),
                    &k.name,
                    "a limit of 0 would refuse every request; leave it out for no limit".into(),
                );
            }
        }
        if !(self.load_factor >= 1.0 && self.load_factor.is_finite()) {
            return err(
                "load_factor".into(),
                "load_factor",
                "must be at least 1.0".into(),
            );
        }
        if self.prefix_bytes == 0 {
            return err(
                "prefix_bytes".into(),
                "prefix_bytes",
                "must be positive".into(),
            );
        }
        if self.health.interval_ms == 0 || self.health.unhealthy_after == 0 {
            return err(
                "health".into(),
                "health",
                "interval_ms and unhealthy_after must be positive".into(),
            );
        }
        Ok(())
    }
}

/// `http://host:port[/]` → (`host:port`, the URL without a trailing slash).
pub fn parse_base_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some((rest.to_string(), format!("http://{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "listen: 127.0.0.1:0\nreplicas:\n  - id: a\n    url: http://127.0.0.1:9001\n    region: aws:us-east-1\n    models: [m]\n";

    #[test]
    fn a_minimal_file_parses_with_defaults() {
        let c = Config::parse("g.yaml", GOOD, Format::Yaml).unwrap();
        assert_eq!(c.replicas.len(), 1);
        assert_eq!(c.retries, 2);
        assert_eq!(c.user_region_header, "x-user-region");
        assert_eq!(c.policy, crate::route::Policy::Balanced);
    }

    #[test]
    fn bad_values_name_file_field_and_line() {
        let bad = GOOD.replace("http://127.0.0.1:9001", "ftp://x");
        let e = Config::parse("g.yaml", &bad, Format::Yaml).unwrap_err();
        assert_eq!(e.file, "g.yaml");
        assert_eq!(e.field.as_deref(), Some("replicas[0].url"));
        assert_eq!(e.line, Some(4));
        let unknown = format!("{GOOD}colour: blue\n");
        let e = Config::parse("g.yaml", &unknown, Format::Yaml).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let dup = format!(
            "{GOOD}  - id: a\n    url: http://127.0.0.1:9002\n    region: gcp:x\n    models: [m]\n"
        );
        let e = Config::parse("g.yaml", &dup, Format::Yaml).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("replicas[1].id"));
        let key = format!("{GOOD}keys:\n  - name: k\n    rpm: 0\n    key: s\n");
        let e = Config::parse("g.yaml", &key, Format::Yaml).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("keys[0]"));
        assert!(e.reason.contains("limit of 0"));
    }

    #[test]
    fn a_gateway_following_a_control_plane_needs_no_replicas_but_a_valid_url() {
        let e = Config::parse("g.yaml", "listen: 127.0.0.1:0\n", Format::Yaml).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("replicas"));
        assert!(e.reason.contains("control_plane"), "{e}");
        let cp =
            "listen: 127.0.0.1:0\ncontrol_plane:\n  url: http://127.0.0.1:8470\n  token_file: t\n";
        let c = Config::parse("g.yaml", cp, Format::Yaml).unwrap();
        assert!(c.replicas.is_empty());
        assert_eq!(c.control_plane.unwrap().watch_s, 20);
        let bad = cp.replace("http://127.0.0.1:8470", "127.0.0.1:8470");
        let e = Config::parse("g.yaml", &bad, Format::Yaml).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("control_plane.url"));
        assert_eq!(e.line, Some(3));
        let slow = format!("{cp}  watch_s: 90\n");
        let e = Config::parse("g.yaml", &slow, Format::Yaml).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("control_plane.watch_s"));
        // From the command line alone.
        let c = Config::load_with(
            None,
            Some(ControlPlaneConfig {
                url: "http://127.0.0.1:1".into(),
                token_file: "t".into(),
                watch_s: 20,
            }),
        )
        .unwrap();
        assert!(c.control_plane.is_some());
        assert!(Config::load_with(None, None).is_err());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gateway.yaml");
        let c = Config::load(&p).unwrap();
        assert_eq!(c.replicas.len(), 3);
        assert_eq!(c.keys.len(), 2);
        assert_eq!(
            c.keys[1].key_sha256.as_deref(),
            Some(crate::proxy::sha256_hex("sk-product-local").as_str())
        );
    }

    #[test]
    fn cidrs_match_v4_v6_and_mapped_addresses() {
        let n = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
