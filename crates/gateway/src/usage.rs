//! What the gateway reads from requests (model, streaming, the prompt prefix) and from
//! responses (the token usage the replica reports), without holding a whole stream in memory.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// What routing and accounting need from a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestInfo {
    /// `model`.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// Hash of the prompt's first bytes (messages' roles and text in order, or `prompt`).
    pub prefix: Option<u64>,
    /// The body to forward: the original bytes, or, for a stream that did not ask for usage,
    /// the body with `stream_options.include_usage` set so tokens can be debited.
    pub forward: Option<Vec<u8>>,
    /// Characters of the prompt's text (messages' contents, or the prompt): what the prompt's
    /// tokens are estimated from when a replica's usage never arrives.
    pub prompt_chars: u64,
}

impl RequestInfo {
    /// Prompt tokens estimated from the text, at about four characters a token.
    pub fn prompt_tokens_estimate(&self) -> u64 {
        self.prompt_chars.div_ceil(4)
    }
}

/// The fields of a request body the gateway reads, borrowed from the body where possible;
/// everything else is skipped unparsed.
#[derive(Deserialize)]
struct Req<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    messages: Option<Vec<Msg<'a>>>,
    #[serde(borrow, default)]
    prompt: Option<Prompt<'a>>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Parse a completions or chat-completions body; `Err` is the client-facing reason.
pub fn inspect(body: &[u8], prefix_bytes: usize) -> Result<RequestInfo, String> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(if serde_json::from_slice::<IgnoredAny>(body).is_ok() {
            "request body must be a JSON object".to_string()
        } else {
            "request body is not JSON".to_string()
        });
    }
    let req: Req = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            format!("request body: {e}")
        } else {
            format!("request body is not JSON: {e}")
        }
    })?;
    let model = req
        .model
        .ok_or_else(|| "`model` (a string) is required".to_string())?
        .into_owned();
    let stream = req.stream.unwrap_or(false);
    let mut prompt_chars: u64 = 0;
    if let Some(msgs) = &req.messages {
        for m in msgs {
            match &m.content {
                Some(Content::Text(s)) => prompt_chars += s.chars().count() as u64,
                Some(Content::Parts(parts)) => {
                    for p in parts.iter().filter_map(|p| p.text.as_ref()) {
                        prompt_chars += p.chars().count() as u64;
                    }
                }
                _ => {}
            }
        }
    } else {
        match &req.prompt {
            Some(Prompt::Text(s)) => prompt_chars += s.chars().count() as u64,
            Some(Prompt::Many(a)) => {
                prompt_chars += a.iter().map(|s| s.chars().count() as u64).sum::<u64>()
            }
            _ => {}
        }
    }
    // The prompt's first bytes: roles and text of the messages in order, or the prompt.
    let mut text = String::new();
    if let Some(msgs) = &req.messages {
        for m in msgs {
            if text.len() >= prefix_bytes {
                break;
            }
            if let Some(r) = &m.role {
                text.push_str(r);
                text.push('\n');
            }
            match &m.content {
                Some(Content::Text(s)) => text.push_str(s),
                Some(Content::Parts(parts)) => {
                    for p in parts {
                        if let Some(t) = &p.text {
                            text.push_str(t);
                        }
                    }
                }
                _ => {}
            }
            text.push('\n');
        }
    } else {
        match &req.prompt {
            Some(Prompt::Text(s)) => text.push_str(s),
            Some(Prompt::Many(a)) => {
                if let Some(s) = a.first() {
                    text.push_str(s);
                }
            }
            _ => {}
        }
    }
    let prefix = (!text.is_empty()).then(|| {
        let mut end = text.len().min(prefix_bytes);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        crate::route::hash_bytes(&text.as_bytes()[..end])
    });
    let wants_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let forward = if stream && !wants_usage {
        // Rare path: rewrite the body with usage requested.
        let mut v: Value =
            serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
        if let Some(obj) = v.as_object_mut() {
            let so = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if !so.is_object() {
                *so = Value::Object(Default::default());
            }
            if let Some(so) = so.as_object_mut() {
                so.insert("include_usage".into(), Value::Bool(true));
            }
        }
        Some(serde_json::to_vec(&v).expect("a Value serialises"))
    } else {
        None
    };
    Ok(RequestInfo {
        model,
        stream,
        prefix,
        forward,
        prompt_chars,
    })
}

/// Tokens a replica reported for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `prompt_tokens`.
    pub prompt: u64,
    /// `completion_tokens`.
    pub completion: u64,
    /// `prompt_tokens_details.cached_tokens`: prompt tokens served from the replica's cache.
    pub cached: u64,
}

