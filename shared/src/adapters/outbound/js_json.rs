//! JSON text byte-identical to JavaScript's `JSON.stringify(JSON.parse(text))`.
//!
//! The caller verifying our legacy webhook signature does not hash the raw bytes it receives: it parses the body and
//! hashes `JSON.stringify(parsedBody)`. So the body we sign and send must already be that re-serialisation, or the
//! signature never matches. The differences from `serde_json::to_string` that matter:
//! - numbers go through an IEEE double and come out per ECMAScript `Number::toString` (`1.0` → `1`, `-0` → `0`,
//!   `1e+21`, integers past 2^53 rounded: `12345678901234567891` → `12345678901234567000`);
//! - object keys that are array indices (`"0"`, `"7"`, … up to 2^32 − 2) come first in ascending numeric order,
//!   because that is the order in which JavaScript enumerates an object's own properties;
//! - strings escape only `"`, `\` and control characters (the same set serde_json escapes; kept explicit here so the
//!   contract does not depend on serde_json's choice).

use serde::Serialize;
use serde_json::{Map, Number, Value};

/// Serialises `value` exactly as Node prints `JSON.stringify(JSON.parse(serde_json::to_string(value)))`.
pub fn stringify(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// Serialises any `Serialize` value into the JavaScript-canonical JSON text (see [`stringify`]).
pub fn to_js_body<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    Ok(stringify(&serde_json::to_value(value)?))
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    // OrdinaryOwnPropertyKeys: array-index keys ascending, then the other string keys in insertion order.
    let mut index_keys: Vec<(u32, &String, &Value)> = map
        .iter()
        .filter_map(|(key, value)| array_index(key).map(|index| (index, key, value)))
        .collect();
    index_keys.sort_unstable_by_key(|(index, _, _)| *index);
    let other_keys = map.iter().filter(|(key, _)| array_index(key).is_none());

    out.push('{');
    let entries = index_keys
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .chain(other_keys);
    for (position, (key, value)) in entries.enumerate() {
        if position > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

/// An ECMAScript array index: the canonical decimal form of an integer in 0 ..= 2^32 − 2.
fn array_index(key: &str) -> Option<u32> {
    let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty());
    if !canonical || !key.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    key.parse::<u32>().ok().filter(|index| *index != u32::MAX)
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let code = control as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xF]));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, number: &Number) {
    // JSON.parse reads every number as the nearest double; integer-to-double `as` casts round to nearest too.
    let double = if let Some(unsigned) = number.as_u64() {
        unsigned as f64
    } else if let Some(signed) = number.as_i64() {
        signed as f64
    } else {
        number.as_f64().unwrap_or(f64::NAN)
    };
    write_double(out, double);
}

