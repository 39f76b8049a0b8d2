//! Keys and signatures of the Foundries TUF flavour.
//!
//! Key ids are opaque labels (the device never recomputes them), the signature `method` is
//! checked against a closed list but verification dispatches on the key's type, exactly as
//! aktualizr does. Only what no library does for this format is written here: RSA-PSS salt
//! recovery (the crate verifies a fixed salt length, Foundries signers use 32 or the maximum).

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The signature methods the device accepts (compared case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Ed25519,
    RsassaPss,
    RsassaPssSha256,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Some(Method::Ed25519),
            "rsassa-pss" => Some(Method::RsassaPss),
            "rsassa-pss-sha256" => Some(Method::RsassaPssSha256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ed25519 => "ed25519",
            Method::RsassaPss => "rsassa-pss",
            Method::RsassaPssSha256 => "rsassa-pss-sha256",
        }
    }
}

/// A public key from `root.signed.keys`.
#[derive(Debug, Clone, PartialEq)]
pub enum PublicKey {
    Ed25519(VerifyingKey),
    Rsa(RsaPublicKey),
    /// Parsed, but of a size or shape the device cannot use: every signature by it fails
    /// (aktualizr's `kUnknown`), the root itself stays valid.
    Unusable(String),
}

/// A key whose type the device does not know makes the whole root invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported key type {0:?}")]
pub struct UnsupportedKeyType(pub String);

impl PublicKey {
    /// Parse one `{"keytype": .., "keyval": {"public": ..}}` entry.
    pub fn from_json(entry: &Value) -> Result<PublicKey, UnsupportedKeyType> {
        let keytype = entry.get("keytype").and_then(Value::as_str).unwrap_or("");
        let public = entry
            .get("keyval")
            .and_then(|k| k.get("public"))
            .and_then(Value::as_str);
        Ok(match (keytype.to_ascii_lowercase().as_str(), public) {
            ("ed25519", Some(p)) => Self::ed25519_from_hex(p),
            ("rsa", Some(p)) => Self::rsa_from_pem(p),
            ("ed25519" | "rsa", None) => PublicKey::Unusable("no keyval.public".into()),
            _ => return Err(UnsupportedKeyType(keytype.to_string())),
        })
    }

    fn ed25519_from_hex(p: &str) -> PublicKey {
        let Ok(bytes) = hex::decode(p.trim()) else {
            return PublicKey::Unusable("ED25519 public key is not hex".into());
        };
        let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return PublicKey::Unusable(format!("ED25519 public key has {} bytes", bytes.len()));
        };
        match VerifyingKey::from_bytes(&arr) {
            Ok(k) => PublicKey::Ed25519(k),
            Err(_) => PublicKey::Unusable("ED25519 public key is not a curve point".into()),
        }
    }

    fn rsa_from_pem(p: &str) -> PublicKey {
        match RsaPublicKey::from_public_key_pem(p.trim()) {
            Ok(k) if matches!(k.n().bits(), 2048 | 3072 | 4096) => PublicKey::Rsa(k),
            Ok(k) => PublicKey::Unusable(format!("RSA key of {} bits", k.n().bits())),
            Err(_) => {
                PublicKey::Unusable("RSA public key is not a PEM SubjectPublicKeyInfo".into())
            }
        }
    }

    /// Verify `sig` over `msg` (the canonical bytes of `signed`).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .map(|s| k.verify_strict(msg, &s).is_ok())
                .unwrap_or(false),
            PublicKey::Rsa(k) => verify_pss_sha256(k, msg, sig),
            PublicKey::Unusable(_) => false,
        }
    }
}

/// RSASSA-PSS with SHA-256 and MGF1-SHA-256, salt length recovered from the signature.
///
/// The salt length is read out of the encoded message (RFC 8017 9.1.2 steps 7-10, what
/// OpenSSL's "auto" salt length does); the verification itself is then the `rsa` crate's,
/// with that salt length, so a wrong recovery can only make a signature fail, never pass.
fn verify_pss_sha256(key: &RsaPublicKey, msg: &[u8], sig: &[u8]) -> bool {
    let hashed = Sha256::digest(msg);
    let Some(salt_len) = pss_salt_len(key, sig) else {
        return false;
    };
    let scheme = rsa::Pss::new_with_salt::<Sha256>(salt_len);
    key.verify(scheme, &hashed, sig).is_ok()
}

fn pss_salt_len(key: &RsaPublicKey, sig: &[u8]) -> Option<usize> {
    const H_LEN: usize = 32;
    let k = key.size();
    if sig.len() != k {
        return None;
    }
    let s = BigUint::from_bytes_be(sig);
    if &s >= key.n() {
        return None;
    }
    let m = s.modpow(key.e(), key.n()).to_bytes_be();
    let em_bits = key.n().bits() - 1;
    let em_len = em_bits.div_ceil(8);
    if m.len() > em_len || em_len < H_LEN + 2 {
        return None;
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend_from_slice(&m);
    if em[em_len - 1] != 0xbc {
        return None;
    }
    let (masked_db, rest) = em.split_at(em_len - H_LEN - 1);
    let h = &rest[..H_LEN];
    let mut db = masked_db.to_vec();
    mgf1_xor(h, &mut db);
    let unused_bits = 8 * em_len - em_bits;
    db[0] &= 0xff >> unused_bits;
    let one = db.iter().position(|&b| b != 0)?;
    (db[one] == 0x01).then(|| db.len() - one - 1)
}

fn mgf1_xor(seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in out.chunks_mut(32).enumerate() {
        let mut hasher = Sha256::new();
        hasher.update(seed);
        hasher.update((counter as u32).to_be_bytes());
        for (o, m) in chunk.iter_mut().zip(hasher.finalize()) {
            *o ^= m;
        }
    }
}

/// Decode a `sig` member: standard base64 with padding, as every Foundries signer writes it.
pub fn decode_sig(sig: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(sig).ok()
}

/// `lowercase_hex(sha256(DER SubjectPublicKeyInfo))`: the Foundries / ota-tuf key id rule.
pub fn spki_key_id(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// The DER SubjectPublicKeyInfo of an Ed25519 key, up to the 32 bytes of the key.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_key_type_is_refused() {
        let e = PublicKey::from_json(&json!({"keytype": "ECDSA", "keyval": {"public": "x"}}));
        assert_eq!(e.unwrap_err(), UnsupportedKeyType("ECDSA".into()));
    }

    #[test]
    fn methods() {
        assert_eq!(Method::parse("RSASSA-PSS"), Some(Method::RsassaPss));
        assert_eq!(
            Method::parse("rsassa-pss-sha256"),
            Some(Method::RsassaPssSha256)
        );
        assert_eq!(Method::parse("ED25519"), Some(Method::Ed25519));
        assert_eq!(Method::parse("rsassa-pkcs1"), None);
    }
}
