//! Tests against the real shared data (they fail, naming the missing file and `STRATUS_DATA`,
//! when the data is not there).

use super::*;
use std::sync::OnceLock;
use stratus_model::fleet::{estimate_rtt, great_circle_km};
use stratus_model::{Accelerator, Pool};

/// The data directory, or a panic naming the missing file and `STRATUS_DATA`.
fn data_dir() -> PathBuf {
    let d = default_data_dir();
    let probe = d.join(aws::AWS_FILE);
    assert!(
        probe.exists(),
        "shared data not found: {} is missing; set STRATUS_DATA to the shared data directory",
        probe.display()
    );
    d
}

/// One build per test process (the build reads ~6 MB of CSV).
fn built() -> &'static (Fleet, BuildReport) {
    static B: OnceLock<(Fleet, BuildReport)> = OnceLock::new();
    B.get_or_init(|| build(&data_dir()).unwrap_or_else(|e| panic!("{e}")))
}

fn fleet() -> &'static Fleet {
    &built().0
}

fn pool(id: &str) -> &'static Pool {
    fleet()
        .pools()
        .map(|(_, _, p)| p)
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("no pool {id}"))
}

fn region(provider: &str, name: &str) -> &'static Region {
    fleet()
        .regions()
        .find(|(p, r)| p.name == provider && r.name == name)
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("no region {provider}:{name}"))
}

fn report_line(needle: &str) -> &'static str {
    built()
        .1
        .lines
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no report line with {needle:?}:\n{}", built().1))
}

#[test]
fn builtin_fleet_is_up_to_date() {
    let json = to_json(fleet());
    if std::env::var_os("UPDATE_BUILTIN").is_some_and(|v| v == "1") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/builtin-fleet.json");
        std::fs::write(&path, &json).unwrap();
        println!(
            "wrote {} ({} bytes)\n{}",
            path.display(),
            json.len(),
            built().1
        );
        return;
    }
    assert!(
        json == BUILTIN_JSON,
        "crates/catalog/data/builtin-fleet.json is stale; regenerate with `cargo run -- catalog build --data ../shared/data --out crates/catalog/data/builtin-fleet.json` (or run this test with UPDATE_BUILTIN=1)"
    );
    assert!(
        json.len() < 3_000_000,
        "built-in fleet is {} bytes",
        json.len()
    );
}

#[test]
fn builtin_fleet_parses_and_validates() {
    let f = builtin();
    assert_eq!(
        f.providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["aws", "azure", "gcp", "lambda"]
    );
    stratus_model::parse::validate_fleet(f, "<built-in>", BUILTIN_JSON).unwrap();
}

#[test]
fn fleet_covers_every_provider_and_key_accelerator() {
    let f = fleet();
    let accs: BTreeSet<Accelerator> = f.pools().map(|(_, _, p)| p.accelerator).collect();
    for a in [
        Accelerator::H100,
        Accelerator::H200,
        Accelerator::A100_40GB,
        Accelerator::A100_80GB,
        Accelerator::L4,
        Accelerator::A10G,
        Accelerator::V100,
        Accelerator::MI300X,
        Accelerator::TpuV5e,
        Accelerator::TpuV5p,
        Accelerator::Trainium1,
        Accelerator::Trainium2,
        Accelerator::Inferentia2,
        Accelerator::H100Nvl,
        Accelerator::B200,
    ] {
        assert!(accs.contains(&a), "no {a} pool");
    }
    for p in &f.providers {
        assert!(
            p.regions.iter().map(|r| r.pools.len()).sum::<usize>() > 5,
            "{} has few pools",
            p.name
        );
        let names: Vec<&str> = p.regions.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "{} regions unsorted",
            p.name
        );
    }
    assert!(f
        .latency
        .windows(2)
        .all(|w| (&w[0].a, &w[0].b) < (&w[1].a, &w[1].b)));
    stratus_model::parse::validate_fleet(f, "<built>", "").unwrap();
}

