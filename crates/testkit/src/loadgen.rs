//! The load generator of `stratus bench gateway`: the same code drives the mock replica
//! directly, through stratus and through nginx, so their numbers compare.
//!
//! * Open loop at a fixed rate: request k is due at `k / rate`; each of `connections` workers
//!   takes the next due request, waits for its time (tokio's timer: about 1 ms granularity, so
//!   requests leave in small bursts) and records the latency from sending to the last byte. The
//!   delay between a request's due time and its sending is recorded apart (`late`), so a
//!   target that cannot keep up shows as lateness rather than hiding it.
//! * Closed loop: every worker sends back to back for a duration; requests per second is the
//!   target's throughput with that many connections.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where.
    pub addr: SocketAddr,
    /// Path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// JSON body.
    pub body: Bytes,
    /// `Authorization` header value, if any.
    pub auth: Option<String>,
    /// Make every request's body distinct: the request's number is spliced in at the first
    /// `{n}` of `body` (for runs with millions of distinct prompt prefixes).
    pub distinct: bool,
}

impl Target {
    fn body_for(&self, k: u64) -> Bytes {
        if !self.distinct {
            return self.body.clone();
        }
        let s = String::from_utf8_lossy(&self.body);
        Bytes::from(s.replacen("{n}", &k.to_string(), 1))
    }
}

/// Latency summary of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests answered with 2xx.
    pub ok: u64,
    /// Requests that failed (connection error or non-2xx).
    pub errors: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Latency percentiles (send to last byte), microseconds: p50, p90, p99, p99.9, max.
    pub latency_us: [f64; 5],
    /// Dispatch lateness p99 (due time to send), microseconds.
    pub late_p99_us: f64,
}

impl Report {
    /// Answered requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One request on `send`; `Ok(true)` for a 2xx.
async fn once(send: &mut http1::SendRequest<Full<Bytes>>, t: &Target, k: u64) -> Result<bool, ()> {
    send.ready().await.map_err(|_| ())?;
    let mut b = Request::post(t.path.as_str())
        .header("host", t.addr.to_string())
        .header("content-type", "application/json");
    if let Some(a) = &t.auth {
        b = b.header("authorization", a.as_str());
    }
    let req = b.body(Full::new(t.body_for(k))).map_err(|_| ())?;
    let resp = send.send_request(req).await.map_err(|_| ())?;
    let ok = resp.status().is_success();
    resp.into_body().collect().await.map_err(|_| ())?;
    Ok(ok)
}

/// One worker's outcomes.
#[derive(Default)]
struct Tally {
    lat: Vec<u64>,
    ok: u64,
    errors: u64,
}

impl Tally {
    /// Record one request sent at `sent`; a transport error drops the connection.
    fn record(
        &mut self,
        r: Result<bool, ()>,
        sent: Instant,
        send: &mut Option<http1::SendRequest<Full<Bytes>>>,
    ) {
        match r {
            Ok(true) => {
                self.ok += 1;
                self.lat.push(sent.elapsed().as_micros() as u64);
            }
            Ok(false) => self.errors += 1,
            Err(()) => {
                self.errors += 1;
                *send = None;
            }
        }
    }
}

fn percentiles(mut v: Vec<u64>) -> [f64; 5] {
    if v.is_empty() {
        return [0.0; 5];
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64;
    [
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        *v.last().expect("non-empty") as f64,
    ]
}

/// Send request `k`, reconnecting first if the last request broke the connection.
async fn attempt(
    send: &mut Option<http1::SendRequest<Full<Bytes>>>,
    t: &Target,
    k: u64,
) -> Result<bool, ()> {
    if send.is_none() {
        *send = connect(t.addr).await.ok();
    }
    match send.as_mut() {
        Some(s) => once(s, t, k).await,
        None => Err(()),
    }
}

/// Sum the workers' tallies into a report of a run that began at `start`.
async fn collect(
    workers: Vec<tokio::task::JoinHandle<(Tally, Vec<u64>)>>,
    start: Instant,
) -> Report {
    let mut lat = Vec::new();
    let mut late = Vec::new();
    let mut rep = Report::default();
    for w in workers {
        if let Ok((tally, l)) = w.await {
            lat.extend(tally.lat);
            late.extend(l);
            rep.ok += tally.ok;
            rep.errors += tally.errors;
        }
    }
    rep.seconds = start.elapsed().as_secs_f64();
    rep.latency_us = percentiles(lat);
    rep.late_p99_us = percentiles(late)[2];
    rep
}

/// Open loop: `rate` requests per second for `duration` over `connections` connections.
pub async fn open_loop(t: &Target, rate: f64, duration: Duration, connections: usize) -> Report {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let next = next.clone();
        let t = t.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut late = Vec::new();
            let mut send = connect(t.addr).await.ok();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                late.push((sent - due).as_micros() as u64);
                let r = attempt(&mut send, &t, k).await;
                tally.record(r, sent, &mut send);
            }
            (tally, late)
        }));
    }
    collect(workers, start).await
}

/// Closed loop: `connections` workers back to back for `duration`, or until `limit`
/// requests have been sent.
pub async fn closed_loop(
    t: &Target,
    duration: Duration,
    connections: usize,
    limit: Option<u64>,
) -> Report {
    let start = Instant::now();
    let end = start + duration;
    let next = Arc::new(AtomicU64::new(0));
    let limit = limit.unwrap_or(u64::MAX);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let t = t.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut send = connect(t.addr).await.ok();
            while Instant::now() < end {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= limit {
                    break;
                }
                let sent = Instant::now();
                let r = attempt(&mut send, &t, k).await;
                let broken = r.is_err();
                tally.record(r, sent, &mut send);
                if broken {
                    // A target that refuses connections is not hammered in a tight loop.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (tally, Vec::new())
        }));
    }
    collect(workers, start).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u64> = (1..=1000).collect();
        let p = percentiles(v);
        assert_eq!(p, [500.0, 900.0, 990.0, 999.0, 1000.0]);
        assert_eq!(percentiles(vec![]), [0.0; 5]);
    }
}
