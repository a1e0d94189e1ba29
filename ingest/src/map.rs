//! Reading platform records field by field, with errors that name the field and the value
//! (the reason a record goes to the dead-letter topic).

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use kpiflow_schemas::{AdPerformance, Decimal, Money};
use serde_json::Value;

use crate::pull::Fact;

/// Why a record could not be mapped: names the field, the value and the rule.
pub type MapError = String;

/// One platform record (a JSON object), read by dotted field paths such as `OrderTotal.Amount`.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a>(pub &'a Value);

impl<'a> Record<'a> {
    /// The value at `path`, if present and not null.
    pub fn get(&self, path: &str) -> Option<&'a Value> {
        let mut cur = self.0;
        for part in path.split('.') {
            cur = cur.get(part)?;
        }
        (!cur.is_null()).then_some(cur)
    }

    /// A required string.
    pub fn str(&self, path: &str) -> Result<&'a str, MapError> {
        match self.get(path) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(v) => Err(format!(
                "field `{path}`: expected a non-empty string, got {v}"
            )),
            None => Err(format!("field `{path}` is missing")),
        }
    }

    /// An optional string (absent, null or empty is `None`).
    pub fn opt_str(&self, path: &str) -> Result<Option<&'a str>, MapError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(_) => self.str(path).map(Some),
        }
    }

    /// A required RFC 3339 / ISO 8601 timestamp with an offset, e.g. `2026-11-02T17:03:00Z`.
    pub fn time(&self, path: &str) -> Result<DateTime<Utc>, MapError> {
        let s = self.str(path)?;
        parse_time(s).ok_or_else(|| {
            format!("field `{path}`: expected an ISO 8601 time with offset such as \"2026-11-02T17:03:00Z\", got {s:?}")
        })
    }

    /// An optional timestamp.
    pub fn opt_time(&self, path: &str) -> Result<Option<DateTime<Utc>>, MapError> {
        match self.opt_str(path)? {
            None => Ok(None),
            Some(_) => self.time(path).map(Some),
        }
    }

    /// A required date `YYYY-MM-DD`.
    pub fn date(&self, path: &str) -> Result<NaiveDate, MapError> {
        let s = self.str(path)?;
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            format!("field `{path}`: expected a date such as \"2026-11-02\", got {s:?}")
        })
    }

    /// A required epoch-milliseconds timestamp (a JSON integer or a string of digits).
    pub fn epoch_ms(&self, path: &str) -> Result<DateTime<Utc>, MapError> {
        let ms = self.int(path)?;
        DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| format!("field `{path}`: {ms} is not a time in epoch milliseconds"))
    }

    /// A required integer, from a JSON integer or a string of digits (platforms do both).
    pub fn int(&self, path: &str) -> Result<i64, MapError> {
        match self.get(path) {
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default()),
            Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                Ok(s.trim().parse().unwrap_or_default())
            }
            Some(v) => Err(format!("field `{path}`: expected an integer, got {v}")),
            None => Err(format!("field `{path}` is missing")),
        }
    }

    /// A required count (non-negative integer).
    pub fn count(&self, path: &str) -> Result<u64, MapError> {
        let n = self.int(path)?;
        u64::try_from(n).map_err(|_| format!("field `{path}`: must not be negative, got {n}"))
    }

    /// An optional count; absent is 0.
    pub fn count_or_zero(&self, path: &str) -> Result<u64, MapError> {
        if self.get(path).is_none() {
            return Ok(0);
        }
        self.count(path)
    }

    /// A required exact decimal: a decimal string (`"12.34"`), or a JSON number read through
    /// its shortest decimal form (exact for the up to 15 significant digits money has; report
    /// APIs send numbers).
    pub fn decimal(&self, path: &str) -> Result<Decimal, MapError> {
        match self.get(path) {
            Some(Value::String(s)) => Decimal::parse(s.trim()).ok_or_else(|| {
                format!("field `{path}`: expected a decimal such as \"12.34\", got {s:?}")
            }),
            Some(Value::Number(n)) => number_to_decimal(n)
                .ok_or_else(|| format!("field `{path}`: {n} is not an exact decimal")),
            Some(v) => Err(format!(
                "field `{path}`: expected a decimal such as \"12.34\", got {v}"
            )),
            None => Err(format!("field `{path}` is missing")),
        }
    }

    /// Money from an amount field and a currency code, e.g. (`OrderTotal.Amount`,
    /// `OrderTotal.CurrencyCode`).
    pub fn money(&self, amount: &str, currency: &str) -> Result<Money, MapError> {
        Ok(Money {
            amount: self.decimal(amount)?,
            currency: self.currency(currency)?,
        })
    }

    /// A required ISO 4217 code.
    pub fn currency(&self, path: &str) -> Result<String, MapError> {
        let c = self.str(path)?;
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(c.to_string())
        } else {
            Err(format!(
                "field `{path}`: expected an ISO 4217 code such as \"USD\", got {c:?}"
            ))
        }
    }
}

