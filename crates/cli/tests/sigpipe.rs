//! See issue 15 (item 8): `main` restored SIGPIPE's default for every subcommand, so a client
//! that hung up while a server wrote to it killed the server silently (status 141). Servers
//! must survive any client; only printing commands may end on a closed pipe.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Close `s` with a reset (SO_LINGER 0), so the peer's next writes fail with EPIPE.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

const ASK: &str =
    "{\"model\":\"tiny\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

fn request() -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ASK}",
        ASK.len()
    )
}

#[test]
fn a_client_hanging_up_mid_stream_does_not_kill_the_mock_replica() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args([
            "mock-replica",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tokens",
            "200000",
            "--itl-ms",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mock-replica did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Clients that read a little and go, some with a reset, some with a plain close, many
    // at once (as a load generator ending its run does).
    std::thread::scope(|sc| {
        for t in 0..8 {
            sc.spawn(move || {
                for k in 0..25 {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let _ = s.write_all(request().as_bytes());
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    if (t + k) % 2 == 0 {
                        reset(s);
                    } else {
                        drop(s);
                    }
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.is_none(), "the mock replica died: {status:?}");
}

#[test]
fn a_printing_command_ends_quietly_on_a_closed_pipe() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["fleet", "show"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