impl Usage {
    /// Prompt plus completion: what the token limit counts.
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// Longest SSE line or JSON body the scanner keeps; beyond it usage is not read (the bytes
/// still pass through untouched).
const MAX_KEEP: usize = 1 << 20;

/// Incremental reader of a response body: SSE events line by line, or a JSON body whole.
#[derive(Debug, Default)]
pub struct Scanner {
    sse: bool,
    buf: Vec<u8>,
    overflow: bool,
    /// The last usage seen.
    pub usage: Option<Usage>,
    /// Stream events seen that carry output (about one token each): what the completion's
    /// tokens are estimated from when the usage event never arrives.
    pub events: u64,
}

impl Scanner {
    /// A scanner for an SSE (`text/event-stream`) or a plain JSON body.
    pub fn new(sse: bool) -> Scanner {
        Scanner {
            sse,
            ..Default::default()
        }
    }

    /// Feed the next bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if !self.sse {
            if self.buf.len() + data.len() <= MAX_KEEP {
                self.buf.extend_from_slice(data);
            } else {
                self.overflow = true;
            }
            return;
        }
        let mut rest = data;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(nl);
            if self.overflow {
                self.overflow = false;
                self.buf.clear();
            } else if self.buf.is_empty() {
                self.line(line);
            } else {
                self.buf.extend_from_slice(line);
                let whole = std::mem::take(&mut self.buf);
                self.line(&whole);
            }
            rest = &tail[1..];
        }
        if !rest.is_empty() {
            if self.buf.len() + rest.len() <= MAX_KEEP {
                self.buf.extend_from_slice(rest);
            } else {
                self.overflow = true;
                self.buf.clear();
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data != b"[DONE]" && USAGE_KEY.find(data).is_none() {
            self.events += 1;
        }
        // Parse only the events that can carry usage.
        if USAGE_KEY.find(data).is_some() && USAGE_NULL.find(data).is_none() {
            if let Ok(ev) = serde_json::from_slice::<UsageEvent>(data) {
                if let Some(u) = ev.into_usage() {
                    self.usage = Some(u);
                }
            }
        }
    }

    /// Call at the end of the body: a JSON body is parsed now.
    pub fn finish(&mut self) {
        if !self.sse && !self.overflow {
            if let Ok(ev) = serde_json::from_slice::<UsageEvent>(&self.buf) {
                self.usage = ev.into_usage();
            }
            self.buf = Vec::new();
        }
    }
}

static USAGE_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
static USAGE_NULL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\":null"));

/// The part of a response or stream event that carries usage; the rest is skipped unparsed.
///
/// llama.cpp's server does not fill `prompt_tokens_details`; it reports the prompt tokens it
/// actually evaluated as `timings.prompt_n`, and the rest of the prompt came from its cache.
#[derive(Deserialize)]
struct UsageEvent {
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(default)]
    timings: Option<Timings>,
}

#[derive(Deserialize)]
struct Timings {
    #[serde(default)]
    prompt_n: Option<i64>,
}

impl UsageEvent {
    fn into_usage(self) -> Option<Usage> {
        let u = self.usage?;
        let from_timings = self
            .timings
            .and_then(|t| t.prompt_n)
            .filter(|&n| n >= 0)
            .map(|n| u.prompt_tokens.saturating_sub(n as u64));
        let mut usage = Usage::from(u);
        if usage.cached == 0 {
            usage.cached = from_timings.unwrap_or(0);
        }
        Some(usage)
    }
}

#[derive(Deserialize)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<UsageJson> for Usage {
    fn from(u: UsageJson) -> Usage {
        Usage {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            cached: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        }
    }
}

