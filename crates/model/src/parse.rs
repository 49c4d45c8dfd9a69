//! Reading fleet and workload files, and checking what the types alone cannot.
//!
//! Every error names the file, the line where it can be found, the field, and the reason,
//! so a user can fix a thousand-line file without bisecting it.

use crate::accelerator::Accelerator;
use crate::fleet::{region_id, Fleet};
use crate::workload::WorkloadSet;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// A bad input file: where, which field, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct InputError {
    /// File name as given by the user (or `<built-in>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path, when known (e.g. `training[3].chips`).
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(fl) = &self.field {
            write!(f, ": field `{fl}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// File syntax, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml`
    Yaml,
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

impl Format {
    /// Format from a file name; anything unknown is read as YAML (a superset of JSON).
    pub fn from_path(path: &str) -> Format {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".toml") {
            Format::Toml
        } else if lower.ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Deserialize `text` (named `file`) in `format`, mapping parser errors to [`InputError`].
/// An error the parser could not tie to a field (broken syntax) names the field written at or
/// above its line.
pub fn from_str<T: DeserializeOwned>(
    file: &str,
    text: &str,
    format: Format,
) -> Result<T, InputError> {
    from_str_raw(file, text, format).map_err(|mut e| {
        if e.field.is_none() {
            e.field = e.line.and_then(|l| enclosing_key(text, l));
        }
        if e.line.is_none() && !text.trim().is_empty() {
            // Errors at the very end of the text (an unclosed document).
            e.line = Some(text.lines().count().max(1));
            if e.field.is_none() {
                e.field = enclosing_key(text, text.lines().count().max(1));
            }
        }
        e
    })
}

/// The key written on line `line` (1-based) or, failing that, on the nearest line above it
/// (below it, for an error before the first key): `key:` (YAML), `"key":` (JSON), `key =` or
/// `[table]` (TOML).
fn enclosing_key(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let from = line.min(lines.len());
    lines[..from]
        .iter()
        .rev()
        .chain(lines[from..].iter())
        .find_map(|l| key_of(l))
}

/// The key a line writes, if any.
fn key_of(l: &str) -> Option<String> {
    let t = l.trim_start().trim_start_matches("- ").trim_start();
    // JSON: "key":
    if let Some(rest) = t.strip_prefix('"') {
        if let Some((k, after)) = rest.split_once('"') {
            if after.trim_start().starts_with(':') && is_key(k) {
                return Some(k.to_string());
            }
        }
    }
    // TOML: [table] or [[table]]
    if t.starts_with('[') {
        let k = t.trim_matches(|c| c == '[' || c == ']' || c == ' ');
        let k = k.rsplit('.').next().unwrap_or(k);
        if is_key(k) {
            return Some(k.to_string());
        }
    }
    // YAML `key:` and TOML `key =`.
    let end = t.find([':', '=']).unwrap_or(0);
    let k = t[..end].trim();
    (end > 0 && is_key(k)).then(|| k.to_string())
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn from_str_raw<T: DeserializeOwned>(
    file: &str,
    text: &str,
    format: Format,
) -> Result<T, InputError> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| InputError {
            file: file.into(),
            line: Some(e.line()),
            field: field_in(&e.to_string()),
            reason: strip_location(&e.to_string()),
        }),
        Format::Toml => toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            InputError {
                file: file.into(),
                line,
                field: field_in(e.message()),
                reason: e.message().trim().to_string(),
            }
        }),
        Format::Yaml => serde_saphyr::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line() as usize).filter(|&l| l > 0);
            let msg = e.to_string();
            let reason = yaml_reason(&msg);
            let field = field_in(&reason);
            // The parser reports some errors at the start of the enclosing mapping; point at
            // the offending key or value when it can be found below that line.
            let token = field
                .as_ref()
                .map(|f| format!("{f}:"))
                .or_else(|| value_in(&reason));
            let line = match (line, token) {
                (Some(l), Some(t)) => find_line_from(text, &t, l).or(Some(l)),
                (l, _) => l,
            };
            let src = line.and_then(|l| text.lines().nth(l - 1)).map(str::trim);
            let field = field.or_else(|| {
                src.and_then(|t| t.trim_start_matches("- ").split_once(':'))
                    .map(|(k, _)| k.trim().to_string())
                    .filter(|k| !k.is_empty() && !k.contains(' '))
            });
            let reason = match src {
                Some(t) if !t.is_empty() && !reason.contains(t) => format!("{reason} (in `{t}`)"),
                _ => reason,
            };
            InputError {
                file: file.into(),
                line,
                field,
                reason,
            }
        }),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// serde-saphyr writes "error: line L column C: reason" (plus a snippet); keep the reason.