#[test]
fn aws_prices_match_the_source() {
    let p5 = pool("aws:us-east-1:p5.48xlarge");
    assert_eq!(p5.on_demand_per_node_hour.0, 98.32);
    // Median of the six zones' spot prices: (25.8774 + 27.6948) / 2.
    assert_eq!(p5.spot_per_node_hour.unwrap().0, 26.7861);
    assert_eq!(
        pool("aws:us-east-1:p4de.24xlarge").accelerator,
        Accelerator::A100_80GB
    );
    assert_eq!(
        pool("aws:us-east-1:p4d.24xlarge").accelerator,
        Accelerator::A100_40GB
    );
    assert_eq!(
        pool("aws:us-east-1:trn1.32xlarge")
            .on_demand_per_node_hour
            .0,
        21.5
    );
    assert!(
        report_line("merged").contains("merged 5 duplicate"),
        "{}",
        built().1
    );
}

#[test]
fn azure_quirks_are_handled_and_counted() {
    assert!(report_line("unquoted Generation").contains("27141 rows had an unquoted"));
    assert_eq!(
        pool("azure:eastus:Standard_ND96isr_H100_v5")
            .on_demand_per_node_hour
            .0
            / 8.0,
        12.29
    );
    assert_eq!(
        pool("azure:eastus:Standard_NC40ads_H100_v5").accelerator,
        Accelerator::H100Nvl
    );
    let mi300x: Vec<&str> = fleet()
        .pools()
        .filter(|(_, _, p)| p.instance_type == "Standard_ND96isr_MI300X_v5")
        .map(|(_, r, _)| r.name.as_str())
        .collect();
    assert!(
        mi300x.len() >= 5
            && pool(&format!("azure:{}:Standard_ND96isr_MI300X_v5", mi300x[0])).accelerator
                == Accelerator::MI300X,
        "{mi300x:?}"
    );
    let skipped = report_line("fractional GPU count");
    assert!(
        skipped.contains("MI25") && skipped.contains("M60"),
        "{skipped}"
    );
    assert!(fleet()
        .pools()
        .all(|(_, _, p)| !p.instance_type.starts_with("Standard_NV6ads")));
}

#[test]
fn gcp_artefacts_are_dropped() {
    for (p, _, pl) in fleet().pools() {
        if p.name == "gcp" && pl.accelerator == Accelerator::H100 {
            // The artefact is 4.20 $/GPU-h (33.60609 for 8); real rows are >= 9.8 $/GPU-h.
            let per_chip = pl.on_demand_per_node_hour.0 / pl.chips_per_node as f64;
            assert!(per_chip > 9.0, "{} at {per_chip} per chip", pl.id);
        }
    }
    // us-central1's a3-highgpu-8g zones all carry the artefact, so the pool does not exist.
    assert!(fleet()
        .pools()
        .all(|(_, _, p)| p.id != "gcp:us-central1:a3-highgpu-8g"));
    let h100 = report_line("dropped 44 H100 GPU rows");
    assert!(
        h100.contains("in 11 zones") && h100.contains("us-central1-a"),
        "{h100}"
    );
    let a100 = report_line("dropped 45 A100 GPU rows");
    assert!(
        a100.contains("asia-northeast1-a") && a100.contains("europe-west4-b"),
        "{a100}"
    );
    // us-east4 a3-highgpu-8g: host 10.x + GPU 78.37241 (SOURCE.md: 10.98 $/GPU-h cheapest).
    let east4 = pool("gcp:us-east4:a3-highgpu-8g").on_demand_per_node_hour.0 / 8.0;
    assert!((east4 - 10.98).abs() < 0.01, "{east4}");
    assert!(report_line("700.0 placeholder").contains("placeholder"));
    let tpu = pool("gcp:us-central1:tpu-v5p-16");
    assert_eq!(
        (tpu.chips_per_node, tpu.domain_chips, tpu.nodes),
        (8, 8, 16)
    );
}

