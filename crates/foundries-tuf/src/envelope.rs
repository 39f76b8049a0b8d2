//! A signed metadata file held as its canonical bytes: [`Envelope`].
//!
//! Parsing builds no tree of values: the canonical form comes straight from the bytes
//! ([`strict`]), the signatures and the header fields (`_type`, `version`, `expires`) are
//! read into small typed structures, and the rest of `signed` is parsed only on demand,
//! which the verifier does only after the signatures held.

use std::ops::Range;

use serde_json::{Map, Value};

use super::keys::{decode_sig, Method};
use super::meta::{bad, check_timestamp, Malformed};
use super::{canonical, strict};

/// Why [`Envelope::parse_within`] refused bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unparsed {
    Malformed(Malformed),
    /// The canonical form is longer than the budget (given here).
    TooLong(usize),
}

/// One element of `signatures`.
#[derive(Debug, Clone)]
pub struct Signature {
    pub keyid: String,
    /// `None`: a method the device does not accept (it refuses the whole file for that).
    pub method: Option<Method>,
    pub method_name: String,
    /// `None`: `sig` is not padded standard base64.
    pub sig: Option<Vec<u8>>,
}

/// A signed file: `{"signatures": [...], "signed": {...}}`, held as its canonical bytes.
#[derive(Debug, Clone)]
pub struct Envelope {
    canonical: Vec<u8>,
    signed: Range<usize>,
    pub signatures: Vec<Signature>,
    /// Hashes of the canonical form of the whole file: what snapshot/timestamp pin.
    pub sha256: String,
    pub sha512: String,
    header: Header,
}

/// The largest canonical form of `n` bytes of JSON: escaping at most triples a string
/// (`é`, two bytes, becomes `\u00e9`); whitespace only shrinks.
pub fn canonical_bound(n: usize) -> usize {
    n.saturating_mul(3).saturating_add(16)
}

impl Envelope {
    /// Parse `bytes` (of any size the caller accepted: the canonical form is bounded by it).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, Malformed> {
        Self::parse_within(bytes, canonical_bound(bytes.len())).map_err(|e| match e {
            Unparsed::Malformed(m) => m,
            Unparsed::TooLong(n) => bad(format!("canonical form longer than {n} bytes")),
        })
    }

    /// Parse `bytes`, refusing a canonical form longer than `budget` bytes.
    pub fn parse_within(bytes: &[u8], budget: usize) -> Result<Envelope, Unparsed> {
        let c = strict::canonicalize(bytes, budget).map_err(|e| match e {
            strict::StrictError::TooLarge(n) => Unparsed::TooLong(n),
            e => Unparsed::Malformed(bad(e.to_string())),
        })?;
        Self::from_canonical(c).map_err(Unparsed::Malformed)
    }

    fn from_canonical(c: strict::Canonical) -> Result<Envelope, Malformed> {
        if c.members.is_none() {
            return Err(bad("not a JSON object"));
        }
        let signed = c
            .member_range("signed")
            .ok_or_else(|| bad("no `signed` member"))?;
        if c.bytes.get(signed.start) != Some(&b'{') {
            return Err(bad("`signed` is not an object"));
        }
        let sigs = c
            .member("signatures")
            .ok_or_else(|| bad("no `signatures` member"))?;
        if sigs.first() != Some(&b'[') {
            return Err(bad("`signatures` is not an array"));
        }
        let signatures = serde_json::from_slice::<Signatures>(sigs)
            .map_err(|e| bad(strip_position(&e)))?
            .0;
        let header = serde_json::from_slice::<Header>(&c.bytes[signed.clone()])
            .map_err(|e| bad(strip_position(&e)))?;
        use sha2::Digest as _;
        Ok(Envelope {
            sha256: hex::encode(sha2::Sha256::digest(&c.bytes)),
            sha512: hex::encode(sha2::Sha512::digest(&c.bytes)),
            canonical: c.bytes,
            signed,
            signatures,
            header,
        })
    }

    /// The envelope of an already parsed value (tests, generated bundles).
    pub fn from_value(v: Value) -> Result<Envelope, Malformed> {
        let bytes = canonical::to_vec(&v).map_err(|e| bad(e.to_string()))?;
        Self::parse(&bytes)
    }

    /// The canonical bytes of the whole file: what is stored as trusted metadata.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    pub fn into_canonical(self) -> Vec<u8> {
        self.canonical
    }

    /// The canonical bytes of `signed`: what signatures cover.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.canonical[self.signed.clone()]
    }

    /// `signed` as a tree of values; only for metadata whose signatures were checked.
    pub fn signed_map(&self) -> Result<Map<String, Value>, Malformed> {
        serde_json::from_slice(self.signed_bytes()).map_err(|e| bad(strip_position(&e)))
    }

    /// `signed` read into `T` (members `T` does not name are skipped, not built).
    pub fn signed_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Malformed> {
        serde_json::from_slice(self.signed_bytes()).map_err(|e| bad(strip_position(&e)))
    }

    pub fn type_name(&self) -> &str {
        match &self.header.type_ {
            Some(Scalar::Str(s)) => s,
            _ => "",
        }
    }

    pub fn version(&self) -> Result<u64, Malformed> {
        match &self.header.version {
            Some(Scalar::UInt(v)) => Ok(*v),
            Some(other) => Err(bad(format!(
                "`signed.version` is {}, not a non-negative integer",
                other.describe()
            ))),
            None => Err(bad("no `signed.version`")),
        }
    }

    /// `expires`, checked to be exactly `YYYY-MM-DDTHH:MM:SSZ` as the device requires.
    pub fn expires(&self) -> Result<String, Malformed> {
        let e = match &self.header.expires {
            Some(Scalar::Str(s)) => s,
            Some(other) => {
                return Err(bad(format!(
                    "`signed.expires` is {}, not a string",
                    other.describe()
                )))
            }
            None => return Err(bad("no `signed.expires`")),
        };
        check_timestamp(e).then(|| e.to_string()).ok_or_else(|| {
            bad(format!(
                "`signed.expires` {e:?} is not YYYY-MM-DDTHH:MM:SSZ"
            ))
        })
    }
}

