//! The gateway's HTTP/1.1 client to replicas: pooled keep-alive connections that the request's
//! own task reads directly. Answers are decoded (content-length or chunked) as bytes arrive,
//! so everything a read returns goes to the client in one frame, without a connection task or
//! a channel between the replica's socket and the client's (what a general-purpose client
//! such as hyper's puts there, one hand-over per chunk).

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Idle connections kept per replica.
const MAX_IDLE: usize = 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;

/// Keep-alive connections to one replica.
#[derive(Debug)]
pub struct Pool {
    /// `host:port`.
    pub authority: String,
    /// Idle connections with their (empty) read buffers, reused to spare an allocation.
    idle: Mutex<Vec<(TcpStream, BytesMut)>>,
}

impl Pool {
    /// An empty pool for `authority`.
    pub fn new(authority: &str) -> Pool {
        Pool {
            authority: authority.to_string(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<(TcpStream, BytesMut)> {
        self.idle.lock().expect("pool lock").pop()
    }

    /// Return a connection whose last answer was read completely.
    pub fn put(&self, conn: Idle) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < MAX_IDLE {
            idle.push((conn.0, conn.1));
        }
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        let s = TcpStream::connect(&self.authority).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Send `head` + `body` and read the response head. A pooled connection the replica had
    /// closed meanwhile is replaced by a fresh one transparently (that is not a failure of the
    /// replica); any other error is.
    pub async fn send(&self, head: &[u8], body: &[u8]) -> io::Result<Response> {
        if let Some((s, buf)) = self.take() {
            match exchange(s, buf, head, body).await {
                Ok(r) => return Ok(r),
                Err(Stale::No(e)) => return Err(e),
                Err(Stale::Yes) => {}
            }
        }
        let s = self.connect().await?;
        exchange(s, BytesMut::with_capacity(8 << 10), head, body)
            .await
            .map_err(|e| match e {
                Stale::No(e) => e,
                Stale::Yes => io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the replica closed the connection without answering",
                ),
            })
    }
}

enum Stale {
    /// Closed before any byte of an answer: retry on a fresh connection.
    Yes,
    No(io::Error),
}

/// A connection and its read buffer, back to the pool.
pub struct Idle(TcpStream, BytesMut);

async fn exchange(
    mut s: TcpStream,
    mut buf: BytesMut,
    head: &[u8],
    body: &[u8],
) -> Result<Response, Stale> {
    let write = async {
        if body.len() <= 16 << 10 {
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            s.write_all(&all).await
        } else {
            s.write_all(head).await?;
            s.write_all(body).await
        }
    };
    if let Err(e) = write.await {
        return Err(match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Stale::Yes,
            _ => Stale::No(e),
        });
    }
    buf.clear();
    loop {
        let n = match tokio::io::AsyncReadExt::read_buf(&mut s, &mut buf).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Stale::Yes)
            }
            Err(e) => return Err(Stale::No(e)),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                Stale::Yes
            } else {
                Stale::No(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the replica closed the connection inside the response head",
                ))
            });
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = r.code.unwrap_or(0);
                let mut out_headers = hyper::HeaderMap::with_capacity(r.headers.len());
                let mut framing = Framing::Close;
                let mut keep_alive = r.version == Some(1);
                for h in r.headers.iter() {
                    let Ok(name) = hyper::header::HeaderName::from_bytes(h.name.as_bytes()) else {
                        return Err(Stale::No(bad("bad header name")));
                    };
                    match name.as_str() {
                        "content-length" => {
                            let n = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| Stale::No(bad("bad content-length")))?;
                            if !matches!(framing, Framing::Chunked(_)) {
                                framing = Framing::Length(n);
                            }
                        }
                        "transfer-encoding" if h.value.eq_ignore_ascii_case(b"chunked") => {
                            framing = Framing::Chunked(Chunk::Size(0, false));
                        }
                        "connection" if h.value.eq_ignore_ascii_case(b"close") => {
                            keep_alive = false;
                        }
                        _ => {}
                    }
                    // Hop-by-hop headers and the framing stay with this connection.
                    if matches!(
                        name.as_str(),
                        "connection"
                            | "keep-alive"
                            | "transfer-encoding"
                            | "te"
                            | "upgrade"
                            | "content-length"
                    ) {
                        continue;
                    }
                    let Ok(value) = hyper::header::HeaderValue::from_bytes(h.value) else {
                        return Err(Stale::No(bad("bad header value")));
                    };
                    out_headers.append(name, value);
                }
                if status == 204 || status == 304 || (100..200).contains(&status) {
                    framing = Framing::Length(0);
                }
                if matches!(framing, Framing::Close) {
                    keep_alive = false;
                }
                buf.advance(len);
                return Ok(Response {
                    status,
                    headers: out_headers,
                    body: Reader {
                        stream: Some(s),
                        buf,
                        framing,
                        keep_alive,
                    },
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(Stale::No(bad("response head too large"))),
            Err(e) => return Err(Stale::No(bad(&format!("bad response head: {e}")))),
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// A response head and the reader of its body.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// End-to-end headers (hop-by-hop ones and the framing removed).
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Reader,
}

/// How a body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the replica closes the connection.
    Close,
    /// Read completely.
    Done,
}

