//! Loaders for the real traces in the data directory.
//!
//! Simulations are only as credible as their inputs, so these read the public traces byte for
//! byte and reject anything odd with an [`InputError`] that names the file, the line and the
//! column, instead of silently dropping rows.

use serde::Deserialize;
use std::path::Path;
use stratus_ledger::time::{days_from_civil, days_in_month};
use stratus_model::parse::InputError;

/// One LLM request from a trace: arrival offset from the trace start and token counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Seconds since the first request, so traces from any wall-clock date replay alike.
    pub t_s: f64,
    /// Prompt tokens: drive prefill cost and KV-cache size.
    pub input_tokens: u32,
    /// Generated tokens: drive decode time.
    pub output_tokens: u32,
}

/// One job from the Alibaba GPU v2023 pod list.
#[derive(Debug, Clone, PartialEq)]
pub struct PodJob {
    /// Pod name from the trace, kept so results can be traced back to the source row.
    pub name: String,
    /// Submission time in seconds from the trace start (`creation_time`).
    pub arrival_s: f64,
    /// Run time in seconds (`deletion_time - scheduled_time`); always positive.
    pub duration_s: f64,
    /// Whole GPUs requested; at least 1 (CPU-only pods are dropped).
    pub gpus: u32,
    /// Share of each GPU in thousandths (1000 = whole GPU), for GPU-sharing tasks.
    pub gpu_milli: u32,
    /// Quality-of-service class (`LS`, `BE`, `Burstable`, `Guaranteed`), for preemption policies.
    pub qos: String,
    /// GPU models the pod may run on; empty means any.
    pub gpu_spec: Vec<String>,
}

/// Load an LLM request trace, sorted by arrival; t_s of the first request is 0.
///
/// Two public formats are understood, chosen by extension so callers need not know which one
/// a file is: `.csv` is the Azure LLM inference trace 2023 (`TIMESTAMP,ContextTokens,
/// GeneratedTokens`, wall-clock timestamps with 100-ns digits, midnight crossings handled) and
/// `.jsonl` is the Mooncake FAST'25 trace (`timestamp` in ms, `input_length`, `output_length`;
/// other keys ignored). A trace without requests is an error, since nothing could be replayed.
pub fn load_llm_trace(path: &Path) -> Result<Vec<Request>, InputError> {
    let file = path.display().to_string();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let mut reqs = match ext.as_deref() {
        Some("csv") => load_azure(&file, &read_bytes(path, &file)?)?,
        Some("jsonl") => load_mooncake(&file, &read_bytes(path, &file)?)?,
        other => {
            let got = match other {
                Some(e) => format!("extension `.{e}`"),
                None => "no extension".to_string(),
            };
            return Err(err(
                &file,
                None,
                None,
                format!(
                    "unsupported LLM trace format ({got}); supported: `.csv` (Azure LLM 2023) \
                     and `.jsonl` (Mooncake)"
                ),
            ));
        }
    };
    if reqs.is_empty() {
        return Err(err(&file, None, None, "trace has no requests"));
    }
    reqs.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let t0 = reqs[0].t_s;
    for r in &mut reqs {
        r.t_s -= t0;
    }
    Ok(reqs)
}