/// The SSE event that ends a stream cut mid-way, in OpenAI's error shape, so clients raise a
/// clear error rather than mistaking a truncated answer for a whole one.
pub fn stream_error_event(message: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "error": {
            "message": message,
            "type": "upstream_error",
            "code": "replica_disconnected",
        }
    });
    format!("data: {v}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_requests_yield_model_prefix_and_usage_injection() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"hi"}]}"#;
        let i = inspect(body, 256).unwrap();
        assert_eq!(i.model, "m");
        assert!(i.stream);
        let fwd: Value = serde_json::from_slice(i.forward.as_ref().unwrap()).unwrap();
        assert_eq!(fwd["stream_options"]["include_usage"], true);
        // Same first bytes, same prefix; a different system prompt, another.
        let b2 = br#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"hi"}]}"#;
        let i2 = inspect(b2, 256).unwrap();
        assert_eq!(i.prefix, i2.prefix);
        assert!(i2.forward.is_none(), "non-streaming bodies pass unchanged");
        let b3 = br#"{"model":"m","messages":[{"role":"system","content":"You are verbose."}]}"#;
        assert_ne!(inspect(b3, 256).unwrap().prefix, i.prefix);
        // Only the first `prefix_bytes` count.
        let long_a = format!(r#"{{"model":"m","prompt":"{}A"}}"#, "x".repeat(300));
        let long_b = format!(r#"{{"model":"m","prompt":"{}B"}}"#, "x".repeat(300));
        assert_eq!(
            inspect(long_a.as_bytes(), 256).unwrap().prefix,
            inspect(long_b.as_bytes(), 256).unwrap().prefix
        );
        // A client that asked for usage is forwarded byte for byte.
        let asked =
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"prompt":"x"}"#;
        assert!(inspect(asked, 256).unwrap().forward.is_none());
    }

    #[test]
    fn bad_bodies_get_a_reason() {
        assert!(inspect(b"not json", 64).unwrap_err().contains("not JSON"));
        assert!(inspect(b"[1]", 64).unwrap_err().contains("object"));
        assert!(inspect(br#"{"messages":[]}"#, 64)
            .unwrap_err()
            .contains("model"));
    }

    #[test]
    fn usage_is_read_from_sse_split_anywhere_and_from_json() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,",
            "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for cut in [1, 3, 17, 64, stream.len()] {
            let mut s = Scanner::new(true);
            for part in stream.chunks(cut) {
                s.feed(part);
            }
            s.finish();
            assert_eq!(
                s.usage,
                Some(Usage {
                    prompt: 7,
                    completion: 2,
                    cached: 4
                })
            );
        }
        // llama.cpp's server: cached tokens from `timings.prompt_n`.
        let mut l = Scanner::new(true);
        l.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":4},\"timings\":{\"prompt_n\":6}}\n\n");
        assert_eq!(l.usage.unwrap().cached, 24);
        let mut j = Scanner::new(false);
        j.feed(br#"{"choices":[],"usage":{"prompt_tokens":3,"#);
        j.feed(br#""completion_tokens":5}}"#);
        j.finish();
        assert_eq!(j.usage.unwrap().total(), 8);
    }

    #[test]
    fn the_error_event_is_openai_shaped() {
        let e = stream_error_event("replica r1 went away");
        let s = String::from_utf8(e).unwrap();
        assert!(s.starts_with("data: {") && s.ends_with("\n\n"));
        let v: Value = serde_json::from_str(s.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(v["error"]["message"], "replica r1 went away");
    }

    /// An SSE stream: delta events (each with some text), then maybe a usage event, then
    /// `[DONE]`; with `\n` or `\r\n` line ends.
    fn stream() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, u64, Option<Usage>)> {
        use proptest::prelude::*;
        (
            prop::collection::vec("[a-z ]{0,12}", 0..30),
            prop::option::of((0u64..5000, 0u64..5000)),
            any::<bool>(),
        )
            .prop_map(|(deltas, usage, crlf)| {
                let nl = if crlf { "\r\n" } else { "\n" };
                let mut s = String::new();
                for d in &deltas {
                    let ev = serde_json::json!({"choices": [{"delta": {"content": d}}]});
                    s.push_str(&format!("data: {ev}{nl}{nl}"));
                }
                let u = usage.map(|(p, c)| {
                    let ev = serde_json::json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}});
                    s.push_str(&format!("data: {ev}{nl}{nl}"));
                    Usage { prompt: p, completion: c, cached: 0 }
                });
                s.push_str(&format!("data: [DONE]{nl}{nl}"));
                (s.into_bytes(), deltas.len() as u64, u)
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 1024,
            rng_seed: proptest::test_runner::RngSeed::Fixed(15),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// The usage read from a stream, and its count of output events, do not depend on
        /// where its bytes were cut.
        #[test]
        fn streams_are_read_the_same_however_cut(
            (wire, events, usage) in stream(),
            sizes in proptest::collection::vec(1usize..48, 1..8),
        ) {
            let mut sc = Scanner::new(true);
            let (mut at, mut k) = (0, 0);
            while at < wire.len() {
                let n = sizes[k % sizes.len()].min(wire.len() - at);
                sc.feed(&wire[at..at + n]);
                at += n;
                k += 1;
            }
            sc.finish();
            proptest::prop_assert_eq!(sc.usage, usage);
            proptest::prop_assert_eq!(sc.events, events);
        }

        /// Arbitrary bytes never panic the scanner, in either mode.
        #[test]
        fn arbitrary_bodies_never_panic_the_scanner(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            cut in 1usize..64,
        ) {
            for sse in [true, false] {
                let mut sc = Scanner::new(sse);
                for piece in body.chunks(cut) {
                    sc.feed(piece);
                }
                sc.finish();
            }
        }

        /// Arbitrary and damaged request bodies never panic `inspect`, and what it accepts
        /// names a model.
        #[test]
        fn request_bodies_never_panic_and_accepted_ones_name_a_model(
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..6),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"prompt":["a","b"]}"#.to_vec();
            for (at, b) in flips {
                let i = at % body.len();
                body[i] = b;
            }
            for b in [&body[..], &noise[..]] {
                if let Ok(i) = inspect(b, 64) {
                    proptest::prop_assert!(!i.model.is_empty() || b.windows(7).any(|w| w == b"\"model\""));
                }
            }
        }
    }
}
