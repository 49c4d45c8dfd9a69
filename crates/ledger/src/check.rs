//! A checker of FOCUS 1.2's column rules over a CSV file as written: which columns must be
//! present, which may be null and when, the allowed values, the date and number formats,
//! the cross-column rules, and the commitment arithmetic (per commitment, Σ `EffectiveCost`
//! of usage = Σ `BilledCost` of purchases). It reads text, not [`crate::focus::Row`]s, so
//! what it passes is the file a FinOps tool would load.

use std::collections::{BTreeMap, HashMap};

/// One broken rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// 1-based data row (0: the header or the whole file).
    pub row: usize,
    /// Column concerned.
    pub column: String,
    /// The rule, in the specification's words where short.
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}: {}: {}", self.row, self.column, self.rule)
    }
}

/// Mandatory columns of FOCUS 1.2.
pub const MANDATORY: &[&str] = &[
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
];

/// Mandatory columns that may hold nulls (each has its own null rule, checked below).
const MANDATORY_NULLABLE: &[&str] = &[
    "BillingAccountName",
    "ChargeClass",
    "ChargeDescription",
    "PricingQuantity",
    "PricingUnit",
];

/// Conditional and recommended columns of FOCUS 1.2 (any other column must start with `x_`).
pub const OTHER: &[&str] = &[
    "AvailabilityZone",
    "BillingAccountType",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeFrequency",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedUnitPrice",
    "InvoiceId",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
];

const SERVICE_CATEGORIES: &[&str] = &[
    "AI and Machine Learning",
    "Analytics",
    "Business Applications",
    "Compute",
    "Databases",
    "Developer Tools",
    "Multicloud",
    "Identity",
    "Integration",
    "Internet of Things",
    "Management and Governance",
    "Media",
    "Migration",
    "Mobile",
    "Networking",
    "Security",
    "Storage",
    "Web",
    "Other",
];

fn is_datetime(s: &str) -> bool {
    s.len() == 20 && crate::time::parse(s).is_ok()
}