/// Parses RFC 3339, also with a space instead of `T` (some platforms write that).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1)))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn number_to_decimal(n: &serde_json::Number) -> Option<Decimal> {
    if let Some(i) = n.as_i64() {
        return Some(Decimal::from_i64(i));
    }
    let f = n.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    // Rust prints the shortest decimal that reads back as the same f64: the digits the
    // platform wrote, as long as it wrote at most 15 significant ones.
    let text = format!("{f}");
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits > 17 {
        return None;
    }
    text.parse::<rust_decimal::Decimal>().ok().map(Decimal)
}

/// The event id of a parcel's delivery, `delivered-<shop>-<tracking number>` (the number
/// without spaces, upper-cased), the same whichever connector reports it.
///
/// On-time delivery sums the units of `order.delivered` over the units shipped with valid
/// tracking: one parcel delivered must count once even when a tracking aggregator
/// (`aftership_webhook`, `track17_webhook`) and the store (`shopify_webhook`'s delivered
/// fulfilments) both report it, or the rate could pass 100%. The id therefore leaves out the
/// source, the carrier (AfterShip's slug `ups`, 17TRACK's code `100002` and Shopify's `UPS`
/// name the same carrier differently) and the delivery time (each source learns it at its own
/// moment): a parcel is delivered once. The processor keeps the first report it reads.
pub fn parcel_delivered_id(shop: &str, tracking_number: &str) -> String {
    let number: String = tracking_number
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    format!("delivered-{shop}-{number}")
}

/// The first instant of `date` in `tz` (the earliest, where a DST change makes it ambiguous).
pub fn local_midnight(date: NaiveDate, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    (0..3).find_map(|h| {
        tz.from_local_datetime(&date.and_hms_opt(h, 0, 0)?)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// What every ad row of one read shares: whose figures, in which currency and zone, as of when.
#[derive(Debug, Clone)]
pub struct AdContext<'a> {
    /// The ad platform, e.g. `amazon_ads`.
    pub platform: &'static str,
    /// The ad account (profile, customer, advertiser) id.
    pub account: &'a str,
    /// The account's currency (report rows rarely carry it).
    pub currency: &'a str,
    /// The account's zone: report dates are its days.
    pub tz: chrono_tz::Tz,
    /// The attribution window label, e.g. `7d`.
    pub window: &'a str,
    /// When the platform reported these figures (a report's completion, or the read).
    pub as_of: DateTime<Utc>,
}

/// The columns of a campaign-day report row (Amazon Ads v3, Walmart Connect snapshots):
/// `date`, `campaignId`, `impressions`, `clicks` and the named spend, orders and sales.
#[derive(Debug, Clone, Copy)]
pub struct ReportColumns<'a> {
    /// The spend column, e.g. `cost`.
    pub spend: &'a str,
    /// The attributed orders of the attribution window, e.g. `purchases7d`.
    pub orders: &'a str,
    /// The attributed sales of the attribution window, e.g. `sales7d`.
    pub sales: &'a str,
}

/// Maps one campaign-day report row; `Err` names the field and value that made it unusable.
/// A campaign with no spend, orders or sales that day may leave those columns out (0).
pub fn campaign_day(
    v: &Value,
    ctx: &AdContext<'_>,
    cols: ReportColumns<'_>,
) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let campaign = match r.get("campaignId") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => return Err(format!("field `campaignId`: expected an id, got {other}")),
        None => return Err("field `campaignId` is missing".into()),
    };
    let or_zero = |field: &str| -> Result<Decimal, MapError> {
        if r.get(field).is_none() {
            Ok(Decimal::ZERO)
        } else {
            r.decimal(field)
        }
    };
    ctx.fact(AdRow {
        campaign,
        date: r.date("date")?,
        impressions: r.count("impressions")?,
        clicks: r.count("clicks")?,
        spend: or_zero(cols.spend)?,
        orders: r.count_or_zero(cols.orders)?,
        sales: or_zero(cols.sales)?,
    })
}

/// One campaign-day of an ad report, read.
#[derive(Debug, Clone)]
pub struct AdRow {
    /// Campaign id.
    pub campaign: String,
    /// Report date, in the account's zone.
    pub date: NaiveDate,
    /// Impressions.
    pub impressions: u64,
    /// Clicks.
    pub clicks: u64,
    /// Spend, in the account's currency.
    pub spend: Decimal,
    /// Attributed orders.
    pub orders: u64,
    /// Attributed sales, in the account's currency.
    pub sales: Decimal,
}

