//! The controller's typed unit key. The planner names units by strings (`ft`,
//! `chat@aws:us-east-1`, `chat@aws:us-east-1#2`); the controller converts them once, at its
//! boundary, and never joins or splits strings again. Workload names cannot contain `@`, `#`
//! or `~` (see `stratus_model::name`), so the conversion is exact.

use std::fmt;

/// What one launch stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitKey {
    /// A training gang or a batch job: the workload itself.
    Job(String),
    /// One user location's replicas of an inference service, or one shard of them when the
    /// service needs more units than it has locations (redundancy).
    Replicas {
        /// Service name.
        service: String,
        /// Region id (`provider:region`) the users are nearest to.
        location: String,
        /// Shard number, when the location is split.
        shard: Option<u32>,
    },
}

impl UnitKey {
    /// The planner's unit string as a key. Errors name what is wrong with it.
    pub fn parse(s: &str) -> Result<UnitKey, String> {
        if s.is_empty() {
            return Err("an empty unit key".into());
        }
        if s.contains('~') {
            return Err(format!("unit key `{s}` contains `~`"));
        }
        let Some((service, rest)) = s.split_once('@') else {
            if s.contains('#') {
                return Err(format!("unit key `{s}` has a shard but no location"));
            }
            return Ok(UnitKey::Job(s.to_string()));
        };
        if service.is_empty() || rest.is_empty() || rest.contains('@') {
            return Err(format!("unit key `{s}` is not `service@location[#shard]`"));
        }
        let (location, shard) = match rest.rsplit_once('#') {
            Some((loc, n)) => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("unit key `{s}`: shard `{n}` is not a number"))?;
                (loc, Some(n))
            }
            None => (rest, None),
        };
        if location.is_empty() || location.contains('#') {
            return Err(format!("unit key `{s}` has no location"));
        }
        Ok(UnitKey::Replicas {
            service: service.to_string(),
            location: location.to_string(),
            shard,
        })
    }

    /// The workload the unit belongs to.
    pub fn workload(&self) -> &str {
        match self {
            UnitKey::Job(w) => w,
            UnitKey::Replicas { service, .. } => service,
        }
    }

    /// Whether the unit is an inference service's replicas: those move and resize make
    /// before break (the old instance serves until the new one runs), so two instances of
    /// the unit may be alive at once; a job's gang never has more than one.
    pub fn is_replicas(&self) -> bool {
        matches!(self, UnitKey::Replicas { .. })
    }

    /// Instances of this unit that may be alive at once: two for replicas (make before
    /// break), one for a job.
    pub fn max_live(&self) -> usize {
        if self.is_replicas() {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for UnitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitKey::Job(w) => f.write_str(w),
            UnitKey::Replicas {
                service,
                location,
                shard: None,
            } => write!(f, "{service}@{location}"),
            UnitKey::Replicas {
                service,
                location,
                shard: Some(n),
            } => write!(f, "{service}@{location}#{n}"),
        }
    }
}

/// The unit key a token was issued for: tokens are `<prefix><unit>~<sequence>`.
pub fn token_unit<'a>(token: &'a str, prefix: &str) -> Option<&'a str> {
    token
        .strip_prefix(prefix)?
        .rsplit_once('~')
        .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .map(|(u, _)| u)
}

/// The sequence number of a token (`…~<sequence>`).
pub fn token_seq(token: &str) -> Option<u64> {
    token.rsplit_once('~').and_then(|(_, n)| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planner_keys_round_trip() {
        for s in [
            "ft",
            "chat@aws:us-east-1",
            "chat@aws:us-east-1#0",
            "chat@gcp:europe-west4#12",
        ] {
            let k = UnitKey::parse(s).unwrap();
            assert_eq!(k.to_string(), s);
        }
        assert_eq!(
            UnitKey::parse("chat@aws:us-east-1#2").unwrap(),
            UnitKey::Replicas {
                service: "chat".into(),
                location: "aws:us-east-1".into(),
                shard: Some(2)
            }
        );
        assert_eq!(UnitKey::parse("ft").unwrap().workload(), "ft");
        assert_eq!(UnitKey::parse("ft").unwrap().max_live(), 1);
        assert_eq!(UnitKey::parse("c@a:b").unwrap().max_live(), 2);
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        for (s, why) in [
            ("", "empty"),
            ("a#1", "no location"),
            ("@x", "not `service@location"),
            ("a@", "not `service@location"),
            ("a@b@c", "not `service@location"),
            ("a@b#x", "not a number"),
            ("a~1", "contains `~`"),
        ] {
            let e = UnitKey::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn tokens_name_their_unit_and_sequence() {
        assert_eq!(
            token_unit("s1-chat@aws:x#1~42", "s1-"),
            Some("chat@aws:x#1")
        );
        assert_eq!(token_unit("s2-chat~42", "s1-"), None);
        assert_eq!(token_unit("s1-chat~", "s1-"), None);
        assert_eq!(token_seq("s1-chat~42"), Some(42));
    }
}
