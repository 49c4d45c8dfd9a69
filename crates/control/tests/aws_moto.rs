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
