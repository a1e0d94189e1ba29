//! Reading the cost file, CSV or TOML, into cost rows; what cannot be read becomes a dead
//! letter naming the file, the line (or entry), the column and the value.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use kpiflow_schemas::{Decimal, Money};

use super::config::{Format, is_currency};
use crate::push::queue::Rejected;

/// Most bytes of a whole unreadable file kept in its dead letter (Kafka refuses huge records).
const MAX_RAW_FILE: usize = 64 * 1024;

/// Every column (CSV) or key (TOML) of a cost, in the order the docs list them.
pub const COLUMNS: [&str; 6] = [
    "sku",
    "effective_from",
    "purchase",
    "freight",
    "duties",
    "currency",
];

/// The columns a cost must have.
const REQUIRED: [&str; 3] = ["sku", "effective_from", "purchase"];

/// One cost of one SKU from one day on, as the file states it.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    /// The SKU.
    pub sku: String,
    /// The first business day the cost applies to.
    pub effective_from: NaiveDate,
    /// Purchase price of one unit.
    pub purchase: Money,
    /// Freight per unit, if the file gives it.
    pub freight: Option<Money>,
    /// Duties per unit, if the file gives it.
    pub duties: Option<Money>,
    /// Where in the file: `line 3` (CSV), `[[cost]] entry 2 (line 7)` (TOML).
    pub at: String,
    /// The row as written (CSV: under its header), for a dead letter.
    pub raw: Vec<u8>,
}

impl CostRow {
    /// What identifies a cost within a file and across reads.
    pub fn key(&self) -> (String, NaiveDate) {
        (self.sku.clone(), self.effective_from)
    }
}

/// What one read of the file gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedFile {
    /// The costs, in file order, one per (SKU, effective_from).
    pub rows: Vec<CostRow>,
    /// Rows that could not be used, and why.
    pub dead_letters: Vec<Rejected>,
    /// `true` when the file could not be read as a whole (its reason is the one dead letter).
    pub failed: bool,
}

/// Parses one version of the file named `name`; `currency` is the config's default.
pub fn parse(format: Format, name: &str, bytes: &[u8], currency: &str) -> ParsedFile {
    let parsed = match format {
        Format::Csv => parse_csv(name, bytes, currency),
        Format::Toml => parse_toml(name, bytes, currency),
    };
    match parsed {
        Ok(p) => without_repeats(name, p),
        Err(reason) => whole_file(reason, bytes),
    }
}

/// The one dead letter of a file that cannot be read at all.
fn whole_file(reason: String, bytes: &[u8]) -> ParsedFile {
    let raw = bytes[..bytes.len().min(MAX_RAW_FILE)].to_vec();
    let reason = if bytes.len() > MAX_RAW_FILE {
        format!(
            "{reason} (payload: the first {MAX_RAW_FILE} of {} bytes)",
            bytes.len()
        )
    } else {
        reason
    };
    ParsedFile {
        rows: vec![],
        dead_letters: vec![Rejected {
            kind: "invalid_file",
            reason,
            raw,
        }],
        failed: true,
    }
}

/// Keeps the first row of each (SKU, effective_from); a later one is a dead letter naming
/// both places.
fn without_repeats(name: &str, parsed: ParsedFile) -> ParsedFile {
    let mut first: BTreeMap<(String, NaiveDate), String> = BTreeMap::new();
    let mut out = ParsedFile {
        dead_letters: parsed.dead_letters,
        ..ParsedFile::default()
    };
    for row in parsed.rows {
        match first.get(&row.key()) {
            Some(at) => out.dead_letters.push(Rejected {
                kind: "duplicate",
                reason: format!(
                    "file {name}, {}: sku {:?} effective_from {} repeats {at}; the first is kept",
                    row.at, row.sku, row.effective_from
                ),
                raw: row.raw,
            }),
            None => {
                first.insert(row.key(), row.at.clone());
                out.rows.push(row);
            }
        }
    }
    out
}

/// Why one value could not be used: the column, the value and the rule.
struct FieldError {
    column: &'static str,
    value: String,
    problem: String,
}

