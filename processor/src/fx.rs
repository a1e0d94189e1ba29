//! Dated FX rates: money in another currency is converted to the pipeline currency at the
//! rate of the fact's business day (`[processor.fx]`), so a CAD shop's orders count in USD.
//!
//! A rate is "pipeline currency per one unit" (CAD 1 = USD 0.72 is `rate = "0.72"` for CAD
//! with `currency = "USD"`). The rate of day D is the newest rate dated D or earlier, at most
//! `max_age` old (markets close on weekends and holidays). The canonical events keep their
//! original amount and currency (the sink's events archive holds them); only the engine's
//! sums are converted, rounded to the 9 decimal places every sum keeps.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use kpiflow_schemas::{Decimal, Money};
use serde::Deserialize;

use crate::ProcessorError;
use crate::event_table::DECIMAL_SCALE;

/// `[processor.fx]`: where the rates come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxConfig {
    /// Rates written in the config: `[{ date = "2026-11-02", currency = "CAD", rate = "0.72" }]`.
    #[serde(default)]
    pub rates: Vec<RateConfig>,
    /// A CSV file of rates, header `date,currency,rate`, one row per day and currency (e.g. a
    /// daily export of your bank's or the ECB's reference rates). Read at start-up.
    #[serde(default)]
    pub rates_file: Option<PathBuf>,
    /// How old the newest rate before a fact's day may be and still be used (weekends,
    /// holidays). Default `4days`; a fact with no rate that recent is dead-lettered
    /// (`currency`), and so is every other fact of its order.
    #[serde(default = "FxConfig::max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for FxConfig {
    fn default() -> Self {
        FxConfig {
            rates: Vec::new(),
            rates_file: None,
            max_age: Self::max_age(),
        }
    }
}

impl FxConfig {
    fn max_age() -> Duration {
        Duration::from_secs(4 * 24 * 3600)
    }
}

/// One dated rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// The day the rate is for (`YYYY-MM-DD`).
    pub date: NaiveDate,
    /// The ISO 4217 code converted from, e.g. `CAD`.
    pub currency: String,
    /// Units of the pipeline currency per one unit of `currency`, as a decimal string.
    pub rate: Decimal,
}

/// Every rate, by currency and day.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    by_currency: HashMap<String, BTreeMap<NaiveDate, Decimal>>,
    max_age_days: i64,
}

impl Rates {
    /// Checks the inline rates (no I/O): codes, signs, duplicates.
    pub fn validate(cfg: &FxConfig, pipeline: &str) -> Result<(), ProcessorError> {
        let mut rates = Rates::default();
        for (i, r) in cfg.rates.iter().enumerate() {
            rates.add(&format!("fx.rates[{i}]"), r, pipeline)?;
        }
        if !cfg.max_age.as_secs().is_multiple_of(86_400) {
            return Err(ProcessorError::config(
                "fx.max_age",
                humantime::format_duration(cfg.max_age).to_string(),
                "must be whole days (rates are per day)",
            ));
        }
        Ok(())
    }

