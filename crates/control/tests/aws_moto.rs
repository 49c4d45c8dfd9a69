//! The `aws` driver through the real AWS SDK against a `moto_server` on 127.0.0.1 (instance
//! type and AMI validation on). `.ci/run` installs moto; the test starts and stops its server.
#![cfg(feature = "aws")]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stratus_control::aws::{AwsConfig, AwsDriver};
use stratus_control::{
    ActionKind, Controller, ControllerConfig, Driver, InstanceState, LaunchRequest, Strategy, Time,
};
use stratus_plan::Category;

struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
        .env("MOTO_ENABLE_AMI_VALIDATION", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]'; .ci/run installs it)");
    let m = Moto(child, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    m
}

fn driver(m: &Moto) -> AwsDriver {
    AwsDriver::new(AwsConfig::new(
        Some(format!("http://127.0.0.1:{}", m.1)),
        "testing".into(),
        "testing".into(),
        "ami-760aaa0f".into(),
        vec!["us-east-1".into(), "us-west-2".into()],
    ))
}

fn req(token: &str, pool: &str, nodes: u32, category: Category) -> LaunchRequest {
    let region = pool.rsplit_once(':').unwrap().0.to_string();
    LaunchRequest {
        token: token.into(),
        unit: "u".into(),
        workload: "w".into(),
        pool: pool.into(),
        region,
        category,
        nodes,
        committed_nodes: 0,
        replicas: 1,
    }
}

#[test]
fn ec2_launches_are_idempotent_on_the_client_token() {
    let m = moto();
    let mut d = driver(&m);
    let now = Time(0.0);
    // Offered types have capacity, unknown ones none.
    assert!(
        d.capacity(now, "aws:us-east-1:p5.48xlarge")
            .unwrap()
            .on_demand
            > 0
    );
    assert!(
        d.capacity(now, "aws:us-east-1:trn1.32xlarge")
            .unwrap()
            .on_demand
            > 0
    );
    assert_eq!(
        d.capacity(now, "aws:us-east-1:p9.fake").unwrap().on_demand,
        0
    );

    d.launch(
        now,
        &req("job~1", "aws:us-east-1:p5.48xlarge", 2, Category::OnDemand),
    )
    .unwrap();
    // The same action replayed: EC2 returns the first reservation, no new instances.
    d.launch(
        now,
        &req("job~1", "aws:us-east-1:p5.48xlarge", 2, Category::OnDemand),
    )
    .unwrap();
    d.launch(
        now,
        &req("spot~2", "aws:us-west-2:inf2.48xlarge", 1, Category::Spot),
    )
    .unwrap();
    let seen = d.observe(now).instances;
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let job = seen.iter().find(|i| i.request.token == "job~1").unwrap();
    assert_eq!(job.request.nodes, 2);
    assert_eq!(job.request.pool, "aws:us-east-1:p5.48xlarge");
    assert!(matches!(
        job.state,
        InstanceState::Running | InstanceState::Pending { .. }
    ));
    let spot = seen.iter().find(|i| i.request.token == "spot~2").unwrap();
    assert_eq!(spot.request.category, Category::Spot);

    // Validation is on: an unknown instance type is refused.
    let e = d
        .launch(
            now,
            &req("bad~3", "aws:us-east-1:p9.fake", 1, Category::OnDemand),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("p9.fake") || e.to_string().contains("Invalid"),
        "{e}"
    );

    d.stop(now, "job~1").unwrap();
    let left: Vec<String> = d
        .observe(now)
        .instances
        .into_iter()
        .map(|i| i.request.token)
        .collect();
    assert_eq!(left, vec!["spot~2".to_string()]);
    // Terminated behind our back (a spot reclaim): reported lost.
    let mut other = driver(&m);
    other.stop(now, "spot~2").unwrap();
    let seen = d.observe(now).instances;
    assert!(matches!(seen[0].state, InstanceState::Lost(_)), "{seen:#?}");
}

#[test]
fn the_controller_runs_work_on_ec2_and_a_restarted_one_launches_nothing_twice() {
    let m = moto();
    let mut fleet = stratus_catalog::builtin().clone();
    fleet.providers.retain(|p| p.name == "aws");
    let w: stratus_model::WorkloadSet = stratus_model::parse::from_str(
        "w.yaml",
        r#"
training:
  - name: ft
    chips: 16
    accelerators: [H100]
    images: {cuda: "img"}
    work_chip_hours: 1600
  - name: neuron-ft
    chips: 32
    accelerators: [Trainium1]
    images: {neuron: "img"}
    work_chip_hours: 3200
"#,
        stratus_model::parse::Format::Yaml,
    )
    .unwrap();
    let mut d = driver(&m);
    let mut c = Controller::new(
        fleet.clone(),
        Strategy::Stratus,
        ControllerConfig::default(),
    );
    let acts = c.tick(Time(0.0), &w, &mut d);
    let launched: Vec<_> = acts
        .iter()
        .filter(|a| a.kind == ActionKind::Launch)
        .collect();
    assert_eq!(launched.len(), 2, "{acts:#?}");
    let live = d.observe(Time(10.0)).instances;
    assert_eq!(live.len(), 2, "{live:#?}");

    // A new controller (a restarted server) adopts what EC2 runs and launches nothing.
    let mut c2 = Controller::new(fleet, Strategy::Stratus, ControllerConfig::default());
    c2.adopt(d.observe(Time(20.0)).instances);
    let acts = c2.tick(Time(30.0), &w, &mut d);
    assert!(
        acts.iter().all(|a| a.kind != ActionKind::Launch),
        "{acts:#?}"
    );
    assert_eq!(d.observe(Time(40.0)).instances.len(), 2);

    // A finished workload's instances are terminated.
    let mut w2 = w.clone();
    w2.training.retain(|t| t.name != "ft");
    let acts = c2.tick(Time(50.0), &w2, &mut d);
    assert!(
        acts.iter()
            .any(|a| a.kind == ActionKind::Stop && a.unit == "ft"),
        "{acts:#?}"
    );
    let left = d.observe(Time(60.0)).instances;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0].request.workload, "neuron-ft");
}

