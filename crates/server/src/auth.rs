//! API tokens with roles. Only a token's SHA-256 is stored, and tokens are never logged: a
//! leaked database or log does not leak access.

use sha2::{Digest, Sha256};

/// What a token may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also change workloads.
    Operator,
    /// Also manage tokens.
    Admin,
}

impl Role {
    /// From its stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    let d = Sha256::digest(token.trim().as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Shortest token accepted from a file or the environment.
pub const TOKEN_MIN_LEN: usize = 16;

/// Check a token given by an operator (a file, the environment): long enough to resist
/// guessing, printable, one line. Empty files are the common mistake.
pub fn check_token_value(t: &str) -> Result<(), String> {
    let t = t.trim();
    if t.is_empty() {
        return Err("the token is empty".into());
    }
    if t.chars().count() < TOKEN_MIN_LEN {
        return Err(format!(
            "the token has {} characters; use at least {TOKEN_MIN_LEN}",
            t.chars().count()
        ));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token holds spaces or control characters".into());
    }
    Ok(())
}

/// Check a token's name: 1 to 63 characters, no control characters.
pub fn check_token_name(n: &str) -> Result<(), String> {
    if n.trim().is_empty() || n.chars().count() > 63 {
        return Err("a name of 1 to 63 characters is needed".into());
    }
    if n.chars().any(|c| c.is_control()) {
        return Err("the name holds control characters".into());
    }
    Ok(())
}

/// A new random token (`stx_` + 32 hex digits from the OS's random source).
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(format!(
        "stx_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_hashes_stable() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = new_token().unwrap();
        assert!(t.starts_with("stx_") && t.len() == 36);
        assert_ne!(t, new_token().unwrap());
    }
}