    /// The inline rates and those of `rates_file`, checked.
    pub fn load(cfg: &FxConfig, pipeline: &str) -> Result<Rates, ProcessorError> {
        Self::validate(cfg, pipeline)?;
        let mut rates = Rates {
            max_age_days: (cfg.max_age.as_secs() / 86_400) as i64,
            ..Rates::default()
        };
        for (i, r) in cfg.rates.iter().enumerate() {
            rates.add(&format!("fx.rates[{i}]"), r, pipeline)?;
        }
        if let Some(path) = &cfg.rates_file {
            let file = |problem: String| ProcessorError::config("fx.rates_file", path, problem);
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_path(path)
                .map_err(|e| file(format!("cannot read: {e}")))?;
            let header = reader
                .headers()
                .map_err(|e| file(format!("cannot read the header: {e}")))?;
            if header.iter().collect::<Vec<_>>() != ["date", "currency", "rate"] {
                return Err(file(format!(
                    "expected the header `date,currency,rate`, got `{}`",
                    header.iter().collect::<Vec<_>>().join(",")
                )));
            }
            for (n, row) in reader.records().enumerate() {
                // Line numbers as an editor shows them: the header is line 1.
                let at = format!("fx.rates_file {} line {}", path.display(), n + 2);
                let row = row.map_err(|e| ProcessorError::config(&at, "", e.to_string()))?;
                let field = |i: usize| row.get(i).unwrap_or_default();
                let date = field(0).parse().map_err(|_| {
                    ProcessorError::config(&format!("{at}.date"), field(0), "expected YYYY-MM-DD")
                })?;
                let rate = Decimal::parse(field(2)).ok_or_else(|| {
                    ProcessorError::config(
                        &format!("{at}.rate"),
                        field(2),
                        "expected a decimal such as 0.72",
                    )
                })?;
                let r = RateConfig {
                    date,
                    currency: field(1).to_string(),
                    rate,
                };
                rates.add(&at, &r, pipeline)?;
            }
        }
        Ok(rates)
    }

    fn add(&mut self, at: &str, r: &RateConfig, pipeline: &str) -> Result<(), ProcessorError> {
        let code_ok = r.currency.len() == 3 && r.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !code_ok {
            return Err(ProcessorError::config(
                &format!("{at}.currency"),
                &r.currency,
                "expected an ISO 4217 code such as \"CAD\"",
            ));
        }
        if r.currency == pipeline {
            return Err(ProcessorError::config(
                &format!("{at}.currency"),
                &r.currency,
                "is the pipeline currency (processor.currency): it needs no rate",
            ));
        }
        if r.rate <= Decimal::ZERO {
            return Err(ProcessorError::config(
                &format!("{at}.rate"),
                r.rate,
                "must be above zero",
            ));
        }
        let days = self.by_currency.entry(r.currency.clone()).or_default();
        if let Some(old) = days.insert(r.date, r.rate)
            && old != r.rate
        {
            return Err(ProcessorError::config(
                &format!("{at}.date"),
                r.date,
                format!(
                    "{} already has rate {old} for this day; give one rate per day and currency",
                    r.currency
                ),
            ));
        }
        Ok(())
    }

    /// Whether any rate is configured.
    pub fn is_empty(&self) -> bool {
        self.by_currency.is_empty()
    }

    /// The rate of `currency` for business day `day`, with the day it is dated; `Err` says
    /// what rates exist.
    pub fn rate(&self, currency: &str, day: NaiveDate) -> Result<(NaiveDate, Decimal), String> {
        let Some(days) = self.by_currency.get(currency) else {
            return Err(format!(
                "no FX rate for {currency} is configured (processor.fx)"
            ));
        };
        match days.range(..=day).next_back() {
            Some((d, r)) if (day - *d).num_days() <= self.max_age_days => Ok((*d, *r)),
            newest => Err(format!(
                "no FX rate for {currency} on {day} or up to {} days before (newest before it: {}; processor.fx.max_age)",
                self.max_age_days,
                newest.map_or("none".to_string(), |(d, _)| d.to_string()),
            )),
        }
    }

