//! What the gateway reads from requests (model, streaming, the prompt prefix) and from
//! responses (the token usage the replica reports), without holding a whole stream in memory.

use serde_json::Value;

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
}

/// Parse a completions or chat-completions body; `Err` is the client-facing reason.
pub fn inspect(body: &[u8], prefix_bytes: usize) -> Result<RequestInfo, String> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| "request body must be a JSON object".to_string())?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| "`model` (a string) is required".to_string())?
        .to_string();
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut text = String::new();
    if let Some(msgs) = obj.get("messages").and_then(Value::as_array) {
        for m in msgs {
            if text.len() >= prefix_bytes {
                break;
            }
            if let Some(r) = m.get("role").and_then(Value::as_str) {
                text.push_str(r);
                text.push('\n');
            }
            match m.get("content") {
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                }
                _ => {}
            }
            text.push('\n');
        }
    } else {
        match obj.get("prompt") {
            Some(Value::String(s)) => text.push_str(s),
            Some(Value::Array(a)) => {
                if let Some(s) = a.first().and_then(Value::as_str) {
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
    let mut forward = None;
    if stream {
        let wants = obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !wants {
            let so = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(so) = so.as_object_mut() {
                so.insert("include_usage".into(), Value::Bool(true));
            }
            forward = Some(serde_json::to_vec(&v).expect("a Value serialises"));
        }
    }
    Ok(RequestInfo {
        model,
        stream,
        prefix,
        forward,
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
    fn from_value(v: &Value) -> Option<Usage> {
        let u = v.get("usage")?;
        if u.is_null() {
            return None;
        }
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(Usage {
            prompt: n("prompt_tokens"),
            completion: n("completion_tokens"),
            cached: u
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
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
    /// Whether `data: [DONE]` was seen (a stream that ended properly).
    pub done: bool,
    /// Content chunks seen in a stream (one per token for most servers).
    pub chunks: u64,
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
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
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
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        self.chunks += 1;
        // Parse only the events that can carry usage.
        if contains(data, b"\"usage\"") && !contains(data, b"\"usage\":null") {
            if let Ok(v) = serde_json::from_slice::<Value>(data) {
                if let Some(u) = Usage::from_value(&v) {
                    self.usage = Some(u);
                }
            }
        }
    }

    /// Call at the end of the body: a JSON body is parsed now.
    pub fn finish(&mut self) {
        if !self.sse && !self.overflow {
            if let Ok(v) = serde_json::from_slice::<Value>(&self.buf) {
                self.usage = Usage::from_value(&v);
            }
            self.buf = Vec::new();
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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
            assert!(s.done);
            assert_eq!(s.chunks, 3);
        }
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
}