/// serde_json's message without " at line 1 column N": positions in canonical bytes mean
/// nothing to whoever reads the file.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// `_type`, `version` and `expires` of `signed`; nothing else is built.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Header {
    #[serde(rename = "_type")]
    type_: Option<Scalar>,
    version: Option<Scalar>,
    expires: Option<Scalar>,
}

/// A string or a non-negative integer as it is; any other value only as what kind it is
/// (read past, never built).
#[derive(Debug, Clone)]
pub(crate) enum Scalar {
    Str(String),
    UInt(u64),
    Other(&'static str),
}

impl Scalar {
    pub(crate) fn describe(&self) -> String {
        match self {
            Scalar::Str(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
            Scalar::Str(s) => format!("the string {s:?}"),
            Scalar::UInt(n) => format!("the number {n}"),
            Scalar::Other(k) => (*k).to_string(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Scalar::UInt(u),
            Err(_) => Scalar::Other("a negative number"),
        })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other("a number with a fraction"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other("a boolean"))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other("null"))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an array"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Scalar::Other("an object"))
    }
}

/// `signatures`, each element checked as it is read: the first bad one stops the parse.
struct Signatures(Vec<Signature>);

impl<'de> serde::Deserialize<'de> for Signatures {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Signatures, D::Error> {
        d.deserialize_seq(SignaturesVisitor)
    }
}

struct SignaturesVisitor;

impl<'de> serde::de::Visitor<'de> for SignaturesVisitor {
    type Value = Signatures;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of signatures")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Signatures, A::Error> {
        use serde::de::Error as _;
        let mut out = Vec::new();
        while let Some(raw) = seq.next_element::<RawSignature>()? {
            let field = |v: Option<Scalar>, name: &str| match v {
                Some(Scalar::Str(s)) => Ok(s),
                _ => Err(A::Error::custom(format!(
                    "a signature has no string `{name}`"
                ))),
            };
            let method_name = field(raw.method, "method")?;
            let keyid = field(raw.keyid, "keyid")?;
            let sig = field(raw.sig, "sig")?;
            out.push(Signature {
                keyid,
                method: Method::parse(&method_name),
                method_name,
                sig: decode_sig(&sig),
            });
        }
        Ok(Signatures(out))
    }
}

/// One element of `signatures` before its checks.
struct RawSignature {
    keyid: Option<Scalar>,
    method: Option<Scalar>,
    sig: Option<Scalar>,
}

impl<'de> serde::Deserialize<'de> for RawSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawSignature, D::Error> {
        d.deserialize_any(RawSignatureVisitor)
    }
}

struct RawSignatureVisitor;

impl<'de> serde::de::Visitor<'de> for RawSignatureVisitor {
    type Value = RawSignature;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a signature object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawSignature, A::Error> {
        let mut raw = RawSignature {
            keyid: None,
            method: None,
            sig: None,
        };
        while let Some(k) = map.next_key::<String>()? {
            let slot = match k.as_str() {
                "keyid" => &mut raw.keyid,
                "method" => &mut raw.method,
                "sig" => &mut raw.sig,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Scalar>()?);
        }
        Ok(raw)
    }
}
