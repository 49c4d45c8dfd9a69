//! Errors and the build report.

use std::fmt;

/// A problem with an input file that stops the build: a missing file, a truncated row, a number
/// that does not parse. Every variant names the file (and the line where there is one), so a
/// bad data drop can be fixed without bisecting it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read at all.
    #[error("{file}: cannot read ({source}); point the environment variable STRATUS_DATA at the shared data directory")]
    Missing {
        /// Path as tried.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A row of the file is malformed.
    #[error("{file}:{line}: {reason}")]
    Malformed {
        /// Path of the file.
        file: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file as a whole is unusable (e.g. a required column is absent).
    #[error("{file}: {reason}")]
    Invalid {
        /// Path of the file.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

impl CatalogError {
    /// A malformed-row error.
    pub(crate) fn at(file: &str, line: u64, reason: impl Into<String>) -> CatalogError {
        CatalogError::Malformed {
            file: file.to_string(),
            line,
            reason: reason.into(),
        }
    }
}

/// What the build read and which data defects it handled, one human-readable line each, with
/// counts, so that every silent-looking decision (a dropped row, a fixed value) is visible.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// The lines, in the order the build produced them.
    pub lines: Vec<String>,
}

impl BuildReport {
    /// Append a line.
    pub(crate) fn add(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}