/// Load `openb_pod_list_*.csv` from the Alibaba GPU v2023 trace as GPU jobs.
///
/// CPU-only pods are dropped because the simulator schedules accelerators. GPU pods that never
/// finished (empty `deletion_time`) or have no positive run time cannot be replayed; they are
/// skipped and their number is returned alongside the jobs so callers can report it. A missing
/// `scheduled_time` falls back to `creation_time`. Jobs come sorted by (arrival, name) so
/// replays are deterministic.
pub fn load_pod_list(path: &Path) -> Result<(Vec<PodJob>, usize), InputError> {
    let file = path.display().to_string();
    let bytes = read_bytes(path, &file)?;
    let mut rdr = csv_reader(&bytes);
    let names = [
        "name",
        "num_gpu",
        "gpu_milli",
        "gpu_spec",
        "qos",
        "creation_time",
        "deletion_time",
        "scheduled_time",
    ];
    let cols = columns(&mut rdr, &file, &names)?;
    let [c_name, c_num, c_milli, c_spec, c_qos, c_create, c_delete, c_sched] = cols;
    let mut jobs = Vec::new();
    let mut skipped = 0usize;
    let mut rec = csv::StringRecord::new();
    while next_record(&mut rdr, &mut rec, &file)? {
        let line = record_line(&rec);
        let get = |idx: usize, name: &str| get_field(&rec, idx, name, &file, line);
        let gpus: u32 = parse_uint(get(c_num, "num_gpu")?, "num_gpu", &file, line)?;
        if gpus == 0 {
            continue;
        }
        let name = get(c_name, "name")?;
        if name.is_empty() {
            return Err(err(&file, Some(line), Some("name"), "empty pod name"));
        }
        let gpu_milli = parse_uint(get(c_milli, "gpu_milli")?, "gpu_milli", &file, line)?;
        let gpu_spec = get(c_spec, "gpu_spec")?
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let qos = get(c_qos, "qos")?.to_string();
        let created = parse_time(
            get(c_create, "creation_time")?,
            "creation_time",
            &file,
            line,
        )?;
        let deleted = get(c_delete, "deletion_time")?;
        let sched = get(c_sched, "scheduled_time")?;
        if deleted.is_empty() {
            skipped += 1;
            continue;
        }
        let deleted = parse_time(deleted, "deletion_time", &file, line)?;
        let start = if sched.is_empty() {
            created
        } else {
            parse_time(sched, "scheduled_time", &file, line)?
        };
        let duration_s = deleted - start;
        if duration_s <= 0.0 {
            skipped += 1;
            continue;
        }
        jobs.push(PodJob {
            name: name.to_string(),
            arrival_s: created,
            duration_s,
            gpus,
            gpu_milli,
            qos,
            gpu_spec,
        });
    }
    jobs.sort_by(|a, b| {
        a.arrival_s
            .total_cmp(&b.arrival_s)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok((jobs, skipped))
}

/// Hourly grid carbon intensity (g/kWh) for one calendar year from a lets-wait-awhile series.
///
/// The source has 15- or 30-minute local-time samples (`Time,Carbon Intensity`) and spills a
/// few days into the neighbouring years; the simulator wants one value per hour of `year`
/// (8784 in leap years, else 8760). Each hour is the mean of its samples; an hour without
/// samples repeats the previous hour (leading gaps take the first available value), so DST
/// gaps do not leave holes. A year without any sample is an error.
pub fn load_carbon_series(path: &Path, year: i32) -> Result<Vec<f64>, InputError> {
    let file = path.display().to_string();
    let bytes = read_bytes(path, &file)?;
    let mut rdr = csv_reader(&bytes);
    let [c_time, c_ci] = columns(&mut rdr, &file, &["Time", "Carbon Intensity"])?;
    let hours = if days_in_month(i64::from(year), 2) == 29 {
        8784
    } else {
        8760
    };
    let day0 = days_from_civil(i64::from(year), 1, 1);
    let mut sum = vec![0.0f64; hours];
    let mut count = vec![0u32; hours];
    let mut rec = csv::StringRecord::new();
    while next_record(&mut rdr, &mut rec, &file)? {
        let line = record_line(&rec);
        let ts = parse_stamp(
            get_field(&rec, c_time, "Time", &file, line)?,
            "Time",
            &file,
            line,
        )?;
        let raw = get_field(&rec, c_ci, "Carbon Intensity", &file, line)?;
        let v: f64 = raw.parse().map_err(|_| {
            err(
                &file,
                Some(line),
                Some("Carbon Intensity"),
                format!("not a number: `{raw}`"),
            )
        })?;
        if !v.is_finite() || v < 0.0 {
            return Err(err(
                &file,
                Some(line),
                Some("Carbon Intensity"),
                format!("must be a finite non-negative number, got `{raw}`"),
            ));
        }
        if ts.year != i64::from(year) {
            continue;
        }
        let h = (ts.days - day0) as usize * 24 + ts.hour as usize;
        sum[h] += v;
        count[h] += 1;
    }
    let Some(first) = count.iter().position(|&c| c > 0) else {
        return Err(err(
            &file,
            None,
            Some("Time"),
            format!("no samples in year {year}"),
        ));
    };
    let mut out = Vec::with_capacity(hours);
    let mut prev = sum[first] / f64::from(count[first]);
    for (s, &c) in sum.iter().zip(&count) {
        if c > 0 {
            prev = s / f64::from(c);
        }
        out.push(prev);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Format readers

/// Azure LLM 2023: `TIMESTAMP,ContextTokens,GeneratedTokens`. Times are relative to the first
/// row's day so f64 keeps sub-microsecond precision.
/// Nodes of one kind in a cluster node list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeClass {
    /// GPU model as the trace names it (`T4`, `V100M32`, `G2`, …).
    pub model: String,
    /// GPUs per node.
    pub gpus: u32,
    /// Nodes of this kind.
    pub count: u32,
}

/// The shape of a real cluster from the Alibaba GPU 2023 node list (`sn,cpu_milli,memory_mib,
/// gpu,model`): nodes grouped by (model, GPUs per node), sorted. CPU-only nodes are left out.
pub fn load_node_list(path: &Path) -> Result<Vec<NodeClass>, InputError> {
    let file = path.display().to_string();
    let bytes = read_bytes(path, &file)?;
    let mut rdr = csv_reader(&bytes);
    let [gpu_col, model_col] = columns(&mut rdr, &file, &["gpu", "model"])?;
    let mut counts: std::collections::BTreeMap<(String, u32), u32> = Default::default();
    let mut rec = csv::StringRecord::new();
    while next_record(&mut rdr, &mut rec, &file)? {
        let line = record_line(&rec);
        let gpus = parse_uint(
            get_field(&rec, gpu_col, "gpu", &file, line)?,
            "gpu",
            &file,
            line,
        )?;
        let model = get_field(&rec, model_col, "model", &file, line)?
            .trim()
            .to_string();
        if gpus == 0 {
            continue;
        }
        if model.is_empty() {
            return Err(err(
                &file,
                Some(line),
                Some("model"),
                "a GPU node without a model",
            ));
        }
        *counts.entry((model, gpus)).or_default() += 1;
    }
    if counts.is_empty() {
        return Err(err(&file, None, None, "no GPU nodes in the node list"));
    }
    Ok(counts
        .into_iter()
        .map(|((model, gpus), count)| NodeClass { model, gpus, count })
        .collect())
}

/// Seconds per window of a ServeGen rate series.
pub const PROFILE_WINDOW_S: f64 = 600.0;

/// A real diurnal demand shape from the Alibaba ServeGen per-client rate series: every
/// `chunk-*-trace.csv` in `dir` (no header: `window_start_s,rate,cv,dist,param1,param2`,
/// 600-s windows) summed per window, then divided by the mean, so 1.0 is the average rate.
/// Request traces cover an hour; this carries the day/night swing across a multi-day run.
pub fn load_rate_profile(dir: &Path) -> Result<Vec<f64>, InputError> {
    let name = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            "directory is missing (the data directory can be set with the STRATUS_DATA \
             environment variable)"
                .to_string()
        } else {
            format!("cannot read directory: {e}")
        };
        err(&name, None, None, reason)
    })?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("chunk-") && n.ends_with("-trace.csv"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err(
            &name,
            None,
            None,
            "no ServeGen `chunk-*-trace.csv` files in this directory",
        ));
    }
    let mut sum: Vec<f64> = Vec::new();
    for path in &files {
        let file = path.display().to_string();
        let text = String::from_utf8(read_bytes(path, &file)?)
            .map_err(|_| err(&file, None, None, "invalid UTF-8"))?;
        for (i, row) in text.lines().enumerate() {
            let line = i + 1;
            if row.trim().is_empty() {
                continue;
            }
            let mut cols = row.split(',');
            let start = cols.next().unwrap_or("").trim();
            let rate = cols.next().unwrap_or("").trim();
            let start = parse_time(start, "window_start_s", &file, line)?;
            let rate: f64 = if rate.is_empty() {
                0.0
            } else {
                match rate.parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => v,
                    _ => {
                        return Err(err(
                            &file,
                            Some(line),
                            Some("rate"),
                            format!("expected a non-negative requests/s, got `{rate}`"),
                        ))
                    }
                }
            };
            if start < 0.0 {
                return Err(err(
                    &file,
                    Some(line),
                    Some("window_start_s"),
                    "negative window start",
                ));
            }
            let w = (start / PROFILE_WINDOW_S).round() as usize;
            if w >= 1_000_000 {
                return Err(err(
                    &file,
                    Some(line),
                    Some("window_start_s"),
                    "window start beyond 19 years",
                ));
            }
            if sum.len() <= w {
                sum.resize(w + 1, 0.0);
            }
            sum[w] += rate;
        }
    }
    let mean = sum.iter().sum::<f64>() / sum.len().max(1) as f64;
    if mean.is_nan() || mean <= 0.0 {
        return Err(err(&name, None, None, "the rate series carry no traffic"));
    }
    Ok(sum.into_iter().map(|r| r / mean).collect())
}