/// ECMAScript `Number::toString(x)` for radix 10 (ECMA-262 §6.1.6.1.20).
fn write_double(out: &mut String, x: f64) {
    if !x.is_finite() {
        // serde_json numbers are always finite; JSON.stringify writes non-finite numbers as null.
        out.push_str("null");
        return;
    }
    if x == 0.0 {
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    let (digits, n) = shortest_digits(x.abs());
    let k = digits.len() as i32;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
}

/// The shortest round-trip decimal digits `s` (no leading or trailing zeros) and the exponent `n` such that
/// `x = 0.s × 10^n`, i.e. the `s`, `k`, `n` of the ECMAScript algorithm.
///
/// Ryū yields the shortest digits that round-trip, the closest to `x` when several do: what the ECMAScript algorithm
/// asks for and what V8 prints. (Rust's own `{:e}` does not always pick the closest: it prints 91869200518894.63
/// where V8 and Ryū print 91869200518894.62.) Ryū's layout varies (`1.0`, `1e21`, `1.5e-7`), so it is re-parsed.
fn shortest_digits(positive: f64) -> (String, i32) {
    let mut buffer = ryu::Buffer::new();
    let formatted = buffer.format_finite(positive);
    let (mantissa, exponent) = formatted.split_once('e').unwrap_or((formatted, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (integer_part, fraction_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = format!("{integer_part}{fraction_part}");
    let leading_zeros = all_digits.len() - all_digits.trim_start_matches('0').len();
    let digits = all_digits.trim_start_matches('0').trim_end_matches('0').to_owned();
    let n = integer_part.len() as i32 + exponent - leading_zeros as i32;
    (digits, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn number_text(double: f64) -> String {
        let mut out = String::new();
        write_double(&mut out, double);
        out
    }

    #[test]
    fn doubles_print_as_ecmascript_number_to_string() {
        let table: &[(f64, &str)] = &[
            (1.0, "1"),
            (-0.0, "0"),
            (0.0, "0"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (0.000001, "0.000001"),
            (0.0000001, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (123e-20, "1.23e-18"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.2345e21, "1.2345e+21"),
            (123456789012345680000.0, "123456789012345680000"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.1 + 0.2, "0.30000000000000004"),
            (9007199254740993.0, "9007199254740992"),
            (-1e-7, "-1e-7"),
            (100.0, "100"),
            (1.25, "1.25"),
            (123.456, "123.456"),
            (91869200518894.62, "91869200518894.62"),
        ];
        for (double, expected) in table {
            assert_eq!(number_text(*double), *expected, "formatting {double:e}");
        }
    }

    #[test]
    fn array_index_keys_are_canonical_u32_below_max() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("4294967294"), Some(4_294_967_294));
        for not_index in [
            "",
            "01",
            "-1",
            "1.0",
            "4294967295",
            "99999999999",
            "1e3",
            " 1",
            "+1",
            "a",
        ] {
            assert_eq!(array_index(not_index), None, "{not_index:?}");
        }
    }

    #[test]
    fn tricky_values_match_javascript() {
        let big: Value = serde_json::from_str(r#"{"big":12345678901234567891,"neg":-9223372036854775808}"#).unwrap();
        let table: Vec<(Value, &str)> = vec![
            (big, r#"{"big":12345678901234567000,"neg":-9223372036854776000}"#),
            (
                json!({"a": 1.0, "b": -0.0, "c": [1e21, 1.5e-7, 0.000001]}),
                r#"{"a":1,"b":0,"c":[1e+21,1.5e-7,0.000001]}"#,
            ),
            (json!("é / 😀 \u{2028}"), "\"é / 😀 \u{2028}\""),
            // DEL (0x7f) is not a JSON control character: it stays raw.
            (
                json!("q\"b\\s\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}"),
                "\"q\\\"b\\\\s\\b\\f\\n\\r\\t\\u0000\\u001f\u{7f}\"",
            ),
            (
                json!({"b": 1, "2": 2, "a": 3, "1": 4, "01": 5, "4294967295": 6, "4294967294": 7}),
                r#"{"1":4,"2":2,"4294967294":7,"b":1,"a":3,"01":5,"4294967295":6}"#,
            ),
            (
                json!({"__proto__": {"x": null}, "t": true, "f": false}),
                r#"{"__proto__":{"x":null},"t":true,"f":false}"#,
            ),
            (json!([]), "[]"),
            (json!({}), "{}"),
            (json!([[{}], {"k": []}]), r#"[[{}],{"k":[]}]"#),
        ];
        for (value, expected) in table {
            assert_eq!(stringify(&value), expected, "value {value:?}");
        }
    }

    #[test]
    fn to_js_body_keeps_struct_field_order() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            job_id: &'static str,
            status: &'static str,
            generation_time_ms: f64,
            timestamp: u64,
        }
        let body = Body {
            job_id: "j1",
            status: "completed",
            generation_time_ms: 1200.0,
            timestamp: 1_700_000_000_000,
        };
        assert_eq!(
            to_js_body(&body).unwrap(),
            r#"{"jobId":"j1","status":"completed","generationTimeMs":1200,"timestamp":1700000000000}"#
        );
    }
}
