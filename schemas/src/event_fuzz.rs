//! Decoder fuzzing: `Event::from_json` never panics, and every refusal says what it refused.
//!
//! Inputs are arbitrary bytes and the golden samples (`fixtures/events/`) with one field
//! mutated the way hostile producers do: a wrong type, a number too large for any type
//! (`1e400`), NaN, negative quantities, an empty or 10 KB string, deep nesting, a missing
//! field, an extra field, a duplicated key, the text truncated. The fast one-pass decoder
//! and the slow explaining one must agree on every input. 2,000 cases per property by
//! default; `PROPTEST_CASES=1000000` for the long run (README, "Hostile input").

use super::*;
use proptest::prelude::*;
use serde_json::Value;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn samples() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/events");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let v = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            (path.display().to_string(), v)
        })
        .collect();
    // Directory order is the filesystem's: sort, so a seed means the same input everywhere.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, v)| v).collect()
}

/// Every path to a value in `v` (object keys and array indexes), the root excluded.
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(k.clone());
                out.push(at.clone());
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.push(i.to_string());
                out.push(at.clone());
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k),
        Value::Array(a) => a.get_mut(k.parse::<usize>().ok()?),
        _ => None,
    })
}

/// What a hostile producer puts in a field.
fn hostile_value() -> impl Strategy<Value = Value> {
    let nested = (1usize..300).prop_map(|depth| {
        let mut v = Value::Null;
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    });
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(-1)),
        Just(Value::from(u64::MAX)),
        prop_oneof![
            Just("1e400"),
            Just("NaN"),
            Just("-0"),
            Just("79228162514264337593543950336"),
            Just("1e-400"),
            Just("9999-12-31T23:59:59Z"),
            Just("1970-01-01T00:00:00Z"),
            Just(""),
            Just("\u{0}"),
        ]
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        (0usize..12_000).prop_map(|n| Value::from("x".repeat(n))),
        nested,
        Just(Value::Object(serde_json::Map::new())),
        Just(Value::Array(Vec::new())),
    ]
}

/// A golden sample with one hostile edit, as bytes.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let samples = samples();
    (
        0..samples.len(),
        any::<prop::sample::Index>(),
        0u8..6,
        hostile_value(),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(s, at, how, value, cut)| {
            let mut v = samples[s].clone();
            let mut all = Vec::new();
            paths(&v, &mut Vec::new(), &mut all);
            let path = all[at.index(all.len())].clone();
            let (parent, last) = path.split_at(path.len() - 1);
            match how {
                // Replace the field's value.
                0 | 1 => {
                    if let Some(slot) = get_mut(&mut v, &path) {
                        *slot = value;
                    }
                }
                // Remove the field.
                2 => {
                    if let Some(Value::Object(m)) = get_mut(&mut v, parent) {
                        m.remove(&last[0]);
                    }
                }
                // Add an unknown field beside it.
                3 => {
                    if let Some(Value::Object(m)) = get_mut(&mut v, parent) {
                        m.insert("unexpected_field".into(), value);
                    }
                }
                // Repeat the first key of the document (JSON allows it; serde must refuse).
                4 => {
                    let text = serde_json::to_string(&v).unwrap();
                    let first = text[1..].split(',').next().unwrap_or("").to_string();
                    return format!("{{{first},{}", &text[1..]).into_bytes();
                }
                // Truncate the text anywhere.
                _ => {
                    let bytes = serde_json::to_vec(&v).unwrap();
                    return bytes[..cut.index(bytes.len())].to_vec();
                }
            }
            serde_json::to_vec(&v).unwrap()
        })
}

/// Decodes `bytes` both ways: they must agree, and a refusal must say what it refused.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let fast = Event::from_json(bytes);
    let slow = Event::from_json_explained(bytes);
    match (&fast, &slow) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(e), Err(_)) => {
            let msg = e.to_string();
            // "order.placed: field `payload.units`: …", "event: not UTF-8: …", "event: … at
            // line 1 column 7": the schema (or "event") and what is wrong with it.
            let (head, detail) = msg
                .split_once(": ")
                .ok_or_else(|| TestCaseError::fail(format!("no schema in {msg:?}")))?;
            prop_assert!(!head.is_empty() && !detail.trim().is_empty(), "{msg:?}");
        }
        _ => prop_assert!(
            false,
            "the decoders disagree on {:?}: fast {:?}, slow {:?}",
            String::from_utf8_lossy(bytes),
            fast,
            slow
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes)?;
    }

    #[test]
    fn hostile_edits_of_valid_events_never_panic(bytes in mutated()) {
        check(&bytes)?;
    }
}

#[test]
fn the_hostile_classes_are_refused_with_the_field_named() {
    let placed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/events/order.placed.json"),
    )
    .unwrap();
    let mut v: Value = serde_json::from_str(&placed).unwrap();
    v["payload"]["units"] = Value::from(-3);
    let err = Event::from_json(&serde_json::to_vec(&v).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("order.placed: field `payload.units`"),
        "{err}"
    );
    // 10,000 levels in an extra field: skipped without recursion (no stack overflow), and
    // the event is the sample's, since unknown fields are ignored (a newer producer's fields
    // do not break an older processor).
    let deep = format!(
        r#"{{"deep":{}{},{}"#,
        "[".repeat(10_000),
        "]".repeat(10_000),
        &placed.trim_start()[1..]
    );
    assert_eq!(
        Event::from_json(deep.as_bytes()).unwrap(),
        Event::from_json(placed.as_bytes()).unwrap()
    );
    // The same nesting where a string belongs is refused, naming the field.
    let mut v: Value = serde_json::from_str(&placed).unwrap();
    v["payload"]["order_id"] = Value::from("PLACEHOLDER");
    let text = serde_json::to_string(&v).unwrap().replace(
        r#""PLACEHOLDER""#,
        &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    );
    let err = Event::from_json(text.as_bytes()).unwrap_err().to_string();
    assert!(
        err.starts_with("order.placed: field `payload.order_id`"),
        "{err}"
    );
    let err = Event::from_json(&[0xff, 0xfe]).unwrap_err().to_string();
    assert!(
        err.starts_with("event: not a JSON event object: not UTF-8"),
        "{err}"
    );
}