fn load_azure(file: &str, bytes: &[u8]) -> Result<Vec<Request>, InputError> {
    let mut rdr = csv_reader(bytes);
    let [c_ts, c_in, c_out] = columns(
        &mut rdr,
        file,
        &["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
    )?;
    let mut out = Vec::new();
    let mut day0: Option<i64> = None;
    let mut rec = csv::StringRecord::new();
    while next_record(&mut rdr, &mut rec, file)? {
        let line = record_line(&rec);
        let ts = parse_stamp(
            get_field(&rec, c_ts, "TIMESTAMP", file, line)?,
            "TIMESTAMP",
            file,
            line,
        )?;
        let input_tokens = parse_tokens(
            get_field(&rec, c_in, "ContextTokens", file, line)?,
            "ContextTokens",
            file,
            line,
        )?;
        let output_tokens = parse_tokens(
            get_field(&rec, c_out, "GeneratedTokens", file, line)?,
            "GeneratedTokens",
            file,
            line,
        )?;
        let d0 = *day0.get_or_insert(ts.days);
        out.push(Request {
            t_s: (ts.days - d0) as f64 * 86_400.0 + ts.sec_of_day,
            input_tokens,
            output_tokens,
        });
    }
    Ok(out)
}

/// The keys of one Mooncake line that matter (`hash_ids` and the rest are skipped without
/// building values). Raw JSON values, so a wrong type is reported against its key.
#[derive(Deserialize)]
struct MooncakeLine {
    timestamp: Option<serde_json::Value>,
    input_length: Option<serde_json::Value>,
    output_length: Option<serde_json::Value>,
}

/// Mooncake FAST'25 JSON lines: `timestamp` (ms since start), `input_length`, `output_length`.
fn load_mooncake(file: &str, bytes: &[u8]) -> Result<Vec<Request>, InputError> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let row: MooncakeLine = serde_json::from_slice(raw).map_err(|e| {
            let msg = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
            err(
                file,
                Some(line),
                None,
                format!("invalid JSON at column {}: {msg}", e.column()),
            )
        })?;
        let need = |v: Option<serde_json::Value>, name: &str| {
            v.ok_or_else(|| err(file, Some(line), Some(name), "missing"))
        };
        let ts = need(row.timestamp, "timestamp")?;
        let ms = ts.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
            err(
                file,
                Some(line),
                Some("timestamp"),
                format!("not a number: `{ts}`"),
            )
        })?;
        let input_tokens = json_tokens(&need(row.input_length, "input_length")?);
        let output_tokens = json_tokens(&need(row.output_length, "output_length")?);
        out.push(Request {
            t_s: ms / 1000.0,
            input_tokens: input_tokens
                .map_err(|r| err(file, Some(line), Some("input_length"), r))?,
            output_tokens: output_tokens
                .map_err(|r| err(file, Some(line), Some("output_length"), r))?,
        });
    }
    Ok(out)
}

