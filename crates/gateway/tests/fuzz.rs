//! Property-based fuzzing of the gateway's HTTP/1 front: requests built from valid and broken
//! parts (methods, paths, bodies, framings that smuggle or lie about length, malformed
//! headers) sent as raw bytes to a gateway in front of a mock replica. Whatever arrives, the
//! gateway answers or closes, and it forwards exactly the requests that are well formed:
//! never one its parser should have refused.

use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;
use stratus_gateway::Config;
use stratus_model::Format;
use stratus_testkit::mock::{self, Faults};

#[derive(Debug, Clone, Copy)]
struct Req {
    method: u8,
    path: u8,
    body: u8,
    framing: u8,
    header: u8,
}

fn reqs() -> impl Strategy<Value = Req> {
    (0u8..3, 0u8..4, 0u8..5, 0u8..8, 0u8..5).prop_map(|(method, path, body, framing, header)| Req {
        method,
        path,
        body,
        framing,
        header,
    })
}

impl Req {
    /// Whether a correct HTTP/1.1 front forwards it. A request framed two ways (length and
    /// chunked) is read as chunked, as RFC 9112 says, and its connection closed after the
    /// answer: a second request smuggled behind it is never read (checked below).
    fn should_forward(&self) -> bool {
        self.method == 0
            && self.path < 2
            && self.body == 0
            && matches!(self.framing, 0 | 3 | 5)
            && matches!(self.header, 0 | 4)
    }

    fn wire(&self) -> Vec<u8> {
        let method = ["POST", "GET", "P0ST"][self.method as usize];
        let path = [
            "/v1/chat/completions",
            "/v1/completions",
            "/v2/anything",
            "/v1/chat/completions/../../admin",
        ][self.path as usize];
        let body: &[u8] = match self.body {
            0 => br#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"prompt":"hi"}"#,
            1 => br#"{"messages":[{"role":"user","content":"hi"}]}"#,
            2 => b"model=tiny&prompt=hi",
            3 => br#"["tiny"]"#,
            _ => br#"{"model":"nope","prompt":"hi"}"#,
        };
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n");
        match self.header {
            1 => head.push_str("X-Bad: a\rb\r\n"),
            2 => head.push_str("NoColonHere\r\n"),
            3 => head.push_str("X-Folded: a\r\n continued\r\n"),
            4 => head.push_str(&format!("X-Long: {}\r\n", "a".repeat(1000))),
            _ => {}
        }
        let mut out = Vec::new();
        match self.framing {
            0 => head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len())),
            1 => head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len() - 5)),
            2 => head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len() + 50)),
            3 => head.push_str(&format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
                body.len()
            )),
            4 => head.push_str(&format!(
                "Content-Length: {}\r\nContent-Length: {}\r\n\r\n",
                body.len(),
                body.len() + 1
            )),
            5 | 6 => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
            _ => head.push_str("\r\n"),
        }
        out.extend_from_slice(head.as_bytes());
        match self.framing {
            3 | 5 => {
                out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            6 => {
                out.extend_from_slice(b"zz\r\n");
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            7 => {}
            _ => out.extend_from_slice(body),
        }
        out
    }
}

/// Send `wire` and read the answer's status (None: the connection closed without one).
/// `hang_up`: close the sending side after it (a body shorter than its length says).
fn exchange(addr: SocketAddr, wire: &[u8], hang_up: bool, answers: usize) -> Option<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(wire).unwrap();
    if hang_up {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let heads = buf.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
                if heads >= answers && buf.ends_with(b"\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

#[test]
fn the_gateway_forwards_only_well_formed_requests() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (m, gw) = rt.block_on(async {
        let m = mock::start("127.0.0.1:0".parse().unwrap(), "tiny", Faults::default(), 1)
            .await
            .unwrap();
        let y = format!(
            "listen: 127.0.0.1:0\nheader_timeout_ms: 2000\nreplicas:\n  - id: r0\n    url: {}\n    region: aws:us-east-1\n    models: [tiny]\n    cost_per_hour: 10\n",
            m.url()
        );
        let cfg = Config::parse("fuzz.yaml", &y, Format::Yaml).unwrap();
        let gw = stratus_gateway::start(cfg, stratus_catalog::builtin())
            .await
            .unwrap();
        (m, gw)
    });
    let addr = gw.addr;
    let mock = m.mock.clone();
    // The request space is small enough to try whole: every combination, then random ones
    // again through proptest's runner (with shrinking, should one fail).
    let check = |r: Req| -> Result<(), TestCaseError> {
        let before = mock.requests.load(Ordering::SeqCst);
        // Behind every request, a second, well-formed one on the same connection: it is read
        // only after a request whose framing left no doubt.
        let mut wire = r.wire();
        let follow = Req {
            method: 0,
            path: 0,
            body: 0,
            framing: 0,
            header: 0,
        };
        let pipelined = r.framing != 2;
        if pipelined {
            wire.extend(follow.wire());
        }
        // The follower is read only after a request that was itself complete and unambiguous
        // (hyper keeps such a connection open even when it answered 4xx).
        let clean = matches!(r.framing, 0 | 5 | 7) && matches!(r.header, 0 | 4);
        let follower = u64::from(pipelined && clean);
        let status = exchange(addr, &wire, r.framing == 2, 1 + follower as usize);
        let forwarded = mock.requests.load(Ordering::SeqCst) - before;
        prop_assert_eq!(
            forwarded,
            u64::from(r.should_forward()) + follower,
            "{:?} answered {:?}",
            r,
            status
        );
        prop_assert!(
            !(r.framing == 3 && forwarded > 1),
            "a request smuggled behind a doubly framed one was read: {:?}",
            r
        );
        if r.should_forward() {
            prop_assert_eq!(status, Some(200), "{:?}", r);
        } else if let Some(s) = status {
            prop_assert!(s >= 400, "{:?} answered {}", r, s);
        }
        Ok(())
    };
    let mut result = Ok(());
    'all: for method in 0..3 {
        for path in 0..4 {
            for body in 0..5 {
                for framing in 0..8 {
                    for header in 0..5 {
                        let r = Req {
                            method,
                            path,
                            body,
                            framing,
                            header,
                        };
                        if let Err(e) = check(r) {
                            result = Err(format!("{e}"));
                            break 'all;
                        }
                    }
                }
            }
        }
    }
    if result.is_ok() {
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(15),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        });
        result = runner.run(&reqs(), check).map_err(|e| e.to_string());
    }
    rt.block_on(gw.shutdown());
    m.kill();
    if let Err(e) = result {
        panic!("{e}");
    }
}