    /// `money` in the pipeline currency `pipeline`, converted at the rate of `day`.
    pub fn convert(&self, money: &Money, day: NaiveDate, pipeline: &str) -> Result<Money, String> {
        let (_, rate) = self.rate(&money.currency, day)?;
        let amount = money
            .amount
            .0
            .checked_mul(rate.0)
            .ok_or_else(|| format!("{} {} x {rate} overflows", money.amount, money.currency))?
            .round_dp_with_strategy(
                DECIMAL_SCALE as u32,
                rust_decimal::RoundingStrategy::MidpointNearestEven,
            );
        Ok(Money {
            amount: Decimal(amount),
            currency: pipeline.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rates: &[(&str, &str, &str)]) -> FxConfig {
        FxConfig {
            rates: rates
                .iter()
                .map(|(d, c, r)| RateConfig {
                    date: d.parse().unwrap(),
                    currency: c.to_string(),
                    rate: Decimal::parse(r).unwrap(),
                })
                .collect(),
            ..FxConfig::default()
        }
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_newest_rate_on_or_before_the_day_within_max_age_applies() {
        let r = Rates::load(
            &cfg(&[("2026-11-02", "CAD", "0.72"), ("2026-11-06", "CAD", "0.71")]),
            "USD",
        )
        .unwrap();
        assert_eq!(
            r.rate("CAD", day("2026-11-02")).unwrap().1.to_string(),
            "0.72"
        );
        // Saturday and Sunday use Friday's rate.
        assert_eq!(
            r.rate("CAD", day("2026-11-08")).unwrap(),
            (day("2026-11-06"), Decimal::parse("0.71").unwrap())
        );
        let err = r.rate("CAD", day("2026-11-01")).unwrap_err();
        assert!(err.contains("no FX rate for CAD on 2026-11-01"), "{err}");
        let err = r.rate("CAD", day("2026-11-11")).unwrap_err();
        assert!(err.contains("newest before it: 2026-11-06"), "{err}");
        let err = r.rate("MXN", day("2026-11-02")).unwrap_err();
        assert!(err.contains("no FX rate for MXN is configured"), "{err}");
        let usd = r
            .convert(
                &Money {
                    amount: Decimal::parse("100.00").unwrap(),
                    currency: "CAD".into(),
                },
                day("2026-11-02"),
                "USD",
            )
            .unwrap();
        assert_eq!(
            (usd.amount.to_string().as_str(), usd.currency.as_str()),
            ("72.0000", "USD")
        );
    }

    #[test]
    fn bad_rates_name_the_key_and_value() {
        let err = Rates::load(&cfg(&[("2026-11-02", "cad", "0.72")]), "USD").unwrap_err();
        assert!(
            err.to_string()
                .contains("`processor.fx.rates[0].currency` = \"cad\""),
            "{err}"
        );
        let err = Rates::load(&cfg(&[("2026-11-02", "USD", "1")]), "USD").unwrap_err();
        assert!(
            err.to_string().contains("is the pipeline currency"),
            "{err}"
        );
        let err = Rates::load(&cfg(&[("2026-11-02", "CAD", "-0.72")]), "USD").unwrap_err();
        assert!(
            err.to_string().contains("`processor.fx.rates[0].rate`"),
            "{err}"
        );
        let err = Rates::load(
            &cfg(&[("2026-11-02", "CAD", "0.72"), ("2026-11-02", "CAD", "0.73")]),
            "USD",
        )
        .unwrap_err();
        assert!(err.to_string().contains("already has rate 0.72"), "{err}");
    }

    #[test]
    fn a_rates_file_is_read_and_its_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.csv");
        std::fs::write(
            &path,
            "date,currency,rate\n2026-11-02,CAD,0.72\n2026-11-02,MXN,0.055\n",
        )
        .unwrap();
        let fx = FxConfig {
            rates_file: Some(path.clone()),
            ..FxConfig::default()
        };
        let r = Rates::load(&fx, "USD").unwrap();
        assert_eq!(
            r.rate("MXN", day("2026-11-03")).unwrap().1.to_string(),
            "0.055"
        );
        std::fs::write(
            &path,
            "date,currency,rate\n2026-11-02,CAD,0.72\n2026-13-02,CAD,0.7\n",
        )
        .unwrap();
        let err = Rates::load(&fx, "USD").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        std::fs::write(&path, "day,code,value\n").unwrap();
        let err = Rates::load(&fx, "USD").unwrap_err().to_string();
        assert!(
            err.contains("expected the header `date,currency,rate`"),
            "{err}"
        );
    }
}