/// A token count from JSON; the error is the reason only (the caller knows where).
fn json_tokens(v: &serde_json::Value) -> Result<u32, String> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).map_err(|_| format!("token count {n} is too large"));
    }
    if let Some(n) = v.as_i64() {
        return Err(format!("negative token count `{n}`"));
    }
    if v.is_number() {
        return Err(format!("token count must be a whole number, got `{v}`"));
    }
    Err(format!("token count must be a number, got `{v}`"))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn err(
    file: &str,
    line: Option<usize>,
    field: Option<&str>,
    reason: impl Into<String>,
) -> InputError {
    InputError {
        file: file.to_string(),
        line,
        field: field.map(str::to_string),
        reason: reason.into(),
    }
}

/// Whole file as bytes; a missing file says so and how to point at another data directory.
fn read_bytes(path: &Path, file: &str) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            "file is missing (the data directory can be set with the STRATUS_DATA environment \
             variable)"
                .to_string()
        } else {
            format!("cannot read file: {e}")
        };
        err(file, None, None, reason)
    })
}

fn csv_reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes)
}

fn csv_error(e: &csv::Error, file: &str) -> InputError {
    let line = e.position().map(|p| p.line() as usize);
    let reason = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_string(),
        _ => format!("malformed CSV: {e}"),
    };
    err(file, line, None, reason)
}

