//! Units as types, where mixing them up would be a bug.
//!
//! Each newtype is `#[serde(transparent)]` over `f64`, so files stay plain numbers, but its
//! `Deserialize` rejects values outside the unit's domain (negative prices, NaN watts) so that a
//! bad value in a file is reported by the parser with its line, not discovered later.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Mul, Sub};

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        impl $name {
            /// Zero of this unit.
            pub const ZERO: $name = $name(0.0);
            /// The raw number, for arithmetic across units that the types do not model.
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = f64::deserialize(d)?;
                if !v.is_finite() || v < 0.0 {
                    return Err(serde::de::Error::invalid_value(
                        serde::de::Unexpected::Float(v),
                        &concat!("a finite, non-negative number of ", $suffix),
                    ));
                }
                Ok($name(v))
            }
        }

        impl Add for $name {
            type Output = $name;
            fn add(self, o: $name) -> $name {
                $name(self.0 + o.0)
            }
        }
        impl Sub for $name {
            type Output = $name;
            fn sub(self, o: $name) -> $name {
                $name(self.0 - o.0)
            }
        }
        impl AddAssign for $name {
            fn add_assign(&mut self, o: $name) {
                self.0 += o.0;
            }
        }
        impl Mul<f64> for $name {
            type Output = $name;
            fn mul(self, k: f64) -> $name {
                $name(self.0 * k)
            }
        }
        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = $name>>(it: I) -> $name {
                $name(it.map(|x| x.0).sum())
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if let Some(p) = f.precision() {
                    write!(f, "{:.*} {}", p, self.0, $suffix)
                } else {
                    write!(f, "{} {}", self.0, $suffix)
                }
            }
        }
    };
}

unit!(
    /// Money rate: US dollars per hour. Prices in the fleet are per node-hour.
    UsdPerHour,
    "$/h"
);
unit!(
    /// Electrical power in watts (chip TDP, host overhead, a region's draw).
    Watts,
    "W"
);
unit!(
    /// Site power in megawatts, the unit power caps are written in.
    Megawatts,
    "MW"
);
unit!(
    /// Grid carbon intensity in grams CO2e per kWh.
    GramsPerKwh,
    "gCO2e/kWh"
);
unit!(
    /// Emission rate in grams CO2e per hour.
    GramsPerHour,
    "gCO2e/h"
);
unit!(
    /// Latency in milliseconds (round-trip unless said otherwise).
    Millis,
    "ms"
);
unit!(
    /// Work, in chip-hours at H100 speed (H100-equivalent chip-hours).
    ChipHours,
    "chip-h"
);
unit!(
    /// Request rate, requests per second.
    RequestsPerSec,
    "req/s"
);
unit!(
    /// Carbon shadow price, US dollars per tonne CO2e.
    UsdPerTonne,
    "$/tCO2e"
);

impl Watts {
    /// Watts to megawatts.
    pub fn to_mw(self) -> Megawatts {
        Megawatts(self.0 / 1e6)
    }
}

impl Megawatts {
    /// Megawatts to watts.
    pub fn to_watts(self) -> Watts {
        Watts(self.0 * 1e6)
    }
}

impl Watts {
    /// Emission rate of this draw on a grid of the given intensity.
    pub fn emissions(self, ci: GramsPerKwh) -> GramsPerHour {
        GramsPerHour(self.0 / 1000.0 * ci.0)
    }
}

impl GramsPerHour {
    /// Dollar cost per hour of these emissions at a shadow price.
    pub fn priced(self, price: UsdPerTonne) -> UsdPerHour {
        UsdPerHour(self.0 / 1e6 * price.0)
    }
    /// Tonnes CO2e per day at this rate.
    pub fn tonnes_per_day(self) -> f64 {
        self.0 * 24.0 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_values_are_rejected_by_the_parser() {
        let e = serde_json::from_str::<UsdPerHour>("-1.5").unwrap_err();
        assert!(e.to_string().contains("non-negative"), "{e}");
        assert!(serde_json::from_str::<Watts>("700").is_ok());
    }

    #[test]
    fn emissions_and_carbon_price_compose() {
        // 1 MW for one hour on a 400 g/kWh grid = 0.4 t/h; at $100/t that is $40/h.
        let e = Megawatts(1.0).to_watts().emissions(GramsPerKwh(400.0));
        assert!((e.0 - 400_000.0).abs() < 1e-6);
        assert!((e.priced(UsdPerTonne(100.0)).0 - 40.0).abs() < 1e-9);
    }
}