/// A proxy in front of moto that, once armed, forwards the next `RunInstances` and never
/// answers it: EC2 ran the call, the caller saw a timeout.
struct StallingProxy {
    port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    buf.extend(body);
    Some(buf)
}

fn stalling_proxy(upstream: u16) -> StallingProxy {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = armed.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut client = conn;
                while let Some(req) = read_message(&mut client) {
                    let stall = String::from_utf8_lossy(&req).contains("Action=RunInstances")
                        && a.swap(false, std::sync::atomic::Ordering::SeqCst);
                    let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                    up.write_all(&req).unwrap();
                    let Some(resp) = read_message(&mut up) else {
                        return;
                    };
                    if stall {
                        // Never answer; wait for the caller to give up.
                        let mut sink = [0u8; 1024];
                        while client.read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
                        return;
                    }
                    if client.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    StallingProxy { port, armed }
}

/// EC2 instances moto runs (pending or running), across the test's regions.
fn ec2_instances(m: &Moto) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut n = 0;
    for region in ["us-east-1", "us-west-2"] {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new(region))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(format!("http://127.0.0.1:{}", m.1))
            .build();
        let out = rt
            .block_on(
                aws_sdk_ec2::Client::from_conf(conf)
                    .describe_instances()
                    .send(),
            )
            .unwrap();
        n += out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| {
                matches!(
                    i.state().and_then(|s| s.name()),
                    Some(aws_sdk_ec2::types::InstanceStateName::Pending)
                        | Some(aws_sdk_ec2::types::InstanceStateName::Running)
                )
            })
            .count();
    }
    n
}

/// Issue 15: a launch that timed out after `RunInstances` was retried with a new token, so EC2
/// started a second set of instances. Now exactly one runs.
#[test]
fn an_ec2_timeout_after_run_instances_leaves_exactly_one_instance() {
    let m = moto();
    let proxy = stalling_proxy(m.1);
    let mut cfg = AwsConfig::new(
        Some(format!("http://127.0.0.1:{}", proxy.port)),
        "testing".into(),
        "testing".into(),
        "ami-760aaa0f".into(),
        vec!["us-east-1".into(), "us-west-2".into()],
    );
    cfg.timeout_s = 8.0;
    cfg.max_attempts = 1;
    let mut d = AwsDriver::new(cfg);
    let mut fleet = stratus_catalog::builtin().clone();
    fleet.providers.retain(|p| p.name == "aws");
    let w: stratus_model::WorkloadSet = stratus_model::parse::from_str(
        "w.yaml",
        "training:\n  - {name: ft, chips: 16, accelerators: [H100], images: {cuda: img}, work_chip_hours: 1600}\n",
        stratus_model::parse::Format::Yaml,
    )
    .unwrap();
    let mut c = Controller::new(
        fleet,
        Strategy::Stratus,
        ControllerConfig {
            retry_s: 60.0,
            ..ControllerConfig::default()
        },
    );
    // First, with nothing to run, until every region has been read once (a slow moto may
    // time an observation out).
    let mut t = 0.0;
    while !c.adoption_pending().is_empty() {
        assert!(t < 600.0, "EC2 could not be read");
        c.tick(Time(t), &stratus_model::WorkloadSet::default(), &mut d);
        t += 1.0;
    }
    proxy.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let acts = c.tick(Time(t), &w, &mut d);
    let failed: Vec<_> = acts
        .iter()
        .filter(|a| a.kind == ActionKind::LaunchFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{acts:#?}");
    assert!(failed[0].reason.contains("same token"), "{acts:#?}");
    let token = failed[0].token.clone();
    // EC2 ran it (moto may still be at it when the caller gives up).
    let mut direct = driver(&m);
    let deadline = Instant::now() + Duration::from_secs(60);
    while direct.observe(Time(1.0)).instances.is_empty() {
        assert!(
            Instant::now() < deadline,
            "RunInstances never took effect: {acts:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Later reconciles find it (or send it again with its token): one set of instances.
    for k in 1..=3 {
        c.tick(Time(t + 60.0 * k as f64), &w, &mut d);
    }
    let seen = direct.observe(Time(200.0)).instances;
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].request.token, token);
    assert_eq!(seen[0].request.nodes, 2);
    assert_eq!(ec2_instances(&m), 2, "EC2 runs the two nodes once");
    assert!(c
        .owned()
        .all(|o| o.request.token == token && o.phase == stratus_control::Phase::Live));
}