impl AdContext<'_> {
    /// The `ad.performance` fact of `row`: timed at the start of its date in the account's
    /// zone, with the id `{platform}:{account}:{campaign}:{date}:{as_of ms}`, so every version
    /// of a (platform, account, campaign, date) is its own event and the latest `as_of` wins.
    pub fn fact(&self, row: AdRow) -> Result<Vec<Fact>, MapError> {
        let day_start = local_midnight(row.date, self.tz)
            .ok_or_else(|| format!("date {} has no midnight in {}", row.date, self.tz))?;
        let money = |amount: Decimal| Money {
            amount,
            currency: self.currency.to_string(),
        };
        let id = format!(
            "{}:{}:{}:{}:{}",
            self.platform,
            self.account,
            row.campaign,
            row.date,
            self.as_of.timestamp_millis()
        );
        let body = AdPerformance {
            platform: self.platform.to_string(),
            account_id: self.account.to_string(),
            campaign_id: row.campaign,
            date: row.date,
            impressions: row.impressions,
            clicks: row.clicks,
            spend: money(row.spend),
            attributed_orders: row.orders,
            attributed_sales: money(row.sales),
            attribution_window: self.window.to_string(),
            as_of: self.as_of,
        };
        Ok(vec![Fact::new(id, day_start, body)])
    }
}

/// A fractional count (data-driven attribution: 3.5 conversions) as whole orders, rounded
/// half away from zero; `field` names it in errors.
pub fn whole(value: Decimal, field: &str) -> Result<u64, MapError> {
    let rounded = value
        .0
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    u64::try_from(rounded.mantissa())
        .map_err(|_| format!("field `{field}`: expected a count, got {value}"))
}

/// Parses JSON keeping every number as the text it was written in (a JSON string), so an
/// amount such as Amazon Finances' `CurrencyAmount: 12.99` is read by [`Record::decimal`] as
/// an exact decimal and never passes through `f64`; [`Record::int`] reads the integers.
pub fn exact_numbers(json: &str) -> Result<Value, serde_json::Error> {
    let mut out = String::with_capacity(json.len() + 16);
    let mut chars = json.char_indices().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some((_, c)) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            // Outside a string, only a number starts with a minus or a digit.
            '-' | '0'..='9' => {
                out.push('"');
                out.push(c);
                while let Some(&(_, n)) = chars.peek() {
                    if !matches!(n, '0'..='9' | '.' | 'e' | 'E' | '+' | '-') {
                        break;
                    }
                    out.push(n);
                    chars.next();
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    serde_json::from_str(&out)
}

/// A raw record for the dead-letter topic.
pub fn raw(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_read_by_path_and_errors_name_field_and_value() {
        let v = json!({"OrderTotal": {"Amount": "25.98", "CurrencyCode": "USD"},
                       "PurchaseDate": "2026-11-02T17:03:00Z", "n": "3", "bad": "12,5",
                       "cost": 12.34, "ms": 1_793_000_000_000_i64});
        let r = Record(&v);
        let m = r
            .money("OrderTotal.Amount", "OrderTotal.CurrencyCode")
            .unwrap();
        assert_eq!(
            (m.amount.to_string(), m.currency.as_str()),
            ("25.98".into(), "USD")
        );
        assert_eq!(r.count("n").unwrap(), 3);
        assert_eq!(r.decimal("cost").unwrap().to_string(), "12.34");
        assert_eq!(
            r.decimal("bad").unwrap_err(),
            "field `bad`: expected a decimal such as \"12.34\", got \"12,5\""
        );
        assert_eq!(r.str("Nope.x").unwrap_err(), "field `Nope.x` is missing");
        assert_eq!(
            r.time("n").unwrap_err(),
            "field `n`: expected an ISO 4217 time with offset such as \"2026-11-02T17:03:00Z\", got \"3\""
                .replace("ISO 4217", "ISO 8601")
        );
        assert_eq!(r.epoch_ms("ms").unwrap().timestamp(), 1_793_000_000);
        assert_eq!(
            r.time("PurchaseDate").unwrap().to_rfc3339(),
            "2026-11-02T17:03:00+00:00"
        );
    }

    #[test]
    fn exact_numbers_keep_the_written_text_and_leave_strings_alone() {
        let v = exact_numbers(
            r#"{"a": -0.10, "b": [7, 1e2], "c": "x\"-1\"", "d": {"CurrencyAmount": 12.345678901234567890}}"#,
        )
        .unwrap();
        assert_eq!(v["a"], "-0.10");
        assert_eq!(v["b"], serde_json::json!(["7", "1e2"]));
        assert_eq!(v["c"], "x\"-1\"");
        // More digits than an f64 holds, all kept.
        assert_eq!(
            Record(&v).decimal("d.CurrencyAmount").unwrap().to_string(),
            "12.345678901234567890"
        );
        assert_eq!(
            Record(&v).int("b").unwrap_err(),
            "field `b`: expected an integer, got [\"7\",\"1e2\"]"
        );
        assert!(exact_numbers("{\"a\": 1,}").is_err());
    }

    #[test]
    fn report_numbers_keep_their_written_digits() {
        for (n, want) in [
            (json!(0.1), "0.1"),
            (json!(1234.56), "1234.56"),
            (json!(7), "7"),
        ] {
            assert_eq!(
                Record(&json!({ "x": n })).decimal("x").unwrap().to_string(),
                want
            );
        }
    }
}