impl FieldError {
    fn new(column: &'static str, value: &str, problem: impl Into<String>) -> FieldError {
        FieldError {
            column,
            value: value.to_string(),
            problem: problem.into(),
        }
    }
}

/// The fields of a cost by column; every value trimmed, an empty one `""`.
type Cells<'a> = BTreeMap<&'static str, &'a str>;

/// The cost's fields read from `cells` (`at` and `raw` left for the caller).
fn cost(cells: &Cells<'_>, default_currency: &str) -> Result<CostRow, FieldError> {
    let cell = |c: &'static str| cells.get(c).copied().unwrap_or("");
    let sku = cell("sku");
    if sku.is_empty() {
        return Err(FieldError::new(
            "sku",
            sku,
            "must not be empty: a cost is the cost of one SKU",
        ));
    }
    let day = cell("effective_from");
    let effective_from = NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| {
        FieldError::new(
            "effective_from",
            day,
            "expected a date YYYY-MM-DD such as \"2026-11-01\"",
        )
    })?;
    let currency = match cell("currency") {
        "" => default_currency,
        c if is_currency(c) => c,
        c => {
            return Err(FieldError::new(
                "currency",
                c,
                "expected an ISO 4217 code of three upper-case letters such as \"USD\"",
            ));
        }
    };
    let money = |column: &'static str| -> Result<Option<Money>, FieldError> {
        let v = cell(column);
        if v.is_empty() {
            return Ok(None);
        }
        let amount = Decimal::parse(v).ok_or_else(|| {
            FieldError::new(
                column,
                v,
                "expected a decimal amount such as \"6.40\" (a point, no thousands separator or currency sign)",
            )
        })?;
        if amount.is_negative() {
            return Err(FieldError::new(column, v, "must not be negative"));
        }
        Ok(Some(Money {
            amount,
            currency: currency.to_string(),
        }))
    };
    let purchase = money("purchase")?.ok_or_else(|| {
        FieldError::new(
            "purchase",
            "",
            "is required: the purchase price of one unit",
        )
    })?;
    Ok(CostRow {
        sku: sku.to_string(),
        effective_from,
        purchase,
        freight: money("freight")?,
        duties: money("duties")?,
        at: String::new(),
        raw: Vec::new(),
    })
}

/// A CSV file: a header row (case-sensitive names from [`COLUMNS`], at least the required
/// ones), then one cost per row.
fn parse_csv(name: &str, bytes: &[u8], currency: &str) -> Result<ParsedFile, String> {
    // Spreadsheet exports often start with a byte-order mark.
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let header = rdr
        .headers()
        .map_err(|e| format!("file {name}: unreadable header: {e}"))?
        .clone();
    let mut columns: Vec<&'static str> = Vec::with_capacity(header.len());
    for h in &header {
        let Some(c) = COLUMNS.iter().find(|c| **c == h) else {
            return Err(format!(
                "file {name}: unknown column {h:?} in the header; the columns are {} (names are case-sensitive)",
                COLUMNS.join(", ")
            ));
        };
        if columns.contains(c) {
            return Err(format!(
                "file {name}: column {c:?} appears twice in the header"
            ));
        }
        columns.push(c);
    }
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|c| !columns.contains(c))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "file {name}: the header lacks the column(s) {} (header: {:?})",
            missing.join(", "),
            header.iter().collect::<Vec<_>>().join(",")
        ));
    }
    let mut out = ParsedFile::default();
    for result in rdr.records() {
        let rec = match result {
            Ok(rec) => rec,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.dead_letters.push(Rejected {
                    kind: "invalid",
                    reason: format!("file {name}, line {line}: {e}"),
                    raw: Vec::new(),
                });
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line());
        let raw = raw_row(&header, &rec);
        if rec.len() != columns.len() {
            out.dead_letters.push(Rejected {
                kind: "invalid",
                reason: format!(
                    "file {name}, line {line}: {} fields, but the header has {}",
                    rec.len(),
                    columns.len()
                ),
                raw,
            });
            continue;
        }
        let cells: Cells<'_> = columns.iter().copied().zip(rec.iter()).collect();
        match cost(&cells, currency) {
            Ok(row) => out.rows.push(CostRow {
                at: format!("line {line}"),
                raw,
                ..row
            }),
            Err(fe) => out.dead_letters.push(Rejected {
                kind: "invalid",
                reason: format!(
                    "file {name}, line {line}, column `{}` = {:?}: {}",
                    fe.column, fe.value, fe.problem
                ),
                raw,
            }),
        }
    }
    Ok(out)
}