/// FOCUS numeric format: optional `-`, digits, optional fraction, optional `E` exponent with
/// a sign only when negative.
fn parse_decimal(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i = 1;
    }
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > st
    };
    if !digits(&mut i) {
        return None;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'E' || b[i] == b'e') {
        i += 1;
        if i < b.len() && b[i] == b'-' {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse().ok()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 + 1e-9 * a.abs().max(b.abs())
}

/// Check a FOCUS CSV; an empty list means every rule holds.
pub fn check_csv(text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            out.push(Violation {
                row: 0,
                column: String::new(),
                rule: format!("unreadable header: {e}"),
            });
            return out;
        }
    };
    let col: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    for m in MANDATORY {
        if !col.contains_key(m) {
            out.push(Violation {
                row: 0,
                column: m.to_string(),
                rule: "mandatory column missing".into(),
            });
        }
    }
    for h in &header {
        if !MANDATORY.contains(&h.as_str()) && !OTHER.contains(&h.as_str()) && !h.starts_with("x_")
        {
            out.push(Violation {
                row: 0,
                column: h.clone(),
                rule: "custom columns MUST be prefixed `x_`".into(),
            });
        }
    }
    if !out.is_empty() {
        return out;
    }
    // Per commitment: Σ EffectiveCost (Usage), Σ BilledCost (Purchase), Σ of Used and Unused.
    let mut sums: BTreeMap<String, [f64; 4]> = BTreeMap::new();
    for (n, rec) in rdr.records().enumerate() {
        let row = n + 1;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                out.push(Violation {
                    row,
                    column: String::new(),
                    rule: format!("unreadable row: {e}"),
                });
                continue;
            }
        };
        let get = |c: &str| -> Option<&str> {
            col.get(c)
                .and_then(|&i| rec.get(i))
                .filter(|s| !s.is_empty())
        };
        let mut v = |c: &str, rule: &str| {
            out.push(Violation {
                row,
                column: c.into(),
                rule: rule.into(),
            })
        };
        let cc = get("ChargeCategory");
        let correction = get("ChargeClass") == Some("Correction");
        let usage = cc == Some("Usage");
        let purchase = cc == Some("Purchase");
        let tax = cc == Some("Tax");

        for c in MANDATORY.iter().filter(|c| !MANDATORY_NULLABLE.contains(c)) {
            if get(c).is_none() {
                v(c, "MUST NOT be null");
            }
        }
        for c in [
            "ChargeFrequency",
            "ServiceSubcategory",
            "BillingAccountType",
        ] {
            if col.contains_key(c) && get(c).is_none() {
                v(c, "MUST NOT be null");
            }
        }
        let allowed: &[(&str, &[&str])] = &[
            (
                "ChargeCategory",
                &["Usage", "Purchase", "Tax", "Credit", "Adjustment"],
            ),
            ("ChargeClass", &["Correction"]),
            ("ChargeFrequency", &["One-Time", "Recurring", "Usage-Based"]),
            (
                "PricingCategory",
                &["Standard", "Dynamic", "Committed", "Other"],
            ),
            ("CommitmentDiscountCategory", &["Spend", "Usage"]),
            ("CommitmentDiscountStatus", &["Used", "Unused"]),
            ("CapacityReservationStatus", &["Used", "Unused"]),
            ("ServiceCategory", SERVICE_CATEGORIES),
        ];
        for (c, vals) in allowed {
            if let Some(x) = get(c) {
                if !vals.contains(&x) {
                    v(
                        c,
                        &format!("`{x}` is not an allowed value ({})", vals.join(", ")),
                    );
                }
            }
        }
        for c in [
            "BillingPeriodStart",
            "BillingPeriodEnd",
            "ChargePeriodStart",
            "ChargePeriodEnd",
        ] {
            if let Some(x) = get(c) {
                if !is_datetime(x) {
                    v(c, "date/time MUST be UTC 'YYYY-MM-DDTHH:mm:ssZ'");
                }
            }
        }
        let mut num = |c: &str| -> Option<f64> {
            let x = get(c)?;
            let p = parse_decimal(x);
            if p.is_none() {
                out.push(Violation {
                    row,
                    column: c.into(),
                    rule: format!("`{x}` is not a FOCUS decimal"),
                });
            }
            p
        };
        let billed = num("BilledCost");
        let effective = num("EffectiveCost");
        let list = num("ListCost");
        let contracted = num("ContractedCost");
        let lup = num("ListUnitPrice");
        let cup = num("ContractedUnitPrice");
        let pq = num("PricingQuantity");
        let consumed = num("ConsumedQuantity");
        let cdq = num("CommitmentDiscountQuantity");
        let mut v = |c: &str, rule: &str| {
            out.push(Violation {
                row,
                column: c.into(),
                rule: rule.into(),
            })
        };
        if let Some(x) = get("BillingCurrency") {
            if !(x.len() == 3 && x.bytes().all(|b| b.is_ascii_uppercase())) {
                v("BillingCurrency", "MUST be an ISO 4217 currency code");
            }
        }
        if let (Some(s), Some(e)) = (get("ChargePeriodStart"), get("ChargePeriodEnd")) {
            if is_datetime(s) && is_datetime(e) && s >= e {
                v(
                    "ChargePeriodEnd",
                    "the exclusive end must follow the inclusive start",
                );
            }
        }
        if let (Some(cs), Some(bs), Some(be)) = (
            get("ChargePeriodStart"),
            get("BillingPeriodStart"),
            get("BillingPeriodEnd"),
        ) {
            if cs < bs || cs >= be {
                v(
                    "ChargePeriodStart",
                    "the charge period must start within its billing period",
                );
            }
        }
        if purchase && get("ChargeFrequency") == Some("Usage-Based") {
            v(
                "ChargeFrequency",
                "MUST NOT be \"Usage-Based\" when ChargeCategory is \"Purchase\"",
            );
        }
        // Null rules that depend on the charge category.
        for c in [
            "PricingQuantity",
            "PricingCategory",
            "ListUnitPrice",
            "ContractedUnitPrice",
            "SkuId",
            "SkuPriceId",
        ] {
            if !col.contains_key(c) {
                continue;
            }
            if tax && get(c).is_some() {
                v(c, "MUST be null when ChargeCategory is \"Tax\"");
            }
            if (usage || purchase) && !correction && get(c).is_none() {
                v(c, "MUST NOT be null when ChargeCategory is \"Usage\" or \"Purchase\" (not a correction)");
            }
        }
        if get("PricingQuantity").is_some() != get("PricingUnit").is_some() {
            v(
                "PricingUnit",
                "MUST be null if and only if PricingQuantity is null",
            );
        }
        if get("ConsumedQuantity").is_some() != get("ConsumedUnit").is_some() {
            v(
                "ConsumedUnit",
                "MUST be null if and only if ConsumedQuantity is null",
            );
        }
        let cd_id = get("CommitmentDiscountId");
        let status = get("CommitmentDiscountStatus");
        if col.contains_key("ConsumedQuantity") {
            let must_null = !usage || status == Some("Unused");
            if must_null && consumed.is_some() {
                v("ConsumedQuantity", "MUST be null when ChargeCategory is not \"Usage\", or is \"Usage\" with CommitmentDiscountStatus \"Unused\"");
            }
            if !must_null && !correction && consumed.is_none() {
                v(
                    "ConsumedQuantity",
                    "MUST NOT be null for usage that is not unused commitment",
                );
            }
        }
        // Unit price × quantity = cost.
        for (price, cost, name) in [(lup, list, "ListCost"), (cup, contracted, "ContractedCost")] {
            if let (Some(p), Some(q), Some(c)) = (price, pq, cost) {
                if !correction && !close(p * q, c) {
                    v(
                        name,
                        &format!(
                            "unit price × PricingQuantity = {} but the cost is {c}",
                            p * q
                        ),
                    );
                }
            }
        }
        if let (Some(p), Some(_)) = (lup, pq) {
            if p < 0.0 {
                v("ListUnitPrice", "MUST be ≥ 0");
            }
        }
        // Commitment discount columns.
        for c in [
            "CommitmentDiscountCategory",
            "CommitmentDiscountType",
            "CommitmentDiscountName",
            "CommitmentDiscountStatus",
        ] {
            if cd_id.is_none() && get(c).is_some() {
                v(c, "MUST be null when CommitmentDiscountId is null");
            }
        }
        if cd_id.is_some() {
            for c in ["CommitmentDiscountCategory", "CommitmentDiscountType"] {
                if get(c).is_none() {
                    v(c, "MUST NOT be null when CommitmentDiscountId is not null");
                }
            }
            if usage && status.is_none() {
                v("CommitmentDiscountStatus", "MUST NOT be null when CommitmentDiscountId is not null and ChargeCategory is \"Usage\"");
            }
            if (usage || purchase) && !correction && cdq.is_none() {
                v(
                    "CommitmentDiscountQuantity",
                    "MUST NOT be null for commitment usage and purchases",
                );
            }
        } else if get("CommitmentDiscountQuantity").is_some() {
            v(
                "CommitmentDiscountQuantity",
                "MUST be null when the charge relates to no commitment",
            );
        }
        if get("CommitmentDiscountQuantity").is_some() != get("CommitmentDiscountUnit").is_some() {
            v(
                "CommitmentDiscountUnit",
                "MUST be null if and only if CommitmentDiscountQuantity is null",
            );
        }
        if usage && cd_id.is_some() && get("PricingCategory") != Some("Committed") {
            v("PricingCategory", "MUST be \"Committed\" for a charge subject to a commitment discount that is not its purchase");
        }
        if status == Some("Unused") && get("ResourceId") != cd_id {
            v(
                "ResourceId",
                "the unused portion of a commitment carries the commitment's id",
            );
        }
        if get("CapacityReservationId").is_none() && get("CapacityReservationStatus").is_some() {
            v(
                "CapacityReservationStatus",
                "MUST be null when CapacityReservationId is null",
            );
        }
        if get("CapacityReservationId").is_some()
            && usage
            && get("CapacityReservationStatus").is_none()
        {
            v(
                "CapacityReservationStatus",
                "MUST NOT be null for a reservation's usage",
            );
        }
        for (a, b) in [("RegionId", "RegionName"), ("ResourceId", "ResourceType")] {
            if col.contains_key(b) && get(a).is_none() && get(b).is_some() {
                v(b, &format!("MUST be null when {a} is null"));
            }
            if col.contains_key(b) && get(a).is_some() && get(b).is_none() {
                v(b, &format!("MUST NOT be null when {a} is not null"));
            }
        }
        if let (Some(id), Some(name)) = (get("ResourceId"), get("ResourceName")) {
            if id == name && !id.is_empty() && get("CommitmentDiscountId") != Some(id) {
                v("ResourceName", "MUST NOT duplicate ResourceId");
            }
        }
        if let Some(t) = get("Tags") {
            match serde_json::from_str::<serde_json::Value>(t) {
                Ok(serde_json::Value::Object(m)) => {
                    if m.values().any(|x| x.is_object() || x.is_array()) {
                        v(
                            "Tags",
                            "tag values MUST be strings, numbers, booleans or null",
                        );
                    }
                }
                _ => v("Tags", "MUST be a JSON object"),
            }
        }
        if let (Some(b), Some(e)) = (billed, effective) {
            if purchase && cd_id.is_some() && e != 0.0 {
                v(
                    "EffectiveCost",
                    "MUST be 0 for the purchase of a commitment (it is amortised into usage)",
                );
            }
            if let Some(id) = cd_id {
                let s = sums.entry(id.to_string()).or_default();
                if usage {
                    s[0] += e;
                    match status {
                        Some("Used") => s[2] += e,
                        Some("Unused") => s[3] += e,
                        _ => {}
                    }
                }
                if purchase {
                    s[1] += b;
                }
            }
        }
    }
    for (id, s) in sums {
        if !close(s[0], s[1]) {
            out.push(Violation {
                row: 0,
                column: "EffectiveCost".into(),
                rule: format!("commitment {id}: Σ EffectiveCost of usage ({}) MUST equal Σ BilledCost of purchases ({})", s[0], s[1]),
            });
        }
        if !close(s[0], s[2] + s[3]) {
            out.push(Violation {
                row: 0,
                column: "CommitmentDiscountStatus".into(),
                rule: format!(
                    "commitment {id}: usage EffectiveCost is not split into Used and Unused"
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_numeric_format() {
        for ok in ["0", "-1.5", "35.2E-7", "12", "0.0000001"] {
            assert!(parse_decimal(ok).is_some(), "{ok}");
        }
        for bad in [
            "+1", "1,000", "$5", "35.2E+7", "1.", ".5", "1e", "", "NaN", "inf",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
    }
}
