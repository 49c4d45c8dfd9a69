//! Per-key request and token limits as token buckets refilled continuously, with time passed
//! in (seconds on any monotonic clock) so tests drive it without sleeping.
//!
//! Requests are admitted while the request bucket holds a whole request and the token bucket
//! is not in debt. Tokens are debited after the fact, from the usage the replica reports, so a
//! long completion can push a key into debt; its next requests wait until the debt is repaid.
//! This is how OpenAI's own limits behave from a client's side.

/// Why a request was refused, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refusal {
    /// Which limit.
    pub limit: Limit,
    /// Seconds until a retry can succeed (rounded up for `Retry-After`).
    pub retry_after_s: f64,
}

/// The two limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

/// A continuously refilled bucket of `capacity`, refilled at `capacity` per minute.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    level: f64,
    at: f64,
}

impl Bucket {
    fn new(per_minute: f64, now: f64) -> Bucket {
        Bucket {
            capacity: per_minute,
            level: per_minute,
            at: now,
        }
    }
    fn refill(&mut self, now: f64) {
        let dt = (now - self.at).max(0.0);
        self.level = (self.level + dt * self.capacity / 60.0).min(self.capacity);
        self.at = now.max(self.at);
    }
    /// Seconds until the level reaches `need`.
    fn wait_for(&self, need: f64) -> f64 {
        ((need - self.level) * 60.0 / self.capacity).max(0.0)
    }
}

/// One key's limits.
#[derive(Debug, Clone)]
pub struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Limiter {
    /// Limits of `rpm` requests and `tpm` tokens per minute (`None`: unlimited).
    pub fn new(rpm: Option<u32>, tpm: Option<u64>, now: f64) -> Limiter {
        Limiter {
            requests: rpm.map(|r| Bucket::new(r as f64, now)),
            tokens: tpm.map(|t| Bucket::new(t as f64, now)),
        }
    }

    /// Admit one request now, or say which limit refuses it and for how long.
    pub fn admit(&mut self, now: f64) -> Result<(), Refusal> {
        if let Some(t) = &mut self.tokens {
            t.refill(now);
            if t.level < 0.0 {
                return Err(Refusal {
                    limit: Limit::Tokens,
                    retry_after_s: t.wait_for(0.0),
                });
            }
        }
        if let Some(r) = &mut self.requests {
            r.refill(now);
            if r.level < 1.0 {
                return Err(Refusal {
                    limit: Limit::Requests,
                    retry_after_s: r.wait_for(1.0),
                });
            }
            r.level -= 1.0;
        }
        Ok(())
    }

    /// Debit tokens a finished request used.
    pub fn debit_tokens(&mut self, tokens: u64, now: f64) {
        if let Some(t) = &mut self.tokens {
            t.refill(now);
            t.level -= tokens as f64;
        }
    }
}

/// `Retry-After` in whole seconds (at least 1).
pub fn retry_after_header(r: &Refusal) -> u64 {
    (r.retry_after_s.ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_admit_a_burst_then_refill_at_the_rate() {
        let mut l = Limiter::new(Some(60), None, 0.0);
        for _ in 0..60 {
            assert!(l.admit(0.0).is_ok());
        }
        let r = l.admit(0.0).unwrap_err();
        assert_eq!(r.limit, Limit::Requests);
        assert!((r.retry_after_s - 1.0).abs() < 1e-9, "{r:?}");
        assert_eq!(retry_after_header(&r), 1);
        // One request per second comes back.
        assert!(l.admit(0.5).is_err());
        assert!(l.admit(1.0).is_ok());
        assert!(l.admit(1.0).is_err());
        assert!(l.admit(61.0).is_ok());
    }

    #[test]
    fn token_debt_blocks_until_repaid() {
        let mut l = Limiter::new(None, Some(6_000), 0.0);
        assert!(l.admit(0.0).is_ok());
        // A big completion: 7,200 tokens, 1,200 into debt.
        l.debit_tokens(7_200, 0.0);
        let r = l.admit(0.0).unwrap_err();
        assert_eq!(r.limit, Limit::Tokens);
        // 1,200 tokens at 100 per second: 12 s.
        assert!((r.retry_after_s - 12.0).abs() < 1e-9, "{r:?}");
        assert!(l.admit(11.0).is_err());
        assert!(l.admit(12.0).is_ok());
    }

    #[test]
    fn a_refused_request_costs_nothing_and_unlimited_keys_always_pass() {
        let mut l = Limiter::new(Some(1), Some(10), 0.0);
        assert!(l.admit(0.0).is_ok());
        for _ in 0..100 {
            assert!(l.admit(0.0).is_err());
        }
        assert!(l.admit(60.0).is_ok());
        let mut open = Limiter::new(None, None, 0.0);
        for _ in 0..10_000 {
            assert!(open.admit(0.0).is_ok());
        }
        open.debit_tokens(u64::MAX / 2, 0.0);
        assert!(open.admit(0.0).is_ok());
    }
}