/// The row as CSV under its header, so the dead letter can be read on its own.
fn raw_row(header: &csv::StringRecord, rec: &csv::StringRecord) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = w.write_record(header);
    let _ = w.write_record(rec);
    w.into_inner().unwrap_or_default()
}

/// The TOML file: `[[cost]]` tables and nothing else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    cost: Vec<toml::Spanned<toml::Table>>,
}

/// A TOML file: `[[cost]]` tables with the keys of [`COLUMNS`]; amounts are quoted decimal
/// strings, `effective_from` a TOML date or a `"YYYY-MM-DD"` string.
fn parse_toml(name: &str, bytes: &[u8], currency: &str) -> Result<ParsedFile, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("file {name}: not UTF-8: {e}"))?;
    let file: TomlFile = toml::from_str(text)
        .map_err(|e| format!("file {name}: not a cost file of [[cost]] tables: {e}"))?;
    let mut out = ParsedFile::default();
    for (i, entry) in file.cost.iter().enumerate() {
        let span = entry.span();
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        let at = format!("[[cost]] entry {} (line {line})", i + 1);
        // The span is the `[[cost]]` header's: the entry runs to the next one (the file holds
        // nothing else).
        let end = file
            .cost
            .get(i + 1)
            .map_or(text.len(), |next| next.span().start);
        let raw = text
            .get(span.start..end)
            .unwrap_or_default()
            .trim()
            .as_bytes()
            .to_vec();
        let reject = |key: &str, value: &str, problem: &str| Rejected {
            kind: "invalid",
            reason: format!("file {name}, {at}, key `{key}` = {value}: {problem}"),
            raw: raw.clone(),
        };
        let mut texts: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut refused = None;
        for (key, value) in entry.get_ref() {
            let Some(column) = COLUMNS.iter().find(|c| **c == key) else {
                refused = Some(reject(
                    key,
                    &value.to_string(),
                    &format!("not a cost key; the keys are {}", COLUMNS.join(", ")),
                ));
                break;
            };
            match value {
                toml::Value::String(s) => {
                    texts.insert(column, s.trim().to_string());
                }
                toml::Value::Datetime(d)
                    if *column == "effective_from" && d.time.is_none() && d.offset.is_none() =>
                {
                    texts.insert(column, d.to_string());
                }
                other => {
                    let problem = match *column {
                        "effective_from" => "expected a date such as 2026-11-01",
                        "purchase" | "freight" | "duties" => {
                            "expected a quoted decimal such as \"6.40\" (a TOML number may have lost cents)"
                        }
                        _ => "expected a string",
                    };
                    refused = Some(reject(key, &other.to_string(), problem));
                    break;
                }
            }
        }
        if let Some(r) = refused {
            out.dead_letters.push(r);
            continue;
        }
        let cells: Cells<'_> = texts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match cost(&cells, currency) {
            Ok(row) => out.rows.push(CostRow { at, raw, ..row }),
            Err(fe) => {
                let value = if texts.contains_key(fe.column) {
                    format!("{:?}", fe.value)
                } else {
                    "(missing)".to_string()
                };
                out.dead_letters
                    .push(reject(fe.column, &value, &fe.problem));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(a: &str) -> Money {
        Money::usd(a)
    }

    fn money(a: &str, c: &str) -> Money {
        Money {
            amount: Decimal::parse(a).unwrap(),
            currency: c.into(),
        }
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn reasons(p: &ParsedFile) -> Vec<(&str, &str)> {
        p.dead_letters
            .iter()
            .map(|d| (d.kind, d.reason.as_str()))
            .collect()
    }

    /// Rows without their raw text, to compare with hand-written ones.
    fn rows(p: &ParsedFile) -> Vec<CostRow> {
        p.rows
            .iter()
            .map(|r| CostRow {
                raw: vec![],
                ..r.clone()
            })
            .collect()
    }

    fn row(
        sku: &str,
        from: &str,
        purchase: Money,
        freight: Option<Money>,
        duties: Option<Money>,
        at: &str,
    ) -> CostRow {
        CostRow {
            sku: sku.into(),
            effective_from: day(from),
            purchase,
            freight,
            duties,
            at: at.into(),
            raw: vec![],
        }
    }

    #[test]
    fn csv_rows_become_costs_in_file_order() {
        let csv = "\u{feff}sku,effective_from,purchase,freight,duties,currency\n\
                   SKU-7,2026-11-01,6.40,1.15,0.45,\n\
                   MUG-12, 2026-10-15 ,3.2,,,\n\
                   TEE-M,2026-11-01,41.00,2.5,,CNY\n";
        let p = parse(Format::Csv, "costs.csv", csv.as_bytes(), "USD");
        assert!(!p.failed);
        assert_eq!(reasons(&p), []);
        assert_eq!(
            rows(&p),
            [
                row(
                    "SKU-7",
                    "2026-11-01",
                    usd("6.40"),
                    Some(usd("1.15")),
                    Some(usd("0.45")),
                    "line 2"
                ),
                row("MUG-12", "2026-10-15", usd("3.2"), None, None, "line 3"),
                row(
                    "TEE-M",
                    "2026-11-01",
                    money("41.00", "CNY"),
                    Some(money("2.5", "CNY")),
                    None,
                    "line 4"
                ),
            ]
        );
        assert_eq!(
            String::from_utf8(p.rows[1].raw.clone()).unwrap(),
            "sku,effective_from,purchase,freight,duties,currency\nMUG-12,2026-10-15,3.2,,,\n"
        );
    }

    #[test]
    fn optional_columns_may_be_left_out_and_the_default_currency_applies() {
        let csv = "effective_from,sku,purchase\n2026-11-01,SKU-7,6.40\n";
        let p = parse(Format::Csv, "c.csv", csv.as_bytes(), "EUR");
        assert_eq!(
            rows(&p),
            [row(
                "SKU-7",
                "2026-11-01",
                money("6.40", "EUR"),
                None,
                None,
                "line 2"
            )]
        );
    }

    #[test]
    fn bad_csv_rows_are_dead_letters_naming_line_column_and_value() {
        let csv = "sku,effective_from,purchase,freight,duties,currency\n\
                   SKU-1,2026-11-01,6.40,,,\n\
                   SKU-2,2026-13-01,6.40,,,\n\
                   SKU-3,2026-11-01,-1.00,,,\n\
                   ,2026-11-01,6.40,,,\n\
                   SKU-4,2026-11-01,,,,\n\
                   SKU-5,2026-11-01,6.40,\"1,15\",,\n\
                   SKU-6,2026-11-01,6.40,,0.3,usd\n\
                   SKU-7,2026-11-01,6.40\n\
                   SKU-8,2026-11-01,$6.40,,,\n\
                   SKU-9,2026-11-02,7.00,0,0,\n";
        let p = parse(Format::Csv, "costs.csv", csv.as_bytes(), "USD");
        assert!(!p.failed);
        assert_eq!(
            reasons(&p),
            [
                (
                    "invalid",
                    "file costs.csv, line 3, column `effective_from` = \"2026-13-01\": expected a date YYYY-MM-DD such as \"2026-11-01\""
                ),
                (
                    "invalid",
                    "file costs.csv, line 4, column `purchase` = \"-1.00\": must not be negative"
                ),
                (
                    "invalid",
                    "file costs.csv, line 5, column `sku` = \"\": must not be empty: a cost is the cost of one SKU"
                ),
                (
                    "invalid",
                    "file costs.csv, line 6, column `purchase` = \"\": is required: the purchase price of one unit"
                ),
                (
                    "invalid",
                    "file costs.csv, line 7, column `freight` = \"1,15\": expected a decimal amount such as \"6.40\" (a point, no thousands separator or currency sign)"
                ),
                (
                    "invalid",
                    "file costs.csv, line 8, column `currency` = \"usd\": expected an ISO 4217 code of three upper-case letters such as \"USD\""
                ),
                (
                    "invalid",
                    "file costs.csv, line 9: 3 fields, but the header has 6"
                ),
                (
                    "invalid",
                    "file costs.csv, line 10, column `purchase` = \"$6.40\": expected a decimal amount such as \"6.40\" (a point, no thousands separator or currency sign)"
                ),
            ]
        );
        // The good rows around the bad ones are kept.
        assert_eq!(
            rows(&p),
            [
                row("SKU-1", "2026-11-01", usd("6.40"), None, None, "line 2"),
                row(
                    "SKU-9",
                    "2026-11-02",
                    usd("7.00"),
                    Some(usd("0")),
                    Some(usd("0")),
                    "line 11"
                ),
            ]
        );
        assert_eq!(
            String::from_utf8(p.dead_letters[1].raw.clone()).unwrap(),
            "sku,effective_from,purchase,freight,duties,currency\nSKU-3,2026-11-01,-1.00,,,\n",
            "the raw row, under its header"
        );
    }

    #[test]
    fn a_repeated_sku_and_day_keeps_the_first_and_names_both_lines() {
        let csv = "sku,effective_from,purchase\n\
                   SKU-7,2026-11-01,6.40\n\
                   SKU-7,2026-12-01,6.10\n\
                   SKU-7,2026-11-01,6.55\n";
        let p = parse(Format::Csv, "costs.csv", csv.as_bytes(), "USD");
        assert_eq!(
            reasons(&p),
            [(
                "duplicate",
                "file costs.csv, line 4: sku \"SKU-7\" effective_from 2026-11-01 repeats line 2; the first is kept"
            )]
        );
        assert_eq!(
            rows(&p),
            [
                row("SKU-7", "2026-11-01", usd("6.40"), None, None, "line 2"),
                row("SKU-7", "2026-12-01", usd("6.10"), None, None, "line 3"),
            ]
        );
    }

    #[test]
    fn a_header_that_is_not_a_cost_header_refuses_the_whole_file() {
        let cases = [
            (
                "sku,effective_from,Purchase\nSKU-7,2026-11-01,6.40\n",
                "file c.csv: unknown column \"Purchase\" in the header; the columns are sku, effective_from, purchase, freight, duties, currency (names are case-sensitive)",
            ),
            (
                "sku,effective_from,purchase,fob\nSKU-7,2026-11-01,6.40,1\n",
                "file c.csv: unknown column \"fob\" in the header; the columns are sku, effective_from, purchase, freight, duties, currency (names are case-sensitive)",
            ),
            (
                "sku,purchase\nSKU-7,6.40\n",
                "file c.csv: the header lacks the column(s) effective_from (header: \"sku,purchase\")",
            ),
            (
                "sku,effective_from,purchase,sku\n",
                "file c.csv: column \"sku\" appears twice in the header",
            ),
            (
                "",
                "file c.csv: the header lacks the column(s) sku, effective_from, purchase (header: \"\")",
            ),
        ];
        for (csv, want) in cases {
            let p = parse(Format::Csv, "c.csv", csv.as_bytes(), "USD");
            assert!(p.failed, "{csv:?}");
            assert!(p.rows.is_empty());
            assert_eq!(reasons(&p), [("invalid_file", want)]);
            assert_eq!(p.dead_letters[0].raw, csv.as_bytes());
        }
    }

    const TOML: &str = r#"# Landed costs of shop-001
[[cost]]
sku = "SKU-7"
effective_from = 2026-11-01
purchase = "6.40"
freight = "1.15"
duties = "0.45"

[[cost]]
sku = "TEE-M"
effective_from = "2026-10-15"
purchase = "41.00"
currency = "CNY"
"#;

    #[test]
    fn toml_entries_become_costs() {
        let p = parse(Format::Toml, "costs.toml", TOML.as_bytes(), "USD");
        assert!(!p.failed);
        assert_eq!(reasons(&p), []);
        assert_eq!(
            rows(&p),
            [
                row(
                    "SKU-7",
                    "2026-11-01",
                    usd("6.40"),
                    Some(usd("1.15")),
                    Some(usd("0.45")),
                    "[[cost]] entry 1 (line 2)"
                ),
                row(
                    "TEE-M",
                    "2026-10-15",
                    money("41.00", "CNY"),
                    None,
                    None,
                    "[[cost]] entry 2 (line 9)"
                ),
            ]
        );
        let raw = String::from_utf8(p.rows[1].raw.clone()).unwrap();
        assert!(
            raw.contains("sku = \"TEE-M\"") && !raw.contains("SKU-7"),
            "the entry's own text: {raw:?}"
        );
    }

    #[test]
    fn bad_toml_entries_are_dead_letters_naming_entry_key_and_value() {
        let toml = r#"[[cost]]
sku = "SKU-1"
effective_from = 2026-11-01
purchase = 6.40

[[cost]]
sku = "SKU-2"
effective_from = "1 Nov 2026"
purchase = "6.40"

[[cost]]
sku = "SKU-3"
effective_from = 2026-11-01
purchase = "6.40"
frieght = "1.00"

[[cost]]
effective_from = 2026-11-01
purchase = "6.40"

[[cost]]
sku = "SKU-4"
effective_from = 2026-11-01
purchase = "6.40"
duties = "-0.10"

[[cost]]
sku = "SKU-5"
effective_from = 2026-11-01
purchase = "5.00"

[[cost]]
sku = "SKU-5"
effective_from = 2026-11-01
purchase = "5.50"
"#;
        let p = parse(Format::Toml, "costs.toml", toml.as_bytes(), "USD");
        assert!(!p.failed);
        assert_eq!(
            reasons(&p),
            [
                (
                    "invalid",
                    "file costs.toml, [[cost]] entry 1 (line 1), key `purchase` = 6.4: expected a quoted decimal such as \"6.40\" (a TOML number may have lost cents)"
                ),
                (
                    "invalid",
                    "file costs.toml, [[cost]] entry 2 (line 6), key `effective_from` = \"1 Nov 2026\": expected a date YYYY-MM-DD such as \"2026-11-01\""
                ),
                (
                    "invalid",
                    "file costs.toml, [[cost]] entry 3 (line 11), key `frieght` = \"1.00\": not a cost key; the keys are sku, effective_from, purchase, freight, duties, currency"
                ),
                (
                    "invalid",
                    "file costs.toml, [[cost]] entry 4 (line 17), key `sku` = (missing): must not be empty: a cost is the cost of one SKU"
                ),
                (
                    "invalid",
                    "file costs.toml, [[cost]] entry 5 (line 21), key `duties` = \"-0.10\": must not be negative"
                ),
                (
                    "duplicate",
                    "file costs.toml, [[cost]] entry 7 (line 32): sku \"SKU-5\" effective_from 2026-11-01 repeats [[cost]] entry 6 (line 27); the first is kept"
                ),
            ]
        );
        assert_eq!(
            rows(&p),
            [row(
                "SKU-5",
                "2026-11-01",
                usd("5.00"),
                None,
                None,
                "[[cost]] entry 6 (line 27)"
            )]
        );
    }

    #[test]
    fn a_toml_file_that_is_not_a_cost_file_is_refused_whole() {
        for (text, want) in [
            ("[[costs]]\nsku = \"x\"\n", "unknown field `costs`"),
            ("[[cost]\nsku = ", "not a cost file of [[cost]] tables"),
            ("cost = \"x\"\n", "not a cost file of [[cost]] tables"),
        ] {
            let p = parse(Format::Toml, "c.toml", text.as_bytes(), "USD");
            assert!(p.failed, "{text:?}");
            assert_eq!(p.dead_letters.len(), 1);
            assert_eq!(p.dead_letters[0].kind, "invalid_file");
            let reason = &p.dead_letters[0].reason;
            assert!(
                reason.starts_with("file c.toml: ") && reason.contains(want),
                "{reason}"
            );
        }
        let empty = parse(Format::Toml, "c.toml", b"# no costs yet\n", "USD");
        assert_eq!(empty, ParsedFile::default(), "no costs is not an error");
    }
}
