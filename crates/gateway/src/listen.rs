//! Accepting connections without being exhausted by them: a cap on open connections (past it
//! a connection is answered 503 and closed at once), a deadline for a request's head (a
//! client that sends a head slowly, or never finishes it, is dropped), and an accept loop
//! that waits when the process runs out of file descriptors instead of spinning. HTTP/1
//! serves one request at a time per connection, so the cap also bounds requests in flight.
//! The gateway and the mock replica both accept this way.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits on what clients may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a client has to send a request's head.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// How long the accept loop waits after `e` before accepting again: a while when the process
/// or system is out of descriptors or memory (accepting again at once would fail again, at
/// full speed), not at all for an error of one connection.
pub fn accept_backoff(e: &std::io::Error) -> Option<Duration> {
    const EXHAUSTED: [i32; 4] = [
        24,  // EMFILE
        23,  // ENFILE
        105, // ENOBUFS
        12,  // ENOMEM
    ];
    match e.raw_os_error() {
        Some(code) if EXHAUSTED.contains(&code) => Some(Duration::from_millis(100)),
        _ => None,
    }
}

/// The answer to a connection past the cap.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Content-Type: application/json\r\nContent-Length: 84\r\nRetry-After: 1\r\n\r\n\
{\"error\":{\"message\":\"too many connections\",\"type\":\"overloaded\",\"code\":\"overloaded\"}}";

/// Accepts connections within the limits.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    /// The limits.
    pub limits: ConnLimits,
}

impl Acceptor {
    /// Accept on `listener` within `limits`.
    pub fn new(listener: TcpListener, limits: ConnLimits) -> Acceptor {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
        }
    }

    /// The next connection with a slot, holding it until the permit is dropped. Connections
    /// past the cap are answered 503 and closed here; accept errors are waited out.
    pub async fn next(&self) -> (TcpStream, std::net::SocketAddr, OwnedSemaphorePermit) {
        loop {
            let (mut stream, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    if let Some(wait) = accept_backoff(&e) {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return (stream, peer, permit),
                Err(_) => {
                    // Best effort, and never waited for.
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            let _ = stream.write_all(TOO_MANY).await;
                            let _ = stream.shutdown().await;
                        })
                        .await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_waited_out_and_other_errors_are_not() {
        for code in [24, 23, 105, 12] {
            assert!(
                accept_backoff(&std::io::Error::from_raw_os_error(code)).is_some(),
                "{code}"
            );
        }
        // ECONNABORTED: one connection's trouble.
        assert!(accept_backoff(&std::io::Error::from_raw_os_error(103)).is_none());
    }

    #[test]
    fn the_overload_answer_is_well_formed() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
