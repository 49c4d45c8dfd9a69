//! The grammar of names that enter stratus, checked wherever one does (files, the API).
//!
//! A **workload name** is 1 to 63 characters of lowercase ASCII letters, digits, `-` and
//! `.`, beginning and ending with a letter or digit: a Kubernetes object name (DNS-1123)
//! short enough to be a label too. It never holds `@`, `#`, `~` or `,`, which the
//! controller's unit keys and tokens, Slurm's option lists and the dashboard rely on, nor a
//! control character or space.
//!
//! A **fleet identifier** (provider and region names, pool ids) is 1 to 128 printable ASCII
//! characters without spaces, quotes, `@`, `#`, `~` or `,`.

/// Longest workload name.
pub const WORKLOAD_NAME_MAX: usize = 63;

/// Longest provider name, region name or pool id.
pub const FLEET_ID_MAX: usize = 128;

/// Check a workload name against the grammar; the error says what is wrong.
pub fn check_workload_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("name must not be empty".into());
    }
    if s.len() > WORKLOAD_NAME_MAX {
        return Err(format!(
            "name is {} characters long; at most {WORKLOAD_NAME_MAX}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "name {} contains {}: use lowercase letters, digits, `-` and `.`",
            shown(s),
            describe(c)
        ));
    }
    let edge_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !s.starts_with(edge_ok) || !s.ends_with(edge_ok) {
        return Err(format!(
            "name {} must begin and end with a lowercase letter or a digit",
            shown(s)
        ));
    }
    Ok(())
}

/// Check a provider name, region name or pool id; the error says what is wrong.
pub fn check_fleet_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > FLEET_ID_MAX {
        return Err(format!(
            "is {} characters long; at most {FLEET_ID_MAX}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '@' | '#' | '~' | ',' | '"' | '\'' | '`'))
    {
        return Err(format!("{} contains {}", shown(s), describe(c)));
    }
    Ok(())
}

/// A name quoted for an error message, control characters escaped and long ones cut.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    let mut out = format!("{cut:?}");
    if cut.len() < s.len() {
        out.push('…');
    }
    out
}

fn describe(c: char) -> String {
    if c.is_control() {
        format!("a control character ({:?})", c)
    } else if c.is_whitespace() {
        "a space".into()
    } else {
        format!("`{c}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_follow_dns_1123() {
        for ok in ["a", "ft-a", "llm.v2", "pod-openb-pod-0001", &"a".repeat(63)] {
            check_workload_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            (&"a".repeat(64) as &str, "at most 63"),
            ("Chat", "`C`"),
            ("chat@aws:us-east-1", "`@`"),
            ("chat#1", "`#`"),
            ("a~1", "`~`"),
            ("x,LD_PRELOAD=/tmp/x.so", "`,`"),
            ("a b", "a space"),
            ("a\u{7}b", "control character"),
            ("-a", "begin and end"),
            ("a.", "begin and end"),
        ] {
            let e = check_workload_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn fleet_ids_are_printable_and_free_of_key_separators() {
        for ok in [
            "aws",
            "us-east-1",
            "azure:eastus:Standard_ND96isr_H100_v5",
            "p5.48xlarge",
        ] {
            check_fleet_id(ok).unwrap();
        }
        for bad in [
            "",
            "a b",
            "a@b",
            "a#b",
            "a~b",
            "a,b",
            "a\nb",
            &"x".repeat(129),
        ] {
            assert!(check_fleet_id(bad).is_err(), "{bad:?}");
        }
    }
}