/// Chunked decoding state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the size line: the size so far, and whether an extension (`;…`) began.
    Size(u64, bool),
    /// Expecting the LF of the size line.
    SizeLf(u64),
    /// This many data bytes remain in the chunk.
    Data(u64),
    /// Expecting CR then LF after a chunk's data (`true` once the CR was seen).
    DataEnd(bool),
    /// After the last chunk: trailer lines until an empty one (`true`: inside a line).
    Trailers(bool),
}

/// Reads one response body off its connection.
pub struct Reader {
    stream: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
}

/// What [`Reader::poll_data`] yields.
pub enum Read {
    /// Body bytes (everything decodable from what has arrived).
    Data(Bytes),
    /// The body is complete; the connection, when reusable, is handed back.
    End(Option<Idle>),
}

impl Reader {
    /// Decode what is buffered into `out`; whether the body is complete.
    fn decode(&mut self, out: &mut BytesMut) -> io::Result<bool> {
        loop {
            match self.framing {
                Framing::Done => return Ok(true),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(true);
                }
                Framing::Length(n) => {
                    let take = (n as usize).min(self.buf.len());
                    out.extend_from_slice(&self.buf.split_to(take));
                    self.framing = Framing::Length(n - take as u64);
                    if n as usize > take {
                        return Ok(false);
                    }
                }
                Framing::Close => {
                    out.extend_from_slice(&self.buf.split());
                    return Ok(false);
                }
                Framing::Chunked(c) => {
                    if self.buf.is_empty() {
                        return Ok(false);
                    }
                    let next = match c {
                        Chunk::Size(n, ext) => {
                            let b = self.buf.get_u8();
                            match b {
                                b'\r' => Chunk::SizeLf(n),
                                b'\n' => self.after_size(n),
                                b';' => Chunk::Size(n, true),
                                _ if ext => Chunk::Size(n, true),
                                b' ' | b'\t' => Chunk::Size(n, ext),
                                _ => {
                                    let d = (b as char)
                                        .to_digit(16)
                                        .ok_or_else(|| bad("bad chunk size"))?;
                                    let n = n
                                        .checked_mul(16)
                                        .and_then(|n| n.checked_add(d as u64))
                                        .ok_or_else(|| bad("chunk size overflows"))?;
                                    Chunk::Size(n, false)
                                }
                            }
                        }
                        Chunk::SizeLf(n) => {
                            if self.buf.get_u8() != b'\n' {
                                return Err(bad("bad chunk size line"));
                            }
                            self.after_size(n)
                        }
                        Chunk::Data(n) => {
                            let take = (n as usize).min(self.buf.len());
                            out.extend_from_slice(&self.buf.split_to(take));
                            if n as usize > take {
                                Chunk::Data(n - take as u64)
                            } else {
                                Chunk::DataEnd(false)
                            }
                        }
                        Chunk::DataEnd(cr) => match (cr, self.buf.get_u8()) {
                            (false, b'\r') => Chunk::DataEnd(true),
                            (_, b'\n') => Chunk::Size(0, false),
                            _ => return Err(bad("missing CRLF after chunk data")),
                        },
                        Chunk::Trailers(in_line) => match self.buf.get_u8() {
                            b'\r' => Chunk::Trailers(in_line),
                            b'\n' if !in_line => {
                                self.framing = Framing::Done;
                                continue;
                            }
                            b'\n' => Chunk::Trailers(false),
                            _ => Chunk::Trailers(true),
                        },
                    };
                    if !matches!(self.framing, Framing::Done) {
                        self.framing = Framing::Chunked(next);
                    }
                }
            }
        }
    }

    fn after_size(&self, n: u64) -> Chunk {
        if n == 0 {
            Chunk::Trailers(false)
        } else {
            Chunk::Data(n)
        }
    }

    /// The next body bytes, the end, or an error (the connection is then dropped).
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Read>> {
        let mut out = BytesMut::new();
        loop {
            let done = self.decode(&mut out)?;
            if done {
                let conn = if self.keep_alive && self.buf.is_empty() {
                    self.stream
                        .take()
                        .map(|s| Idle(s, std::mem::take(&mut self.buf)))
                } else {
                    self.stream = None;
                    None
                };
                if !out.is_empty() {
                    // Hand the data out first; the next call reports the end.
                    if let Some(Idle(s, b)) = conn {
                        self.stream = Some(s);
                        self.buf = b;
                    }
                    return Poll::Ready(Ok(Read::Data(out.freeze())));
                }
                return Poll::Ready(Ok(Read::End(conn)));
            }
            if !out.is_empty() {
                return Poll::Ready(Ok(Read::Data(out.freeze())));
            }
            let Some(s) = self.stream.as_mut() else {
                return Poll::Ready(Err(bad("body read after its end")));
            };
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 << 10);
            }
            let before = self.buf.len();
            {
                let spare = self.buf.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                match Pin::new(&mut *s).poll_read(cx, &mut rb) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        self.stream = None;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        // SAFETY: `poll_read` initialised the first `n` spare bytes.
                        unsafe { self.buf.set_len(before + n) };
                    }
                }
            }
            if self.buf.len() == before {
                // End of the connection.
                self.stream = None;
                if self.framing == Framing::Close {
                    self.framing = Framing::Done;
                    return Poll::Ready(Ok(Read::End(None)));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the replica closed the connection mid-answer",
                )));
            }
        }
    }

    /// Wait for the next read (for the async parts of the proxy).
    pub async fn next(&mut self) -> io::Result<Read> {
        std::future::poll_fn(|cx| self.poll_data(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(framing: Framing, bytes: &[u8]) -> Reader {
        Reader {
            stream: None,
            buf: BytesMut::from(bytes),
            framing,
            keep_alive: false,
        }
    }

    #[test]
    fn chunked_bodies_decode_wherever_they_are_cut() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for cut in 1..wire.len() {
            let mut r = reader(Framing::Chunked(Chunk::Size(0, false)), b"");
            let mut out = BytesMut::new();
            let mut done = false;
            for part in wire.chunks(cut) {
                assert!(!done);
                r.buf.extend_from_slice(part);
                done = r.decode(&mut out).unwrap();
            }
            assert!(done, "cut {cut}");
            assert_eq!(&out[..], b"hello, world");
            assert!(r.buf.is_empty());
        }
        let mut r = reader(Framing::Chunked(Chunk::Size(0, false)), b"zz\r\n");
        assert!(r.decode(&mut BytesMut::new()).is_err());
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut r = reader(Framing::Length(5), b"hello");
        let mut out = BytesMut::new();
        assert!(r.decode(&mut out).unwrap());
        assert_eq!(&out[..], b"hello");
        let mut r = reader(Framing::Length(10), b"hello");
        let mut out = BytesMut::new();
        assert!(!r.decode(&mut out).unwrap());
        assert_eq!(r.framing, Framing::Length(5));
    }

    /// Decode `wire` fed in pieces of the given sizes (cycled): the body, and whether it
    /// ended, failed or is still open.
    fn decode_in_pieces(wire: &[u8], sizes: &[usize]) -> (Vec<u8>, Result<bool, ()>) {
        let mut r = reader(Framing::Chunked(Chunk::Size(0, false)), b"");
        let mut out = BytesMut::new();
        let mut at = 0;
        let mut k = 0;
        while at < wire.len() {
            let n = sizes[k % sizes.len()].max(1).min(wire.len() - at);
            k += 1;
            r.buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            match r.decode(&mut out) {
                Ok(true) => return (out.to_vec(), Ok(true)),
                Ok(false) => {}
                Err(_) => return (out.to_vec(), Err(())),
            }
        }
        (out.to_vec(), Ok(false))
    }

    /// A chunked body: its wire bytes and the data it carries.
    fn chunked() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, Vec<u8>)> {
        use proptest::prelude::*;
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(chunks, ext, trailer)| {
                let mut wire = Vec::new();
                let mut data = Vec::new();
                for c in &chunks {
                    wire.extend_from_slice(format!("{:x}", c.len()).as_bytes());
                    if ext {
                        wire.extend_from_slice(b";name=value");
                    }
                    wire.extend_from_slice(b"\r\n");
                    wire.extend_from_slice(c);
                    wire.extend_from_slice(b"\r\n");
                    data.extend_from_slice(c);
                }
                wire.extend_from_slice(b"0\r\n");
                if trailer {
                    wire.extend_from_slice(b"x-trailer: 1\r\n");
                }
                wire.extend_from_slice(b"\r\n");
                (wire, data)
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2048,
            rng_seed: proptest::test_runner::RngSeed::Fixed(15),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// A replica's chunked body decodes to what it carries, however its bytes arrive.
        #[test]
        fn chunked_bodies_decode_to_their_data_however_cut(
            (wire, data) in chunked(),
            sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let (out, end) = decode_in_pieces(&wire, &sizes);
            proptest::prop_assert_eq!(end, Ok(true));
            proptest::prop_assert_eq!(out, data);
        }

        /// Damaged or arbitrary bytes never panic the decoder, and where they are cut changes
        /// nothing: the same data and the same outcome (ended, failed, or waiting).
        #[test]
        fn damaged_chunked_bodies_decode_the_same_however_cut(
            (wire, _) in chunked(),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..4),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let mut wire = wire;
            for (at, b) in flips {
                if !wire.is_empty() {
                    let i = at % wire.len();
                    wire[i] = b;
                }
            }
            wire.extend_from_slice(&noise);
            let whole = decode_in_pieces(&wire, &[wire.len().max(1)]);
            let cut = decode_in_pieces(&wire, &sizes);
            proptest::prop_assert_eq!(whole, cut);
        }
    }
}
