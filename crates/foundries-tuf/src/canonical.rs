//! Canonical JSON as the device computes it (jsoncpp compact writer over sorted members).
//!
//! Signatures and metadata hashes are over the canonical form of the *parsed* value, never
//! over the bytes of the file: fioctl, the OTA server and jsoncpp all differ in whitespace and
//! escaping, and only the parsed value is the same for all of them. This writes the form of
//! a `Value` (for the bundle writer); [`super::strict`] produces it from bytes for the
//! verifier, with the same escaping.

use serde_json::Value;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("non-integral number {0} (TUF metadata carries integers only)")]
    Float(String),
}

/// The canonical bytes of `v`: members sorted byte-wise, no whitespace, integers only,
/// strings escaped as jsoncpp does (non-ASCII as lowercase `\uxxxx`, surrogate pairs).
pub fn to_vec(v: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out)?;
    Ok(out)
}

/// Where canonical bytes go.
pub trait Out {
    fn push(&mut self, b: u8);
    fn extend_from_slice(&mut self, b: &[u8]);
}

impl Out for Vec<u8> {
    fn push(&mut self, b: u8) {
        Vec::push(self, b)
    }
    fn extend_from_slice(&mut self, b: &[u8]) {
        Vec::extend_from_slice(self, b)
    }
}

fn write(v: &Value, out: &mut impl Out) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(CanonicalError::Float(n.to_string()));
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(e, out)?;
            }
            out.push(b']');
        }
        Value::Object(m) => write_object(m, out)?,
    }
    Ok(())
}

fn write_object(
    m: &serde_json::Map<String, Value>,
    out: &mut impl Out,
) -> Result<(), CanonicalError> {
    // Sort explicitly: serde_json's map is only sorted while no crate in the build
    // turns on its `preserve_order` feature. str's Ord is byte-wise, as jsoncpp's.
    let mut members: Vec<(&String, &Value)> = m.iter().collect();
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (k, e)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write(e, out)?;
    }
    out.push(b'}');
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(u: u16, out: &mut impl Out) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((u >> shift) & 0xf) as usize]);
    }
}

/// The length of `s` as [`write_str`] writes it, quotes included.
pub(crate) fn escaped_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
            c if (c as u32) < 0x20 => 6,
            c if (c as u32) < 0x80 => 1,
            c => 6 * c.len_utf16(),
        })
        .sum::<usize>()
}

/// `s` as a JSON string literal, escaped as jsoncpp escapes.
pub(crate) fn write_str(s: &str, out: &mut impl Out) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => push_u16_escape(c as u16, out),
            c if (c as u32) < 0x80 => out.push(c as u8),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    push_u16_escape(*u, out);
                }
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        // libaktualizr's own test vector for its canonical writer (jsoncpp).
        let v: Value = serde_json::from_str(r#"{"b":0,"a":[1,2,{}],"0":"x"}"#).unwrap();
        assert_eq!(canon(v), r#"{"0":"x","a":[1,2,{}],"b":0}"#);
    }

    #[test]
    fn byte_order_shorter_prefix_first() {
        let v = json!({"ab": 1, "a": 2, "B": 3, "a\u{e9}": 4});
        assert_eq!(canon(v), r#"{"B":3,"a":2,"ab":1,"a\u00e9":4}"#);
    }

    #[test]
    fn escapes_like_jsoncpp() {
        let v = json!("q\"b\\/\u{8}\u{c}\n\r\t\u{1}\u{7f}<>&é😀");
        assert_eq!(
            canon(v),
            "\"q\\\"b\\\\/\\b\\f\\n\\r\\t\\u0001\u{7f}<>&\\u00e9\\ud83d\\ude00\""
        );
    }

    #[test]
    fn scalars_and_negative_numbers() {
        let v = json!([null, true, false, -5, 0, 18446744073709551615u64, [], {}]);
        assert_eq!(
            canon(v),
            "[null,true,false,-5,0,18446744073709551615,[],{}]"
        );
    }

    #[test]
    fn floats_are_refused() {
        let v: Value = serde_json::from_str("{\"a\":1.5}").unwrap();
        assert!(matches!(to_vec(&v), Err(CanonicalError::Float(_))));
        let v: Value = serde_json::from_str("{\"a\":1.0}").unwrap();
        assert!(to_vec(&v).is_err());
    }
}
