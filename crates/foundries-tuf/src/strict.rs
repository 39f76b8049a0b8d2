//! Metadata bytes straight to their canonical form, strictly and within a budget.
//!
//! A JSON object with two members of the same name has no single meaning: serde_json (like
//! jsoncpp) keeps the last, so a signed file with 16 MiB of junk under a duplicate name in
//! front of the real member verifies, and whoever keeps the raw bytes keeps the junk. Here
//! a duplicate name anywhere refuses the file. Nothing is built but the canonical bytes:
//! each object's members go into one buffer with a 12-byte index entry each, are sorted and
//! written out, so memory stays within a few times the canonical size (never a tree of
//! `Value`s, which costs up to 80 times the file for small objects), and a budget on the
//! canonical size stops the work early (the length a signed snapshot or timestamp states
//! for the file, or a fixed cap).

use std::ops::Range;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::canonical::{escaped_len, write_str};

/// Why bytes have no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    #[error("not JSON: {0}")]
    Syntax(String),
    #[error("non-integral number {0} (TUF metadata carries integers only)")]
    Float(String),
    #[error("duplicate member {key:?} in {at} (a JSON object must not name a member twice)")]
    Duplicate { key: String, at: String },
    #[error("canonical form longer than {0} bytes")]
    TooLarge(usize),
}

/// The canonical bytes of a file, and where each top-level member's value is in them.
#[derive(Debug)]
pub struct Canonical {
    pub bytes: Vec<u8>,
    /// `Some` when the top-level value is an object: member name -> range of its value.
    pub members: Option<Vec<(String, Range<usize>)>>,
}

impl Canonical {
    pub fn member(&self, name: &str) -> Option<&[u8]> {
        let (_, r) = self.members.as_ref()?.iter().find(|(k, _)| k == name)?;
        self.bytes.get(r.clone())
    }

    pub fn member_range(&self, name: &str) -> Option<Range<usize>> {
        let (_, r) = self.members.as_ref()?.iter().find(|(k, _)| k == name)?;
        Some(r.clone())
    }
}

