//! Bucket sums as fixed-point integers: the catalog evaluates every measure at scale 9
//! (`event_table::DECIMAL_SCALE`), so an `i128` mantissa holds each sum exactly and adds in two
//! instructions, where `rust_decimal` aligns scales on every addition.

use crate::Decimal;

use crate::event_table::DECIMAL_SCALE;

/// A sum: the mantissa of a decimal at scale [`DECIMAL_SCALE`].
pub type Fixed = i128;

/// `d` as a mantissa at scale 9. Every contribution comes from the evaluated Arrow arrays at
/// that scale, so this only rescales values built elsewhere (tests, stock levels); digits
/// beyond the ninth place, which no evaluated value has, are rounded off.
pub fn fixed(d: Decimal) -> Fixed {
    let mut v = d.0;
    if v.scale() != DECIMAL_SCALE as u32 {
        v.rescale(DECIMAL_SCALE as u32);
    }
    // A rust_decimal mantissa has 96 bits: it always fits.
    let m = v.mantissa();
    if v.scale() == DECIMAL_SCALE as u32 {
        m
    } else {
        // `rescale` keeps the value when scale 9 would overflow 96 bits (beyond 7.9e19):
        // widen the mantissa in 128 bits instead.
        m * 10i128.pow(DECIMAL_SCALE as u32 - v.scale())
    }
}

/// A sum as a decimal at scale 9, the form formulas evaluate; a sum beyond what a decimal can
/// hold at that scale (7.9e19) loses its smallest places rather than failing.
pub fn decimal(v: Fixed) -> Decimal {
    let mut m = v;
    let mut scale = DECIMAL_SCALE as u32;
    loop {
        if let Ok(d) = rust_decimal::Decimal::try_from_i128_with_scale(m, scale) {
            return Decimal(d);
        }
        if scale == 0 {
            // Beyond 7.9e28: clamp (no amount of any real shop gets here).
            return Decimal(if m < 0 {
                rust_decimal::Decimal::MIN
            } else {
                rust_decimal::Decimal::MAX
            });
        }
        m /= 10;
        scale -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal(s.parse().unwrap())
    }

    #[test]
    fn decimals_go_to_scale_nine_and_back_exactly() {
        for s in ["0", "12.34", "-3.000000001", "79228162514.264337593"] {
            assert_eq!(decimal(fixed(d(s))), d(s), "{s}");
        }
        assert_eq!(fixed(d("12.34")), 12_340_000_000);
        assert_eq!(fixed(d("-0.000000001")), -1);
    }

    #[test]
    fn a_sum_beyond_a_decimal_at_scale_nine_keeps_its_integer_part() {
        let big = fixed(d("70000000000000000000")) * 4; // 2.8e20 > 7.9e19
        assert_eq!(decimal(big), d("280000000000000000000"));
        assert_eq!(fixed(d("280000000000000000000")), big);
    }
}