#[test]
fn lambda_pools_have_no_spot_and_coordinates() {
    let r = region("lambda", "us-south-1");
    assert!(r
        .pools
        .iter()
        .all(|p| p.spot_per_node_hour.is_none() && p.spot_nodes == 0));
    assert_eq!(
        pool("lambda:us-south-1:gpu_8x_h100_sxm5")
            .on_demand_per_node_hour
            .0,
        31.92
    );
    assert!(r.lat > 25.0 && r.lat < 37.0 && r.lon < -93.0);
    assert_eq!(r.pue, 1.56);
}

#[test]
fn carbon_sources_and_repairs() {
    let az = report_line("azure regions from");
    assert!(
        az.contains("repaired 2 values") && az.contains("Finland Central 000077 -> 77 g/kWh"),
        "{az}"
    );
    assert!(
        az.contains("Germany West Central 000402 -> 402 g/kWh")
            && az.contains("dropped 1 trailing"),
        "{az}"
    );
    assert_eq!(
        region("azure", "germanywestcentral").carbon_g_per_kwh.0,
        402.0
    );
    assert_eq!(region("aws", "us-east-1").carbon_g_per_kwh.0, 415.755);
    assert_eq!(region("gcp", "europe-west4").carbon_g_per_kwh.0, {
        let (_, text) = csvutil::read_text(
            &data_dir(),
            "carbon_intensity/gcp_region_carbon_info/2024.csv",
        )
        .unwrap();
        text.lines()
            .find(|l| l.starts_with("europe-west4,"))
            .unwrap()
            .rsplit(',')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    });
    let counts = report_line("yearly intensity per region");
    assert!(
        counts.contains("Electricity Maps") && !counts.contains("provider files 0"),
        "{counts}"
    );
    let fr = region("azure", "francecentral");
    let n = fr.carbon_hourly.as_ref().map_or(0, Vec::len);
    assert!(
        n + 1 >= carbon::HOURLY_HOURS && n <= carbon::HOURLY_HOURS,
        "{n}"
    );
    assert!(region("gcp", "europe-west3").carbon_hourly.is_some());
    assert!(region("aws", "eu-central-1").carbon_hourly.is_some());
    assert_eq!(
        region("aws", "eu-west-1").jurisdictions,
        ["IE", "EU", "EEA"]
    );
    assert_eq!(region("azure", "norwayeast").jurisdictions, ["NO", "EEA"]);
}

#[test]
fn finland_central_carbon_is_77() {
    let dir = data_dir();
    let (file, text) = csvutil::read_text(&dir, carbon::AZURE_FACTORS).unwrap();
    let csv = csvutil::Csv::parse(&file, &text, 0, csvutil::Extra::TrailingEmptyOnly).unwrap();
    let (line, rec) = csv
        .rows
        .iter()
        .find(|(_, r)| &r[0] == "Finland Central")
        .unwrap();
    assert_eq!(
        carbon::ccf_factor(&csv, *line, &rec[3]).unwrap(),
        (77.0, true)
    );
}

#[test]
fn assumptions_hold_in_the_built_fleet() {
    let nd = pool("azure:eastus:Standard_ND96isr_H100_v5");
    let c = nd.committed.as_ref().unwrap();
    assert_eq!(
        (c.name.as_str(), c.nodes, nd.nodes),
        ("azure-h100-7y", 256, 512)
    );
    assert!((c.rate_per_node_hour.0 - 0.6 * nd.on_demand_per_node_hour.0).abs() < 1e-3);
    let trn2 = pool("aws:us-east-2:trn2.48xlarge");
    assert_eq!(trn2.committed.as_ref().map(|c| c.nodes), Some(128));
    for (_, r, p) in fleet().pools() {
        assert!(
            p.domain_chips >= p.chips_per_node && p.domain_chips <= 32768,
            "{}",
            p.id
        );
        if let Some(s) = p.spot_per_node_hour {
            assert!(
                s.0 < p.on_demand_per_node_hour.0 && p.spot_nodes == p.nodes / 4,
                "{}",
                p.id
            );
        }
        assert!(r.power_cap_mw.0 > 0.0);
    }
    // The cap is 70 % of full-load facility power, so running every pool at once exceeds it.
    for (_, r) in fleet().regions() {
        let full: f64 = r
            .pools
            .iter()
            .map(|p| p.nodes as f64 * p.node_it_watts().0)
            .sum::<f64>()
            * r.pue
            / 1e6;
        assert!(
            r.power_cap_mw.0 >= 0.7 * full - 1e-9 && r.power_cap_mw.0 < full + 0.1,
            "{}",
            r.name
        );
    }
}