/// The canonical form of `json` (sorted members, no whitespace, integers only, jsoncpp's
/// escaping), refusing duplicate member names, non-integral numbers, nesting deeper than
/// 128, and a canonical form longer than `budget` bytes.
pub fn canonicalize(json: &[u8], budget: usize) -> Result<Canonical, StrictError> {
    // Offsets into one object's buffer are u32.
    let budget = budget.min(u32::MAX as usize - 1);
    let mut st = State {
        used: 0,
        budget,
        path: Vec::new(),
        depth: 0,
        failed: None,
        top: None,
    };
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = Val {
        st: &mut st,
        out: &mut out,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(e) = st.failed.take() {
        return Err(e);
    }
    parsed.map_err(|e| StrictError::Syntax(e.to_string()))?;
    Ok(Canonical {
        bytes: out,
        members: st.top,
    })
}

struct State {
    used: usize,
    budget: usize,
    /// Member names from the top down to the value being read (for messages).
    path: Vec<String>,
    depth: usize,
    /// The real reason when a serde error was raised only to stop the parser.
    failed: Option<StrictError>,
    top: Option<Vec<(String, Range<usize>)>>,
}

impl State {
    fn fail<E: de::Error>(&mut self, e: StrictError) -> E {
        let msg = e.to_string();
        self.failed.get_or_insert(e);
        E::custom(msg)
    }

    fn charge<E: de::Error>(&mut self, n: usize) -> Result<(), E> {
        self.used += n;
        if self.used > self.budget {
            let b = self.budget;
            return Err(self.fail(StrictError::TooLarge(b)));
        }
        Ok(())
    }

    fn at(&self) -> String {
        if self.path.is_empty() {
            "the top-level object".into()
        } else {
            format!("`{}`", self.path.join("."))
        }
    }
}

/// One value, written canonically to `out`.
struct Val<'a> {
    st: &'a mut State,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Val<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Val<'_> {
    fn emit<E: de::Error>(self, b: &[u8]) -> Result<(), E> {
        self.st.charge(b.len())?;
        self.out.extend_from_slice(b);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Val<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.emit(if v { b"true" } else { b"false" })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.emit(v.to_string().as_bytes())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.emit(v.to_string().as_bytes())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        Err(self.st.fail(StrictError::Float(v.to_string())))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.st.charge(escaped_len(v))?;
        write_str(v, self.out);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.emit(b"null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.st.charge(2)?;
        self.st.depth += 1;
        self.out.push(b'[');
        let mut first = true;
        loop {
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            let next = seq.next_element_seed(Val {
                st: &mut *self.st,
                out: &mut *self.out,
            })?;
            if next.is_none() {
                self.out.truncate(mark);
                break;
            }
            if !first {
                self.st.charge(1)?;
            }
            first = false;
        }
        self.out.push(b']');
        self.st.depth -= 1;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let top = self.st.depth == 0;
        self.st.depth += 1;
        // `{}`, and per member a colon and a comma; the quoted key when it is read.
        self.st.charge(2)?;
        let mut arena: Vec<u8> = Vec::new();
        // (key start, key length, value end); the value starts where the key ends.
        let mut index: Vec<(u32, u32, u32)> = Vec::new();
        loop {
            let start = arena.len();
            let Some(key) = map.next_key_seed(Key {
                st: &mut *self.st,
                arena: &mut arena,
            })?
            else {
                break;
            };
            self.st.charge(1 + usize::from(!index.is_empty()))?;
            let key_len = arena.len() - start;
            self.st.path.push(key);
            map.next_value_seed(Val {
                st: &mut *self.st,
                out: &mut arena,
            })?;
            self.st.path.pop();
            index.push((start as u32, key_len as u32, arena.len() as u32));
        }
        let key = |e: &(u32, u32, u32)| &arena[e.0 as usize..(e.0 + e.1) as usize];
        index.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        if let Some(w) = index.windows(2).find(|w| key(&w[0]) == key(&w[1])) {
            let name = String::from_utf8_lossy(key(&w[0])).into_owned();
            let at = self.st.at();
            return Err(self.st.fail(StrictError::Duplicate { key: name, at }));
        }
        let mut members = top.then(Vec::new);
        self.out.reserve(arena.len() + 4 * index.len() + 2);
        self.out.push(b'{');
        for (i, e) in index.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            // The key was written from a `&str`: always UTF-8.
            let name = std::str::from_utf8(key(e)).unwrap_or_default();
            write_str(name, self.out);
            self.out.push(b':');
            let value = (e.0 + e.1) as usize..e.2 as usize;
            let at = self.out.len();
            self.out.extend_from_slice(&arena[value]);
            if let Some(m) = members.as_mut() {
                m.push((name.to_string(), at..self.out.len()));
            }
        }
        self.out.push(b'}');
        self.st.depth -= 1;
        if top {
            self.st.top = members;
        }
        Ok(())
    }
}

/// A member name: its raw UTF-8 goes into the object's buffer (sorting is on the raw
/// bytes, as jsoncpp sorts), its escaped length onto the budget.
struct Key<'a> {
    st: &'a mut State,
    arena: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.st.charge(escaped_len(v))?;
        self.arena.extend_from_slice(v.as_bytes());
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Result<String, StrictError> {
        canonicalize(s.as_bytes(), 1 << 20).map(|c| String::from_utf8(c.bytes).unwrap())
    }

    #[test]
    fn the_same_bytes_as_the_value_writer() {
        for s in [
            r#"{"b":0,"a":[1,2,{}],"0":"x"}"#,
            r#"{ "ab" : 1, "a": 2, "B": 3, "a\u00e9": 4, "a\u00e8": [true,false,null,-5] }"#,
            "\"q\\\"b\\\\\\/\\b\\f\\n\\r\\t\\u0001\u{7f}<>&é😀\"",
            "[18446744073709551615, -9223372036854775808, 0, [], {}]",
            r#"{"z":{"y":{"x":[{"b":1,"a":2}]}}}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(s).unwrap();
            let want = String::from_utf8(super::super::canonical::to_vec(&v).unwrap()).unwrap();
            assert_eq!(canon(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn top_level_members_are_located() {
        let c = canonicalize(br#"{ "signed": {"b":1, "a":2}, "signatures": [ ] }"#, 100).unwrap();
        assert_eq!(c.bytes, br#"{"signatures":[],"signed":{"a":2,"b":1}}"#);
        assert_eq!(c.member("signed").unwrap(), br#"{"a":2,"b":1}"#);
        assert_eq!(c.member("signatures").unwrap(), b"[]");
        assert!(c.member("x").is_none());
        assert!(canonicalize(b"[1]", 10).unwrap().members.is_none());
    }

    #[test]
    fn duplicates_are_refused_anywhere_and_named() {
        let e = canon(r#"{"signed":{"x":1},"signed":{"x":2}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "duplicate member \"signed\" in the top-level object (a JSON object must not name a member twice)"
        );
        let e = canon(r#"{"signed":{"targets":{"t":{"a":1,"b":2,"a":3}}}}"#).unwrap_err();
        assert!(e.to_string().contains("\"a\" in `signed.targets.t`"), "{e}");
        // The same name spelled with an escape is the same name.
        assert!(matches!(
            canon(r#"{"a":1,"\u0061":2}"#),
            Err(StrictError::Duplicate { .. })
        ));
        let e = canon(r#"[{"a":1},{"a":1,"a":1}]"#).unwrap_err();
        assert!(matches!(e, StrictError::Duplicate { .. }), "{e}");
    }

    #[test]
    fn floats_syntax_and_depth() {
        assert!(matches!(canon(r#"{"a":1.5}"#), Err(StrictError::Float(_))));
        assert!(matches!(canon(r#"{"a":1e3}"#), Err(StrictError::Float(_))));
        assert!(matches!(canon(r#"{"a":1} x"#), Err(StrictError::Syntax(_))));
        assert!(matches!(canon(r#"{"a":}"#), Err(StrictError::Syntax(_))));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(canon(&deep), Err(StrictError::Syntax(_))));
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(canon(&ok).unwrap(), ok);
    }

    #[test]
    fn the_budget_is_the_canonical_size() {
        let s = r#"{ "b" : [ 1 , 2 ] , "a" : "\u00e9" }"#;
        let c = canon(s).unwrap();
        assert_eq!(c, r#"{"a":"\u00e9","b":[1,2]}"#);
        assert_eq!(
            canonicalize(s.as_bytes(), c.len()).unwrap().bytes.len(),
            c.len()
        );
        assert_eq!(
            canonicalize(s.as_bytes(), c.len() - 1).unwrap_err(),
            StrictError::TooLarge(c.len() - 1)
        );
        for s in [
            "[]",
            "{}",
            "[[],{}]",
            r#"{"a":{"b":[null]}}"#,
            "\"x\"",
            "-1",
        ] {
            let n = canon(s).unwrap().len();
            assert!(canonicalize(s.as_bytes(), n).is_ok(), "{s}");
            assert!(canonicalize(s.as_bytes(), n - 1).is_err(), "{s}");
        }
    }
}
