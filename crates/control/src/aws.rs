//! `aws`: EC2 through the real AWS SDK for Rust. A launch is `RunInstances` with the
//! controller's token as `ClientToken` (EC2's own idempotency: the same token never starts a
//! second set of instances) and as a tag, so `DescribeInstances` gives back what the
//! controller launched, even after it restarted. EC2 has no capacity API: capacity shows as
//! `InsufficientInstanceCapacity` on launch, which the controller turns into a re-plan;
//! `DescribeInstanceTypeOfferings` says whether a type is offered in a region at all.

use crate::driver::{
    Driver, DriverError, Instance, InstanceState, LaunchRequest, LossCause, Observation,
    PoolCapacity, Time, Unobserved,
};
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{
    Filter, InstanceMarketOptionsRequest, InstanceStateName, LocationType, MarketType,
    ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use std::collections::{BTreeMap, HashMap, HashSet};
use stratus_plan::Category;

/// Port an inference instance's server listens on (the images' convention, as vLLM's
/// default): the endpoint the control plane advertises is the private IP and this port.
pub const SERVICE_PORT: u16 = 8000;

/// Where and as whom to call EC2.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Endpoint override (a `moto_server` on 127.0.0.1 in tests); `None`: AWS itself.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// AMI launched on every instance.
    pub image_id: String,
    /// Regions scanned by `observe` (those the fleet has AWS pools in).
    pub regions: Vec<String>,
    /// Seconds one EC2 call may take before it counts as unanswered (the launch is then
    /// sent again with the same client token).
    pub timeout_s: f64,
    /// Attempts the SDK makes per call before the driver sees the error.
    pub max_attempts: u32,
}

impl AwsConfig {
    /// EC2 itself (or `endpoint`), with the SDK's default retries and a 30 s timeout per call.
    pub fn new(
        endpoint: Option<String>,
        access_key: String,
        secret_key: String,
        image_id: String,
        regions: Vec<String>,
    ) -> AwsConfig {
        AwsConfig {
            endpoint,
            access_key,
            secret_key,
            image_id,
            regions,
            timeout_s: 30.0,
            max_attempts: 3,
        }
    }
}

/// EC2 as a provider.
pub struct AwsDriver {
    cfg: AwsConfig,
    clients: HashMap<String, Client>,
    rt: Option<tokio::runtime::Runtime>,
    stopped: HashSet<String>,
}

const TAG_TOKEN: &str = "stratus:token";

/// The `ClientToken` for a controller token: EC2 takes at most 64 ASCII characters.
pub fn client_token(token: &str) -> String {
    if token.len() <= 64 && token.is_ascii() {
        return token.to_string();
    }
    // FNV-1a, twice with different seeds: stable and well spread.
    let h = |seed: u64| {
        token
            .bytes()
            .fold(seed, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
    };
    format!(
        "stx-{:016x}{:016x}",
        h(0xcbf2_9ce4_8422_2325),
        h(0x8422_2325_cbf2_9ce4)
    )
}

fn region_of(req_region: &str) -> &str {
    req_region
        .split_once(':')
        .map(|(_, r)| r)
        .unwrap_or(req_region)
}

fn instance_type(pool: &str) -> &str {
    pool.rsplit(':').next().unwrap_or(pool)
}

impl AwsDriver {
    /// A driver for `cfg`.
    pub fn new(cfg: AwsConfig) -> AwsDriver {
        let rt = if tokio::runtime::Handle::try_current().is_ok() {
            None
        } else {
            Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the AWS SDK"),
            )
        };
        AwsDriver {
            cfg,
            clients: HashMap::new(),
            rt,
            stopped: HashSet::new(),
        }
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            // On a blocking thread of the caller's runtime (`stratus serve`).
            None => tokio::runtime::Handle::current().block_on(f),
        }
    }

    fn client(&mut self, region: &str) -> Client {
        if let Some(c) = self.clients.get(region) {
            return c.clone();
        }
        let mut b = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .timeout_config(
                aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(std::time::Duration::from_secs_f64(
                        self.cfg.timeout_s.max(0.1),
                    ))
                    .build(),
            )
            .retry_config(
                aws_sdk_ec2::config::retry::RetryConfig::standard()
                    .with_max_attempts(self.cfg.max_attempts.max(1)),
            )
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new(
                self.cfg.access_key.clone(),
                self.cfg.secret_key.clone(),
                None,
                None,
                "stratus",
            ));
        if let Some(e) = &self.cfg.endpoint {
            b = b.endpoint_url(e.clone());
        }
        let c = Client::from_conf(b.build());
        self.clients.insert(region.to_string(), c.clone());
        c
    }

    /// Instances carrying our tag in `region`, grouped by controller token.
    fn tagged(
        &mut self,
        region: &str,
    ) -> Result<BTreeMap<String, Vec<aws_sdk_ec2::types::Instance>>, String> {
        let c = self.client(region);
        let out = self
            .block(
                c.describe_instances()
                    .filters(Filter::builder().name("tag-key").values(TAG_TOKEN).build())
                    .send(),
            )
            .map_err(|e| format!("{}", aws_sdk_ec2::error::DisplayErrorContext(e)))?;
        let mut by: BTreeMap<String, Vec<aws_sdk_ec2::types::Instance>> = BTreeMap::new();
        for r in out.reservations() {
            for i in r.instances() {
                if let Some(t) = i.tags().iter().find(|t| t.key() == Some(TAG_TOKEN)) {
                    by.entry(t.value().unwrap_or("").to_string())
                        .or_default()
                        .push(i.clone());
                }
            }
        }
        Ok(by)
    }
}