#[test]
fn latency_keeps_fleet_pairs_and_drops_the_zero() {
    assert!(report_line("measured matrices").contains("1 zero off-diagonal values dropped"));
    let ids: BTreeSet<String> = fleet()
        .regions()
        .map(|(p, r)| region_id(&p.name, &r.name))
        .collect();
    assert!(fleet()
        .latency
        .iter()
        .all(|l| ids.contains(&l.a) && ids.contains(&l.b) && (l.rtt_ms.0 > 0.0 || l.a == l.b)));
    let ue1 = fleet()
        .latency
        .iter()
        .find(|l| l.a == "aws:us-east-1" && l.b == "aws:us-west-2")
        .unwrap();
    assert!((ue1.rtt_ms.0 - 64.3).abs() < 1.0, "{}", ue1.rtt_ms.0);
    assert!(report_line("unmeasured").contains("estimated from great-circle"));
}

#[test]
fn great_circle_estimate_is_checked_against_the_aws_matrix() {
    let dir = data_dir();
    let mut report = BuildReport::default();
    let (sites, _) = geo::load_sites(&dir, &mut report).unwrap();
    let (file, text) = csvutil::read_text(&dir, latency::AWS_RTT).unwrap();
    let mut m = latency::Matrix::new();
    latency::parse_matrix(&file, &text, "aws", str::to_string, &mut m).unwrap();
    let mut errors = Vec::new();
    for ((a, b), ms) in &m {
        let (a, b) = (a.trim_start_matches("aws:"), b.trim_start_matches("aws:"));
        if a == b {
            continue;
        }
        let (Some(sa), Some(sb)) = (
            sites.get(&("aws".into(), a.into())),
            sites.get(&("aws".into(), b.into())),
        ) else {
            continue;
        };
        assert!(great_circle_km(sa.lat, sa.lon, sb.lat, sb.lon) > 0.0);
        errors.push((estimate_rtt(sa.lat, sa.lon, sb.lat, sb.lon).0 - ms).abs());
    }
    let med = csvutil::median(&errors).unwrap();
    println!(
        "great-circle RTT estimate vs AWS matrix: {} pairs, median absolute error {med:.1} ms",
        errors.len()
    );
    assert!(errors.len() > 500, "{}", errors.len());
    assert!(med < 25.0, "median absolute error {med:.1} ms");
}

#[test]
fn a_truncated_data_file_is_an_error_naming_file_and_line() {
    let src = data_dir();
    let tmp = std::env::temp_dir().join(format!("stratus-catalog-trunc-{}", std::process::id()));
    // A copy of the AWS file cut after 10 rows, ending in a truncated row.
    let rel = aws::AWS_FILE;
    let to = tmp.join(rel);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(src.join(rel)).unwrap();
    let cut: String = text.lines().take(11).collect::<Vec<_>>().join("\n");
    std::fs::write(&to, format!("{cut}\np5.48xlarge,H100,8.0,192.0\n")).unwrap();
    let e = build(&tmp).unwrap_err().to_string();
    std::fs::remove_dir_all(&tmp).ok();
    assert!(
        e.contains("skypilot_v7_aws_vms_p_family_slice.csv:12: too few fields"),
        "{e}"
    );
}

#[test]
fn a_missing_data_dir_names_the_file_and_the_env_var() {
    let e = build(Path::new("/nonexistent/stratus-data"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/stratus-data/cloud_gpu_catalog/aws/")
            && e.contains("STRATUS_DATA"),
        "{e}"
    );
}