fn yaml_reason(msg: &str) -> String {
    let first = first_line(msg);
    let rest = first.strip_prefix("error: ").unwrap_or(first);
    let rest = match rest.strip_prefix("line ") {
        Some(r) => r.split_once(": ").map(|(_, b)| b).unwrap_or(r),
        None => rest,
    };
    strip_location(rest)
}

/// The offending value quoted in an "invalid value: string \"x\"" / "floating point `x`" message.
fn value_in(msg: &str) -> Option<String> {
    let rest = &msg[msg.find("invalid value: ")?..];
    if let Some(i) = rest.find('"') {
        let r = &rest[i + 1..];
        return r.find('"').map(|j| r[..j].to_string());
    }
    let i = rest.find('`')?;
    let r = &rest[i + 1..];
    r.find('`').map(|j| r[..j].to_string())
}

/// First line at or after `from` (1-based) that contains `needle`.
fn find_line_from(text: &str, needle: &str, from: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Pull a field name out of serde's "unknown field `x`" / "missing field `x`" messages.
fn field_in(msg: &str) -> Option<String> {
    for key in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(i) = msg.find(key) {
            let rest = &msg[i + key.len()..];
            return rest.find('`').map(|j| rest[..j].to_string());
        }
    }
    None
}

/// Read a file's text, with an error that names it: (the name as given, the text).
pub fn read_text(path: &Path) -> Result<(String, String), InputError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| InputError {
        file: name.clone(),
        line: None,
        field: None,
        reason: format!("cannot read: {e}"),
    })?;
    Ok((name, text))
}

/// Read a file from disk with the format its extension says.
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<(T, String), InputError> {
    let (name, text) = read_text(path)?;
    let v = from_str(&name, &text, Format::from_path(&name))?;
    Ok((v, text))
}

/// 1-based line of the `nth` (0-based) line containing `needle`, for errors found after parsing.
pub fn find_line(text: &str, needle: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
}

fn err(file: &str, text: &str, needle: &str, field: String, reason: String) -> InputError {
    let mut e = err_nth(file, text, needle, 0, field, reason);
    // Point at the field's own line when it follows the line naming its item.
    let key = e
        .field
        .as_deref()
        .and_then(|f| f.rsplit('.').next())
        .map(|k| k.split('[').next().unwrap_or(k).to_string())
        .filter(|k| !k.is_empty() && k != "name");
    if let (Some(from), Some(key)) = (e.line, key) {
        let (colon, quoted) = (format!("{key}:"), format!("\"{key}\""));
        for (i, l) in text.lines().enumerate().skip(from - 1).take(200) {
            if i + 1 > from && (l.contains("name:") || l.contains("\"name\"")) {
                break;
            }
            if l.contains(&colon) || l.contains(&quoted) {
                e.line = Some(i + 1);
                break;
            }
        }
    }
    e
}

/// An error located at the `nth` line mentioning `needle` (a duplicate's second mention).
fn err_nth(
    file: &str,
    text: &str,
    needle: &str,
    nth: usize,
    field: String,
    reason: String,
) -> InputError {
    let line = (!needle.is_empty())
        .then(|| find_line(text, needle, nth))
        .flatten()
        .or_else(|| locate(text, &field));
    InputError {
        file: file.into(),
        line,
        field: Some(field),
        reason,
    }
}

