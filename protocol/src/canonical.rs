//! RFC 8785 (JSON Canonicalization Scheme) for the values geiger signs.
//!
//! Object members are sorted by the UTF-16 code units of their names, no
//! whitespace is emitted, and strings are escaped exactly as ECMAScript's
//! `JSON.stringify` does. geiger's signed records hold no fractional
//! numbers; integers are written in plain decimal. For |n| <= 2^53 that is
//! exactly RFC 8785's output; larger integers (possible in `integers` draws
//! over wide ranges) are written exactly rather than rounded to a double,
//! a documented departure that keeps every value re-derivable. Fractional
//! numbers are refused rather than guessed at.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("value cannot be represented as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("fractional number {0} has no canonical form in geiger records")]
    FractionalNumber(f64),
}

/// The canonical JSON bytes of `value`.
pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    value_to_canonical_vec(&serde_json::to_value(value)?)
}

/// The canonical JSON bytes of an already built JSON value.
pub fn value_to_canonical_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(1024);
    write_value(value, &mut out)?;
    Ok(out)
}

/// RFC 8785 orders member names by UTF-16 code units. For ASCII names that
/// is plain byte order, which needs no re-encoding (and geiger's own names
/// are all ASCII).
fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Writing into a Vec cannot fail.
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                return Err(CanonicalError::FractionalNumber(f));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| utf16_order(a.0, b.0));
            out.push(b'{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    // Only ASCII bytes are ever escaped, and every byte of a multi-byte
    // UTF-8 character is >= 0x80, so runs between escapes copy unchanged.
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.extend_from_slice(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_canonical_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn members_are_sorted_and_whitespace_is_dropped() {
        assert_eq!(
            canon(json!({"b": [1, 2, {"z": null, "a": true}], "a": "x"})),
            r#"{"a":"x","b":[1,2,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn names_sort_by_utf16_code_units_not_by_utf8_bytes() {
        // U+1F600 is D83D DE00 in UTF-16, which sorts before U+FB01 (FB01),
        // though its UTF-8 form sorts after.
        assert_eq!(
            canon(json!({"\u{fb01}": 1, "\u{1f600}": 2})),
            "{\"\u{1f600}\":2,\"\u{fb01}\":1}"
        );
    }

    #[test]
    fn strings_are_escaped_as_ecmascript_does() {
        assert_eq!(
            canon(json!("a\"b\\c\n\u{1}\u{7f}é\u{2028}")),
            "\"a\\\"b\\\\c\\n\\u0001\u{7f}é\u{2028}\""
        );
    }

    #[test]
    fn integers_are_exact_and_fractions_are_refused() {
        assert_eq!(
            canon(json!([i64::MIN, u64::MAX, 0])),
            "[-9223372036854775808,18446744073709551615,0]"
        );
        assert!(matches!(
            to_canonical_vec(&json!(1.5)),
            Err(CanonicalError::FractionalNumber(_))
        ));
    }
}