/// Indices of the named header columns; a missing one is reported against line 1.
fn columns<const N: usize>(
    rdr: &mut csv::Reader<&[u8]>,
    file: &str,
    names: &[&str; N],
) -> Result<[usize; N], InputError> {
    let headers = rdr.headers().map_err(|e| csv_error(&e, file))?.clone();
    if headers.iter().all(str::is_empty) {
        return Err(err(
            file,
            Some(1),
            None,
            format!("file is empty; expected a header `{}`", names.join(",")),
        ));
    }
    let mut out = [0usize; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = headers.iter().position(|h| h == *name).ok_or_else(|| {
            err(
                file,
                Some(1),
                Some(name),
                format!("missing column in header (expected `{}`)", names.join(",")),
            )
        })?;
    }
    Ok(out)
}

fn next_record(
    rdr: &mut csv::Reader<&[u8]>,
    rec: &mut csv::StringRecord,
    file: &str,
) -> Result<bool, InputError> {
    rdr.read_record(rec).map_err(|e| csv_error(&e, file))
}

fn record_line(rec: &csv::StringRecord) -> usize {
    rec.position().map_or(0, |p| p.line() as usize)
}

fn get_field<'a>(
    rec: &'a csv::StringRecord,
    idx: usize,
    name: &str,
    file: &str,
    line: usize,
) -> Result<&'a str, InputError> {
    rec.get(idx).ok_or_else(|| {
        err(
            file,
            Some(line),
            Some(name),
            format!("missing value (row has only {} fields)", rec.len()),
        )
    })
}

fn parse_uint(s: &str, field: &str, file: &str, line: usize) -> Result<u32, InputError> {
    s.parse().map_err(|_| {
        let reason = if s.is_empty() {
            "empty value; expected a non-negative integer".to_string()
        } else if s.starts_with('-') && s[1..].parse::<u64>().is_ok() {
            format!("must not be negative, got `{s}`")
        } else {
            format!("expected a non-negative integer, got `{s}`")
        };
        err(file, Some(line), Some(field), reason)
    })
}

fn parse_tokens(s: &str, field: &str, file: &str, line: usize) -> Result<u32, InputError> {
    parse_uint(s, field, file, line).map_err(|mut e| {
        if s.starts_with('-') && s[1..].parse::<u64>().is_ok() {
            e.reason = format!("negative token count `{s}`");
        }
        e
    })
}

fn parse_time(s: &str, field: &str, file: &str, line: usize) -> Result<f64, InputError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(err(
            file,
            Some(line),
            Some(field),
            format!("expected seconds from trace start, got `{s}`"),
        )),
    }
}