/// A line for a field path (`inference[0].demand[1].from`) when its value cannot be found
/// written as it was read (an escaped string, an empty name): the first line writing the
/// path's last key at or after its first key's.
pub fn locate(text: &str, field: &str) -> Option<usize> {
    let keys: Vec<&str> = field
        .split(['.', '['])
        .map(|k| k.trim_end_matches(']'))
        .filter(|k| !k.is_empty() && !k.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let writes =
        |l: &str, k: &str| key_of(l).is_some_and(|x| x == k) || l.contains(&format!("{k}:"));
    let lines: Vec<&str> = text.lines().collect();
    let start = keys
        .first()
        .and_then(|k| lines.iter().position(|l| writes(l, k)))
        .unwrap_or(0);
    let last = keys.last()?;
    lines[start..]
        .iter()
        .position(|l| writes(l, last))
        .map(|i| start + i + 1)
        .or(Some(start + 1))
}

/// Load and validate a fleet file.
pub fn load_fleet(path: &Path) -> Result<Fleet, InputError> {
    let (fleet, text): (Fleet, String) = read_file(path)?;
    validate_fleet(&fleet, &path.display().to_string(), &text)?;
    Ok(fleet)
}

/// Load and validate a workload file against a fleet (for region references).
pub fn load_workloads(path: &Path, fleet: &Fleet) -> Result<WorkloadSet, InputError> {
    let (w, text): (WorkloadSet, String) = read_file(path)?;
    validate_workloads(&w, fleet, &path.display().to_string(), &text)?;
    Ok(w)
}

/// Most nodes one pool may have.
pub const POOL_NODES_MAX: u32 = 10_000_000;

/// Most chips one node may have.
pub const NODE_CHIPS_MAX: u32 = 4096;

/// Most chips a whole fleet may have (2^31: a node count times chips per node, a replica
/// count times chips per replica, never overflow the planner's 32-bit arithmetic).
pub const FLEET_CHIPS_MAX: u64 = 1 << 31;

/// Semantic checks on a fleet: unique ids, names in the fleet-identifier grammar, sane PUE,
/// commitments within capacity, counts within bounds.
pub fn validate_fleet(fleet: &Fleet, file: &str, text: &str) -> Result<(), InputError> {
    let mut providers = HashSet::new();
    let mut pools = HashSet::new();
    let mut chips: u64 = 0;
    let id = |v: &str, field: String| -> Result<(), InputError> {
        crate::name::check_fleet_id(v).map_err(|r| err(file, text, v, field, r))
    };
    for (pi, p) in fleet.providers.iter().enumerate() {
        id(&p.name, format!("providers[{pi}].name"))?;
        if !providers.insert(p.name.as_str()) {
            return Err(err_nth(
                file,
                text,
                &p.name,
                1,
                format!("providers[{pi}].name"),
                format!("duplicate provider name {:?}", p.name),
            ));
        }
        let mut regions = HashSet::new();
        for (ri, r) in p.regions.iter().enumerate() {
            let at = format!("providers[{pi}].regions[{ri}]");
            id(&r.name, format!("{at}.name"))?;
            if !regions.insert(r.name.as_str()) {
                return Err(err_nth(
                    file,
                    text,
                    &r.name,
                    1,
                    format!("{at}.name"),
                    format!("duplicate region name {:?} in provider {}", r.name, p.name),
                ));
            }
            if !(1.0..=3.0).contains(&r.pue) {
                return Err(err(
                    file,
                    text,
                    &r.name,
                    format!("{at}.pue"),
                    format!("PUE must be between 1.0 and 3.0, got {}", r.pue),
                ));
            }
            if !(-90.0..=90.0).contains(&r.lat) || !(-180.0..=180.0).contains(&r.lon) {
                return Err(err(
                    file,
                    text,
                    &r.name,
                    format!("{at}.lat"),
                    format!("coordinates out of range: ({}, {})", r.lat, r.lon),
                ));
            }
            for (qi, q) in r.pools.iter().enumerate() {
                let at = format!("{at}.pools[{qi}]");
                id(&q.id, format!("{at}.id"))?;
                let bound = |v: u32, max: u32, field: &str| -> Result<(), InputError> {
                    if v > max {
                        Err(err(
                            file,
                            text,
                            &q.id,
                            format!("{at}.{field}"),
                            format!("{v} is more than {max}"),
                        ))
                    } else {
                        Ok(())
                    }
                };
                bound(q.nodes, POOL_NODES_MAX, "nodes")?;
                bound(q.spot_nodes, POOL_NODES_MAX, "spot_nodes")?;
                bound(q.chips_per_node, NODE_CHIPS_MAX, "chips_per_node")?;
                chips += u64::from(q.nodes.max(q.spot_nodes)) * u64::from(q.chips_per_node);
                if chips > FLEET_CHIPS_MAX {
                    return Err(err(
                        file,
                        text,
                        &q.id,
                        format!("{at}.nodes"),
                        format!("the fleet would hold more than {FLEET_CHIPS_MAX} chips"),
                    ));
                }
                if !pools.insert(q.id.as_str()) {
                    return Err(err_nth(
                        file,
                        text,
                        &q.id,
                        1,
                        format!("{at}.id"),
                        format!("duplicate pool id {:?}", q.id),
                    ));
                }
                if q.chips_per_node == 0 {
                    return Err(err(
                        file,
                        text,
                        &q.id,
                        format!("{at}.chips_per_node"),
                        "must be at least 1".into(),
                    ));
                }
                if q.domain_chips < q.chips_per_node {
                    return Err(err(
                        file,
                        text,
                        &q.id,
                        format!("{at}.domain_chips"),
                        format!(
                            "domain of {} chips is smaller than one node ({} chips)",
                            q.domain_chips, q.chips_per_node
                        ),
                    ));
                }
                if let Some(c) = &q.committed {
                    if c.nodes > q.nodes {
                        return Err(err(
                            file,
                            text,
                            &q.id,
                            format!("{at}.committed.nodes"),
                            format!(
                                "{} committed nodes exceed the pool's {} nodes",
                                c.nodes, q.nodes
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Semantic checks on workloads: unique names in the workload-name grammar
/// ([`crate::name`]), images for every allowed architecture, positive sizes, finite times,
/// region references that exist in the fleet, and every count bounded by what it means:
/// redundancy by the providers and regions the fleet has, chips and replicas by the chips
/// it holds.
pub fn validate_workloads(
    w: &WorkloadSet,
    fleet: &Fleet,
    file: &str,
    text: &str,
) -> Result<(), InputError> {
    let regions: HashSet<String> = fleet
        .regions()
        .map(|(p, r)| region_id(&p.name, &r.name))
        .collect();
    let fleet_chips: u64 = fleet
        .pools()
        .map(|(_, _, q)| u64::from(q.nodes.max(q.spot_nodes)) * u64::from(q.chips_per_node))
        .sum::<u64>()
        .max(1);
    let chips_ok = |chips: u32, name: &str, field: String| -> Result<(), InputError> {
        if u64::from(chips) > fleet_chips {
            Err(err(
                file,
                text,
                name,
                field,
                format!("{chips} chips are more than the whole fleet holds ({fleet_chips})"),
            ))
        } else {
            Ok(())
        }
    };
    // A time in hours or minutes: a finite number, positive unless zero is allowed.
    let time_ok = |v: f64, zero: bool, name: &str, field: String| -> Result<(), InputError> {
        let ok = v.is_finite() && (v > 0.0 || zero && v == 0.0);
        if ok {
            Ok(())
        } else {
            Err(err(
                file,
                text,
                name,
                field,
                format!(
                    "must be a finite number {} 0, got {v}",
                    if zero { "at least" } else { "above" }
                ),
            ))
        }
    };
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut check_name = |name: &str, field: String| -> Result<(), InputError> {
        let seen = names.entry(name.to_string()).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            return Err(err_nth(
                file,
                text,
                name,
                *seen - 1,
                field,
                format!("duplicate workload name {name:?}"),
            ));
        }
        crate::name::check_workload_name(name)
            .map_err(|reason| err_nth(file, text, name, 0, field, reason))
    };
    let images_cover = |accs: &mut dyn Iterator<Item = Accelerator>,
                        images: &std::collections::BTreeMap<crate::Arch, String>,
                        name: &str,
                        at: &str|
     -> Result<(), InputError> {
        for a in accs {
            if !images.contains_key(&a.arch()) {
                return Err(err(
                    file,
                    text,
                    name,
                    format!("{at}.images"),
                    format!(
                        "accelerator {a} needs an image for architecture {}",
                        a.arch()
                    ),
                ));
            }
        }
        Ok(())
    };
    let region_ok = |r: &str, name: &str, field: String| -> Result<(), InputError> {
        if regions.contains(r) {
            Ok(())
        } else {
            Err(err(file, text, r, field,
                format!("unknown region {r:?} in workload {name} (write provider:region, e.g. aws:us-east-1)")))
        }
    };
    for (i, t) in w.training.iter().enumerate() {
        let at = format!("training[{i}]");
        check_name(&t.name, format!("{at}.name"))?;
        if t.chips == 0 {
            return Err(err(
                file,
                text,
                &t.name,
                format!("{at}.chips"),
                "gang size must be at least 1".into(),
            ));
        }
        chips_ok(t.chips, &t.name, format!("{at}.chips"))?;
        time_ok(
            t.checkpoint_minutes,
            true,
            &t.name,
            format!("{at}.checkpoint_minutes"),
        )?;
        if t.accelerators.is_empty() {
            return Err(err(
                file,
                text,
                &t.name,
                format!("{at}.accelerators"),
                "list at least one accelerator".into(),
            ));
        }
        images_cover(&mut t.accelerators.iter().copied(), &t.images, &t.name, &at)?;
        if let Some(d) = &t.data_region {
            region_ok(d, &t.name, format!("{at}.data_region"))?;
        }
        if let Some(h) = t.deadline_hours {
            time_ok(h, false, &t.name, format!("{at}.deadline_hours"))?;
        }
    }
    for (i, s) in w.inference.iter().enumerate() {
        let at = format!("inference[{i}]");
        check_name(&s.name, format!("{at}.name"))?;
        if s.replica.is_empty() {
            return Err(err(
                file,
                text,
                &s.name,
                format!("{at}.replica"),
                "list at least one accelerator".into(),
            ));
        }
        for (a, r) in &s.replica {
            if r.chips == 0 || r.rps.0 <= 0.0 {
                return Err(err(
                    file,
                    text,
                    &s.name,
                    format!("{at}.replica.{a}"),
                    "a replica needs at least 1 chip and a positive rps".into(),
                ));
            }
        }
        images_cover(&mut s.replica.keys().copied(), &s.images, &s.name, &at)?;
        if s.demand.is_empty() {
            return Err(err(
                file,
                text,
                &s.name,
                format!("{at}.demand"),
                "list at least one user location".into(),
            ));
        }
        let mut froms = HashSet::new();
        for (j, d) in s.demand.iter().enumerate() {
            region_ok(&d.from, &s.name, format!("{at}.demand[{j}].from"))?;
            if !froms.insert(d.from.as_str()) {
                return Err(err_nth(
                    file,
                    text,
                    &d.from,
                    1,
                    format!("{at}.demand[{j}].from"),
                    format!("{} is listed twice; give one demand per location", d.from),
                ));
            }
        }
        for (v, field, have, what) in [
            (
                s.min_providers,
                "min_providers",
                fleet.providers.len(),
                "providers",
            ),
            (s.min_regions, "min_regions", regions.len(), "regions"),
        ] {
            if v == 0 {
                return Err(err(
                    file,
                    text,
                    &s.name,
                    format!("{at}.{field}"),
                    "must be at least 1".into(),
                ));
            }
            if v as usize > have {
                return Err(err(
                    file,
                    text,
                    &s.name,
                    format!("{at}.{field}"),
                    format!("{v} is more than the {have} {what} the fleet has"),
                ));
            }
        }
        for (v, field) in [
            (s.min_replicas, "min_replicas"),
            (s.max_replicas, "max_replicas"),
        ] {
            let Some(v) = v else { continue };
            // A bound no fleet could hold is a typo, and sizing must never allocate by it.
            let most = fleet_chips.max(1);
            if v == 0 || u64::from(v) > most {
                return Err(err(
                    file,
                    text,
                    &s.name,
                    format!("{at}.{field}"),
                    format!("must be between 1 and {most} (the chips the fleet holds)"),
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (s.min_replicas, s.max_replicas) {
            if lo > hi {
                return Err(err(
                    file,
                    text,
                    &s.name,
                    format!("{at}.max_replicas"),
                    format!("{hi} is below min_replicas {lo}"),
                ));
            }
        }
        for (a, r) in &s.replica {
            // Every location's replicas, at this accelerator's throughput, must fit the fleet.
            let replicas: f64 = s
                .demand
                .iter()
                .map(|d| (d.rps.0 / r.rps.0).ceil().max(1.0))
                .sum::<f64>()
                * f64::from(s.min_providers.max(s.min_regions).max(1));
            let chips = replicas * f64::from(r.chips);
            if chips.is_nan() || chips > fleet_chips as f64 {
                return Err(err(
                    file,
                    text,
                    &s.name,
                    format!("{at}.replica.{a}"),
                    format!(
                        "serving the demand takes {replicas:.0} replicas of {} chips on {a}, \
                         more than the whole fleet holds ({fleet_chips} chips)",
                        r.chips
                    ),
                ));
            }
        }
    }
    for (i, b) in w.batch.iter().enumerate() {
        let at = format!("batch[{i}]");
        check_name(&b.name, format!("{at}.name"))?;
        if b.chips == 0 {
            return Err(err(
                file,
                text,
                &b.name,
                format!("{at}.chips"),
                "must be at least 1".into(),
            ));
        }
        chips_ok(b.chips, &b.name, format!("{at}.chips"))?;
        if let Some(h) = b.deadline_hours {
            time_ok(h, false, &b.name, format!("{at}.deadline_hours"))?;
        }
        if b.accelerators.is_empty() {
            return Err(err(
                file,
                text,
                &b.name,
                format!("{at}.accelerators"),
                "list at least one accelerator".into(),
            ));
        }
        images_cover(&mut b.accelerators.iter().copied(), &b.images, &b.name, &at)?;
    }
    Ok(())
}

/// Serialize to YAML in the same schema the readers accept.
pub fn to_yaml<T: serde::Serialize>(v: &T) -> Result<String, InputError> {
    serde_saphyr::to_string(v).map_err(|e| InputError {
        file: "<output>".into(),
        line: None,
        field: None,
        reason: e.to_string(),
    })
}
