//! Reading CSV text with line numbers, so every malformed row becomes `FILE:LINE: reason`.

use crate::error::CatalogError;
use csv::StringRecord;
use std::collections::HashMap;
use std::path::Path;

/// Read a file as text; a missing file is an error naming the path and `STRATUS_DATA`. A file
/// that is not valid UTF-8 is decoded as Latin-1 (the Azure coordinates file spells Gävle with
/// a Latin-1 byte).
pub(crate) fn read_text(dir: &Path, rel: &str) -> Result<(String, String), CatalogError> {
    let path = dir.join(rel);
    let name = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|source| CatalogError::Missing {
        file: name.clone(),
        source,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    };
    Ok((name, text))
}

/// How to treat rows with more fields than the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extra {
    /// Extra fields are an error unless they are all empty (a trailing comma), which is dropped.
    TrailingEmptyOnly,
    /// Join the last column and every extra field back with `,` (an unquoted comma in a value).
    JoinIntoLast,
}

/// A parsed CSV file: header, and rows with their 1-based line numbers.
#[derive(Debug)]
pub(crate) struct Csv {
    /// File name used in errors.
    pub file: String,
    header: HashMap<String, usize>,
    /// Rows with their line numbers; each has exactly the header's number of fields.
    pub rows: Vec<(u64, StringRecord)>,
    /// Rows whose extra fields were joined back into the last column.
    pub joined: usize,
    /// Rows that had trailing empty fields removed.
    pub trailing_empty: usize,
}

impl Csv {
    /// Parse `text`; `skip` leading records (comment lines) precede the header. A row with fewer
    /// fields than the header (a truncated file) is an error naming its line.
    pub fn parse(file: &str, text: &str, skip: usize, extra: Extra) -> Result<Csv, CatalogError> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut records = rdr.records();
        let mut header_rec = None;
        for _ in 0..=skip {
            header_rec = records.next();
        }
        let header_rec = match header_rec {
            Some(r) => r.map_err(|e| csv_err(file, e))?,
            None => return Err(invalid(file, "empty file (no header)")),
        };
        let header: HashMap<String, usize> = header_rec
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_string(), i))
            .collect();
        let n = header_rec.len();
        let mut csv = Csv {
            file: file.to_string(),
            header,
            rows: Vec::new(),
            joined: 0,
            trailing_empty: 0,
        };
        for rec in records {
            let rec = rec.map_err(|e| csv_err(file, e))?;
            let line = rec.position().map_or(0, |p| p.line());
            let rec = csv.fit(rec, n, line, extra)?;
            csv.rows.push((line, rec));
        }
        Ok(csv)
    }

    fn fit(
        &mut self,
        rec: StringRecord,
        n: usize,
        line: u64,
        extra: Extra,
    ) -> Result<StringRecord, CatalogError> {
        if rec.len() == n {
            return Ok(rec);
        }
        if rec.len() < n {
            return Err(CatalogError::at(
                &self.file,
                line,
                format!(
                    "too few fields: expected {n}, found {} (truncated row?)",
                    rec.len()
                ),
            ));
        }
        match extra {
            Extra::JoinIntoLast => {
                let mut out: StringRecord = rec.iter().take(n - 1).collect();
                out.push_field(&rec.iter().skip(n - 1).collect::<Vec<_>>().join(","));
                self.joined += 1;
                Ok(out)
            }
            Extra::TrailingEmptyOnly if rec.iter().skip(n).all(|f| f.trim().is_empty()) => {
                self.trailing_empty += 1;
                Ok(rec.iter().take(n).collect())
            }
            Extra::TrailingEmptyOnly => Err(CatalogError::at(
                &self.file,
                line,
                format!("too many fields: expected {n}, found {}", rec.len()),
            )),
        }
    }

    /// Index of a named column, or an error naming the file and the column.
    pub fn col(&self, name: &str) -> Result<usize, CatalogError> {
        self.header
            .get(name)
            .copied()
            .ok_or_else(|| invalid(&self.file, &format!("missing column {name:?}")))
    }

    /// Parse a required number in row `line`.
    pub fn num(&self, line: u64, what: &str, s: &str) -> Result<f64, CatalogError> {
        self.opt_num(line, what, s)?
            .ok_or_else(|| CatalogError::at(&self.file, line, format!("empty {what}")))
    }

    /// Parse an optional number (empty → `None`) in row `line`.
    pub fn opt_num(&self, line: u64, what: &str, s: &str) -> Result<Option<f64>, CatalogError> {
        let t = s.trim();
        if t.is_empty() {
            return Ok(None);
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(CatalogError::at(
                &self.file,
                line,
                format!("{what}: not a number: {t:?}"),
            )),
        }
    }
}

fn csv_err(file: &str, e: csv::Error) -> CatalogError {
    match e.position() {
        Some(p) => CatalogError::at(file, p.line(), e.to_string()),
        None => invalid(file, &e.to_string()),
    }
}

fn invalid(file: &str, reason: &str) -> CatalogError {
    CatalogError::Invalid {
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

/// Median of a non-empty list (mean of the two middle values for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Round to `digits` decimals, so derived numbers (medians, sums) print without float noise.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_row_names_file_and_line() {
        let text = "a,b,c\n1,2,3\n4,5\n";
        let e = Csv::parse("x.csv", text, 0, Extra::TrailingEmptyOnly).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.csv:3: too few fields: expected 3, found 2 (truncated row?)"
        );
    }

    #[test]
    fn unparsable_number_names_file_and_line() {
        let c = Csv::parse("x.csv", "a\n1.5\nabc\n", 0, Extra::TrailingEmptyOnly).unwrap();
        let (line, rec) = &c.rows[1];
        let e = c.num(*line, "price", &rec[0]).unwrap_err();
        assert_eq!(e.to_string(), "x.csv:3: price: not a number: \"abc\"");
    }

    #[test]
    fn trailing_empty_field_is_dropped_and_counted() {
        let c = Csv::parse("x.csv", "a,b\n1,2,\n3,4", 0, Extra::TrailingEmptyOnly).unwrap();
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.trailing_empty, 1);
        let e = Csv::parse("x.csv", "a,b\n1,2,3\n", 0, Extra::TrailingEmptyOnly).unwrap_err();
        assert!(e.to_string().starts_with("x.csv:2: too many fields"), "{e}");
    }

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