fn tag(i: &aws_sdk_ec2::types::Instance, k: &str) -> String {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(k))
        .and_then(|t| t.value())
        .unwrap_or("")
        .to_string()
}

impl Driver for AwsDriver {
    fn launch(&mut self, _now: Time, req: &LaunchRequest) -> Result<(), DriverError> {
        let region = region_of(&req.region).to_string();
        let c = self.client(&region);
        let tags = [
            (TAG_TOKEN, req.token.clone()),
            ("stratus:unit", req.unit.clone()),
            ("stratus:workload", req.workload.clone()),
            ("stratus:pool", req.pool.clone()),
            ("stratus:region", req.region.clone()),
            ("stratus:category", format!("{:?}", req.category)),
            ("stratus:nodes", req.nodes.to_string()),
            ("stratus:committed", req.committed_nodes.to_string()),
            ("stratus:replicas", req.replicas.to_string()),
        ];
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(k).value(v).build());
        }
        let mut call = c
            .run_instances()
            .image_id(&self.cfg.image_id)
            .instance_type(instance_type(&req.pool).into())
            .min_count(req.nodes as i32)
            .max_count(req.nodes as i32)
            .client_token(client_token(&req.token))
            .tag_specifications(spec.build());
        if req.category == Category::Spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .build(),
            );
        }
        match self.block(call.send()) {
            Ok(_) => Ok(()),
            Err(e) => {
                use aws_sdk_ec2::error::SdkError;
                let code = e.as_service_error().and_then(|s| {
                    use aws_sdk_ec2::error::ProvideErrorMetadata;
                    s.code().map(String::from)
                });
                let text = format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e));
                match (&e, code.as_deref()) {
                    (_, Some("InsufficientInstanceCapacity") | Some("InstanceLimitExceeded")) => {
                        Err(DriverError::Capacity {
                            pool: req.pool.clone(),
                            asked: req.nodes,
                            free: PoolCapacity::default(),
                        })
                    }
                    // EC2 answered with an error of the request itself: nothing started.
                    (SdkError::ServiceError(_), Some(c))
                        if c.starts_with("Invalid")
                            || c.starts_with("Unsupported")
                            || c.starts_with("MissingParameter") =>
                    {
                        Err(DriverError::Refused {
                            region: req.region.clone(),
                            reason: text,
                        })
                    }
                    // The request was never built or sent.
                    (SdkError::ConstructionFailure(_), _) => Err(DriverError::Refused {
                        region: req.region.clone(),
                        reason: text,
                    }),
                    // A timeout, a dropped connection, a 5xx: RunInstances may have run; the
                    // controller sends it again with the same client token.
                    _ => Err(DriverError::Unreachable {
                        region: req.region.clone(),
                        reason: text,
                    }),
                }
            }
        }
    }

    fn stop(&mut self, _now: Time, token: &str) -> Result<(), DriverError> {
        let regions = self.cfg.regions.clone();
        for region in regions {
            let by = self.tagged(&region).map_err(|e| DriverError::Unreachable {
                region: format!("aws:{region}"),
                reason: e,
            })?;
            if let Some(list) = by.get(token) {
                let ids: Vec<String> = list
                    .iter()
                    .filter_map(|i| i.instance_id().map(String::from))
                    .collect();
                let c = self.client(&region);
                self.block(c.terminate_instances().set_instance_ids(Some(ids)).send())
                    .map_err(|e| DriverError::Unreachable {
                        region: format!("aws:{region}"),
                        reason: format!("{}", aws_sdk_ec2::error::DisplayErrorContext(e)),
                    })?;
                self.stopped.insert(token.to_string());
                return Ok(());
            }
        }
        Err(DriverError::UnknownToken(token.to_string()))
    }

    fn observe(&mut self, now: Time) -> Observation {
        let mut out = Vec::new();
        let mut unobserved = Vec::new();
        let regions = self.cfg.regions.clone();
        for region in regions {
            // A region whose API does not answer is unknown, not empty.
            let by = match self.tagged(&region) {
                Ok(by) => by,
                Err(e) => {
                    let scope = format!("aws:{region}");
                    unobserved.push(Unobserved {
                        error: DriverError::Unreachable {
                            region: scope.clone(),
                            reason: e,
                        },
                        scope,
                    });
                    continue;
                }
            };
            for (token, list) in by {
                let first = &list[0];
                let states: Vec<InstanceStateName> = list
                    .iter()
                    .filter_map(|i| i.state().and_then(|s| s.name()).cloned())
                    .collect();
                let category = match tag(first, "stratus:category").as_str() {
                    "Spot" => Category::Spot,
                    "Committed" => Category::Committed,
                    "CommittedPlusOnDemand" => Category::CommittedPlusOnDemand,
                    _ => Category::OnDemand,
                };
                let gone = states.iter().all(|s| {
                    matches!(
                        s,
                        InstanceStateName::Terminated | InstanceStateName::ShuttingDown
                    )
                });
                let state = if gone {
                    if self.stopped.contains(&token) {
                        if states.iter().all(|s| *s == InstanceStateName::Terminated) {
                            continue;
                        }
                        InstanceState::Stopping {
                            done_at: now.plus(60.0),
                        }
                    } else if category == Category::Spot {
                        InstanceState::Lost(LossCause::Preempted)
                    } else {
                        InstanceState::Lost(LossCause::Outage)
                    }
                } else if states.iter().all(|s| *s == InstanceStateName::Running) {
                    InstanceState::Running
                } else {
                    InstanceState::Pending {
                        ready_at: now.plus(60.0),
                    }
                };
                let num = |k: &str| tag(first, k).parse::<u32>().unwrap_or(0);
                let launched = first
                    .launch_time()
                    .map(|t| Time(t.secs() as f64))
                    .unwrap_or(now);
                // An inference instance serves on its private address, at the service port.
                let unit = tag(first, "stratus:unit");
                let endpoint = crate::unit::UnitKey::parse(&unit)
                    .is_ok_and(|u| u.is_replicas())
                    .then(|| first.private_ip_address())
                    .flatten()
                    .map(|ip| format!("http://{ip}:{SERVICE_PORT}"));
                out.push(Instance {
                    request: LaunchRequest {
                        token: token.clone(),
                        unit,
                        workload: tag(first, "stratus:workload"),
                        pool: tag(first, "stratus:pool"),
                        region: tag(first, "stratus:region"),
                        category,
                        nodes: num("stratus:nodes"),
                        committed_nodes: num("stratus:committed"),
                        replicas: num("stratus:replicas"),
                    },
                    state,
                    launched_at: launched,
                    since: launched,
                    endpoints: endpoint.into_iter().collect(),
                });
            }
        }
        Observation {
            instances: out,
            unobserved,
        }
    }

    fn capacity(&mut self, _now: Time, pool: &str) -> Result<PoolCapacity, DriverError> {
        let mut parts = pool.splitn(3, ':');
        let (_, region, ty) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let c = self.client(region);
        let out = self
            .block(
                c.describe_instance_type_offerings()
                    .location_type(LocationType::Region)
                    .filters(Filter::builder().name("instance-type").values(ty).build())
                    .send(),
            )
            .map_err(|e| DriverError::Unreachable {
                region: format!("aws:{region}"),
                reason: format!("{}", aws_sdk_ec2::error::DisplayErrorContext(e)),
            })?;
        if out.instance_type_offerings().is_empty() {
            return Ok(PoolCapacity::default());
        }
        // Offered: EC2 says no more until a launch is refused.
        Ok(PoolCapacity {
            committed: u32::MAX / 4,
            on_demand: u32::MAX / 4,
            spot: u32::MAX / 4,
        })
    }
}