/// A parsed wall-clock timestamp: day number (days since 1970-01-01) and seconds into the day.
struct Stamp {
    year: i64,
    days: i64,
    hour: u32,
    sec_of_day: f64,
}

/// Parse `YYYY-MM-DD HH:MM:SS[.f…]` (a `T` separator is accepted too), checking ranges.
fn parse_stamp(s: &str, field: &str, file: &str, line: usize) -> Result<Stamp, InputError> {
    let bad = |why: &str| {
        err(
            file,
            Some(line),
            Some(field),
            format!("{why}: expected `YYYY-MM-DD HH:MM:SS[.fffffff]`, got `{s}`"),
        )
    };
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad("malformed timestamp"));
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = &b[r];
        d.iter().all(u8::is_ascii_digit).then(|| {
            d.iter()
                .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return Err(bad("malformed timestamp"));
    };
    let mut frac = 0.0;
    if b.len() > 19 {
        let digits = &b[20..];
        if b[19] != b'.' || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("malformed fractional seconds"));
        }
        let mut v = 0u64;
        let mut scale = 1.0f64;
        for &c in digits.iter().take(18) {
            v = v * 10 + u64::from(c - b'0');
            scale *= 10.0;
        }
        frac = v as f64 / scale;
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("date out of range"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("time out of range"));
    }
    Ok(Stamp {
        year,
        days: days_from_civil(year, month, day),
        hour,
        sec_of_day: f64::from(hour * 3600 + minute * 60 + second) + frac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn data(rel: &str) -> PathBuf {
        stratus_catalog::default_data_dir().join(rel)
    }

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "stratus-trace-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn check_trace(rel: &str, count: usize, rate: f64) {
        let reqs = load_llm_trace(&data(rel)).unwrap();
        assert_eq!(reqs.len(), count, "{rel}");
        assert_eq!(reqs[0].t_s, 0.0, "{rel}");
        assert!(reqs.windows(2).all(|w| w[0].t_s <= w[1].t_s), "{rel}");
        let span = reqs.last().unwrap().t_s;
        let mean = count as f64 / span;
        assert!(
            (mean - rate).abs() <= 0.05 * rate,
            "{rel}: mean rate {mean:.3} req/s, expected ≈{rate}"
        );
    }

    #[test]
    fn azure_code_trace() {
        // 8,819 data rows: the file has no trailing newline, so `wc -l` shows one line fewer.
        check_trace("llm_inference_traces/azure_llm_2023_code.csv", 8_819, 2.57);
    }

    #[test]
    fn azure_conv_trace() {
        check_trace("llm_inference_traces/azure_llm_2023_conv.csv", 19_366, 5.53);
    }

    #[test]
    fn mooncake_trace() {
        check_trace(
            "llm_inference_traces/mooncake_fast25/conversation_trace.jsonl",
            12_031,
            3.4,
        );
        let reqs = load_llm_trace(&data(
            "llm_inference_traces/mooncake_fast25/conversation_trace.jsonl",
        ))
        .unwrap();
        assert_eq!(reqs[0].input_tokens, 6758);
        assert_eq!(reqs[0].output_tokens, 500);
    }

    #[test]
    fn azure_first_row_values() {
        let reqs = load_llm_trace(&data("llm_inference_traces/azure_llm_2023_code.csv")).unwrap();
        assert_eq!(reqs[0].input_tokens, 4808);
        assert_eq!(reqs[0].output_tokens, 10);
        assert!((reqs[1].t_s - 0.052).abs() < 1e-6, "{}", reqs[1].t_s);
    }

    #[test]
    fn azure_crosses_midnight() {
        let dir = TempDir::new("midnight");
        let p = dir.write(
            "t.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-12-31 23:59:59.5000000,10,1\n\
             2024-01-01 00:00:00.2500000,20,2\n",
        );
        let reqs = load_llm_trace(&p).unwrap();
        assert_eq!(reqs.len(), 2);
        assert!((reqs[1].t_s - 0.75).abs() < 1e-9, "{}", reqs[1].t_s);
    }

    #[test]
    fn pod_list_default() {
        let path = data("gpu_cluster_traces/alibaba_gpu_v2023/openb_pod_list_default.csv");
        let (jobs, skipped) = load_pod_list(&path).unwrap();
        // 8,152 pods of which 7,064 request GPUs; one GPU pod has zero run time.
        assert_eq!(jobs.len() + skipped, 7_064);
        assert!(skipped <= 10, "skipped {skipped}");
        assert!(jobs.len() > 7_000);
        assert!(jobs.iter().all(|j| j.gpus >= 1 && j.duration_s > 0.0));
        assert!(jobs
            .windows(2)
            .all(|w| (w[0].arrival_s, &w[0].name) <= (w[1].arrival_s, &w[1].name)));
        assert!(jobs.iter().any(|j| j.gpus > 1));
        assert!(jobs.iter().any(|j| j.gpu_milli < 1000));
    }

    #[test]
    fn pod_list_rules() {
        let dir = TempDir::new("pods");
        let p = dir.write(
            "openb_pod_list_t.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n\
             b,1000,1024,2,1000,V100M16|V100M32,LS,Running,10,110,20\n\
             a,1000,1024,1,500,,BE,Pending,10,70,\n\
             cpu,1000,1024,0,0,,LS,Running,0,5,0\n\
             nodel,1000,1024,1,1000,,LS,Running,0,,0\n\
             zero,1000,1024,1,1000,,LS,Running,5,5,\n",
        );
        let (jobs, skipped) = load_pod_list(&p).unwrap();
        assert_eq!(skipped, 2);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].name, "a");
        assert_eq!(jobs[0].duration_s, 60.0);
        assert!(jobs[0].gpu_spec.is_empty());
        assert_eq!(jobs[1].name, "b");
        assert_eq!(jobs[1].duration_s, 90.0);
        assert_eq!(jobs[1].gpus, 2);
        assert_eq!(jobs[1].gpu_spec, vec!["V100M16", "V100M32"]);
    }

    #[test]
    fn carbon_2020_means() {
        for (file, want) in [
            ("fr_ci.csv", 56.0),
            ("gb_ci.csv", 215.0),
            ("ger_ci.csv", 313.0),
        ] {
            let path = data(&format!("carbon_intensity/hourly_lets_wait_awhile/{file}"));
            let v = load_carbon_series(&path, 2020).unwrap();
            assert_eq!(v.len(), 8784, "{file}");
            assert!(v.iter().all(|x| x.is_finite() && *x > 0.0), "{file}");
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            assert!(
                (mean - want).abs() <= 3.0,
                "{file}: mean {mean:.1}, expected ≈{want}"
            );
        }
    }

    #[test]
    fn carbon_fill_and_bounds() {
        let dir = TempDir::new("carbon");
        let p = dir.write(
            "c.csv",
            "Time,Carbon Intensity\n\
             2020-12-31 23:30:00,999\n\
             2021-01-01 02:00:00,10\n\
             2021-01-01 02:30:00,20\n\
             2021-01-01 04:15:00,40\n\
             2022-01-01 00:00:00,999\n",
        );
        let v = load_carbon_series(&p, 2021).unwrap();
        assert_eq!(v.len(), 8760);
        assert_eq!(&v[..6], &[15.0, 15.0, 15.0, 15.0, 40.0, 40.0]);
        assert_eq!(v[8759], 40.0);
        let e = load_carbon_series(&p, 2019).unwrap_err();
        assert!(e.reason.contains("2019"), "{e}");
    }

    #[test]
    fn node_list_gives_the_cluster_shape() {
        let n = load_node_list(&data(
            "gpu_cluster_traces/alibaba_gpu_v2023/openb_node_list_gpu_node.csv",
        ))
        .unwrap();
        let total: u32 = n.iter().map(|c| c.count).sum();
        assert_eq!(total, 1213, "GPU nodes per SOURCE.md");
        let g2 = n.iter().find(|c| c.model == "G2" && c.gpus == 8).unwrap();
        assert_eq!(g2.count, 549);
        let t4 = n.iter().find(|c| c.model == "T4" && c.gpus == 2).unwrap();
        assert_eq!(t4.count, 387);
    }

    #[test]
    fn servegen_profile_has_a_day_night_swing() {
        let dir = data("llm_inference_traces/alibaba_servegen/language/m-small");
        let p = load_rate_profile(&dir).unwrap();
        assert_eq!(p.len(), 2016, "14 days of 600-s windows");
        let mean = p.iter().sum::<f64>() / p.len() as f64;
        assert!((mean - 1.0).abs() < 1e-9);
        let max = p.iter().cloned().fold(0.0, f64::max);
        let min = p.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(max > 1.3 && min < 0.5, "max {max} min {min}");
        let e = load_rate_profile(&dir.join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("STRATUS_DATA"), "{e}");
    }

    #[test]
    fn missing_file_names_it() {
        let dir = TempDir::new("missing");
        for p in [dir.0.join("nope.csv"), dir.0.join("nope.jsonl")] {
            let e = load_llm_trace(&p).unwrap_err();
            assert_eq!(e.file, p.display().to_string());
            assert!(
                e.reason.contains("missing") && e.reason.contains("STRATUS_DATA"),
                "{e}"
            );
        }
        let p = dir.0.join("pods.csv");
        let e = load_pod_list(&p).unwrap_err();
        assert!(
            e.to_string().contains("pods.csv") && e.reason.contains("missing"),
            "{e}"
        );
        let e = load_carbon_series(&p, 2020).unwrap_err();
        assert!(e.reason.contains("missing"), "{e}");
    }

    #[test]
    fn malformed_azure_row() {
        let dir = TempDir::new("azure");
        let p = dir.write(
            "bad.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:17:03.9799600,4808,10\n\
             2023-11-16 18:17:03.97,abc,10\n",
        );
        let e = load_llm_trace(&p).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.field.as_deref(), Some("ContextTokens"), "{e}");
        assert_eq!(e.file, p.display().to_string());
        assert!(e.to_string().contains(":3: field `ContextTokens`"), "{e}");

        let p = dir.write(
            "badtime.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-31 18:17:03,1,1\n",
        );
        let e = load_llm_trace(&p).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(2), Some("TIMESTAMP")),
            "{e}"
        );

        let p = dir.write("nohdr.csv", "TIMESTAMP,Context,GeneratedTokens\n");
        let e = load_llm_trace(&p).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(1), Some("ContextTokens")),
            "{e}"
        );
    }

    #[test]
    fn truncated_jsonl_line() {
        let dir = TempDir::new("jsonl");
        let p = dir.write(
            "t.jsonl",
            "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}\n\
             {\"timestamp\": 5, \"input_length\": 10, \"output_length\": 5}\n\
             {\"timestamp\": 9, \"input_length\": 1\n",
        );
        let e = load_llm_trace(&p).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.reason.contains("JSON"), "{e}");
    }

    #[test]
    fn negative_token_count() {
        let dir = TempDir::new("neg");
        let p = dir.write(
            "t.jsonl",
            "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": -5}\n",
        );
        let e = load_llm_trace(&p).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(1), Some("output_length")),
            "{e}"
        );
        assert!(e.reason.contains("negative"), "{e}");

        let p = dir.write(
            "t.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,-3,10\n",
        );
        let e = load_llm_trace(&p).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(2), Some("ContextTokens")),
            "{e}"
        );
        assert!(e.reason.contains("negative"), "{e}");
    }

    #[test]
    fn unsupported_extension_and_empty() {
        let dir = TempDir::new("ext");
        let p = dir.write("t.parquet", "x");
        let e = load_llm_trace(&p).unwrap_err();
        assert_eq!(e.file, p.display().to_string());
        assert!(
            e.reason.contains(".csv") && e.reason.contains(".jsonl"),
            "{e}"
        );

        let p = dir.write("empty.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n");
        let e = load_llm_trace(&p).unwrap_err();
        assert!(e.reason.contains("no requests"), "{e}");
        let p = dir.write("empty.jsonl", "\n");
        assert!(load_llm_trace(&p).is_err());
    }
}
