//! Rolling windows: the last N hours, ending on each hour boundary.

use super::Hour;

/// Windows of `hours` hours; the window ending at hour `e` is `[e - hours, e)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rolling {
    /// Window length in hours.
    pub hours: u32,
    name: String,
}

impl Rolling {
    /// Windows of `hours` hours, named `rolling_<hours>h`.
    pub fn new(hours: u32) -> Rolling {
        Rolling {
            hours,
            name: format!("rolling_{hours}h"),
        }
    }

    /// The name, e.g. `rolling_24h`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The window ending at `end`.
    pub fn ending_at(&self, end: Hour) -> (Hour, Hour) {
        (end - i64::from(self.hours), end)
    }

    /// End hours of every window that contains hour `h`.
    pub fn ends_containing(&self, h: Hour) -> std::ops::RangeInclusive<Hour> {
        h + 1..=h + i64::from(self.hours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// An hour is in exactly the windows `ends_containing` names, and in no other.
        #[test]
        fn membership_matches_bounds(h in -10_000i64..10_000, len in 1u32..200, probe in -300i64..300) {
            let r = Rolling::new(len);
            let end = h + probe;
            let (s, e) = r.ending_at(end);
            prop_assert_eq!(e - s, i64::from(len));
            prop_assert_eq!(s <= h && h < e, r.ends_containing(h).contains(&end));
        }
    }
}
