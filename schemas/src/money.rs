//! Exact money: decimal strings on the wire, `rust_decimal` in memory, never `f64`.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An exact decimal number, written on the wire as a JSON string (`"12.34"`).
///
/// JSON numbers are refused on purpose: a producer that sends `12.34` as a number has most
/// likely passed it through a float already, and the cents are no longer trustworthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal(pub rust_decimal::Decimal);

impl Decimal {
    /// Zero.
    pub const ZERO: Decimal = Decimal(rust_decimal::Decimal::ZERO);

    /// Parses a plain decimal string: optional `-`, digits, optional `.` and digits.
    pub fn parse(s: &str) -> Option<Decimal> {
        let body = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits_ok = !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            // "1." is refused: a point must be followed by digits.
            && !(body.contains('.') && frac.is_empty());
        if !digits_ok {
            return None;
        }
        s.parse::<rust_decimal::Decimal>().ok().map(Decimal)
    }

    /// Whole number of units, e.g. an order count.
    pub fn from_i64(v: i64) -> Decimal {
        Decimal(rust_decimal::Decimal::from(v))
    }

    /// `true` when below zero.
    pub fn is_negative(&self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    /// Lossy conversion for display and ratios; sums stay exact in [`Decimal`].
    pub fn to_f64(&self) -> f64 {
        use rust_decimal::prelude::ToPrimitive;
        self.0.to_f64().unwrap_or(f64::NAN)
    }
}

// The scale is kept as the source wrote it ("105.40" stays "105.40"), so records round-trip.
impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Add for Decimal {
    type Output = Decimal;
    fn add(self, rhs: Decimal) -> Decimal {
        Decimal(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Decimal {
    type Output = Decimal;
    fn sub(self, rhs: Decimal) -> Decimal {
        Decimal(self.0 - rhs.0)
    }
}

impl std::ops::AddAssign for Decimal {
    fn add_assign(&mut self, rhs: Decimal) {
        self.0 += rhs.0;
    }
}

impl std::ops::SubAssign for Decimal {
    fn sub_assign(&mut self, rhs: Decimal) {
        self.0 -= rhs.0;
    }
}

impl std::iter::Sum for Decimal {
    fn sum<I: Iterator<Item = Decimal>>(iter: I) -> Decimal {
        iter.fold(Decimal::ZERO, |a, b| a + b)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Decimal;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal string such as \"12.34\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Decimal, E> {
                Decimal::parse(s).ok_or_else(|| {
                    E::custom(format!(
                        "expected a decimal string such as \"12.34\", got {s:?}"
                    ))
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Decimal, E> {
                Err(E::custom(format!(
                    "expected a decimal string such as \"12.34\", got the JSON number {v} (numbers lose cents; send a string)"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

/// The wire pattern of a [`Decimal`]; kept beside the parser it mirrors.
pub const DECIMAL_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

impl JsonSchema for Decimal {
    fn schema_name() -> Cow<'static, str> {
        "Decimal".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An exact decimal number as a string, e.g. \"12.34\". Never a JSON number.",
            "type": "string",
            "pattern": DECIMAL_PATTERN,
        })
    }
}

/// An amount of money in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Money {
    /// The exact amount, e.g. `"12.34"`.
    pub amount: Decimal,
    /// ISO 4217 currency code, upper case, e.g. `USD`.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
}

impl Money {
    /// Builds a money value from a decimal string; panics only on a programming error in a literal.
    pub fn usd(amount: &str) -> Money {
        Money {
            amount: Decimal::parse(amount).expect("literal decimal"),
            currency: "USD".into(),
        }
    }

    /// Checks the currency code; `field` is the path used in the error.
    pub(crate) fn check(&self, schema: &str, field: &str) -> Result<(), crate::SchemaError> {
        let ok = self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if ok {
            Ok(())
        } else {
            Err(crate::SchemaError::field(
                schema,
                format!("{field}.currency"),
                "expected an ISO 4217 code of three upper-case letters",
                &self.currency,
            ))
        }
    }

    /// Checks the currency code and that the amount is not negative.
    pub(crate) fn check_non_negative(
        &self,
        schema: &str,
        field: &str,
    ) -> Result<(), crate::SchemaError> {
        self.check(schema, field)?;
        if self.amount.is_negative() {
            return Err(crate::SchemaError::field(
                schema,
                format!("{field}.amount"),
                "must not be negative",
                self.amount,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_only() {
        assert_eq!(Decimal::parse("12.34").unwrap().to_string(), "12.34");
        assert_eq!(Decimal::parse("-0.5").unwrap().to_string(), "-0.5");
        assert_eq!(Decimal::parse("7").unwrap().to_string(), "7");
        for bad in ["", "-", "1.", ".5", "1e3", "-3.x", " 1", "1,5", "+1", "NaN"] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn json_numbers_are_refused_with_a_reason() {
        let err = serde_json::from_str::<Decimal>("12.5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("JSON number 12.5"), "{err}");
        let err = serde_json::from_str::<Decimal>("\"-3.x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains(r#"got "-3.x""#), "{err}");
    }

    #[test]
    fn sums_are_exact() {
        let tenth = Decimal::parse("0.1").unwrap();
        let total: Decimal = std::iter::repeat_n(tenth, 10).sum();
        assert_eq!(total, Decimal::parse("1.0").unwrap());
    }
}
