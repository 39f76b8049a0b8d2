//! Keys and signatures of the Foundries TUF flavour.
//!
//! Key ids are opaque labels (the device never recomputes them), the signature `method` is
//! checked against a closed list but verification dispatches on the key's type, exactly as
//! aktualizr does. Only what no library does for this format is written here: RSA-PSS salt
//! recovery (the crate verifies a fixed salt length, Foundries signers use 32 or the maximum).

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
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

const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A signing key, for the bundle generator and the operator signature.
// A handful of keys live at a time: variant size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum PrivateKey {
    Ed25519(SigningKey),
    Rsa(Box<RsaPrivateKey>),
}

impl PrivateKey {
    pub fn ed25519_from_seed(seed: [u8; 32]) -> PrivateKey {
        PrivateKey::Ed25519(SigningKey::from_bytes(&seed))
    }

    /// A PKCS#8 PEM RSA private key (`openssl genpkey -algorithm RSA`).
    pub fn rsa_from_pkcs8_pem(pem: &str) -> anyhow::Result<PrivateKey> {
        Ok(PrivateKey::Rsa(Box::new(RsaPrivateKey::from_pkcs8_pem(
            pem,
        )?)))
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            PrivateKey::Ed25519(k) => {
                let mut der = ED25519_SPKI_PREFIX.to_vec();
                der.extend_from_slice(k.verifying_key().as_bytes());
                der
            }
            PrivateKey::Rsa(k) => k
                .to_public_key()
                .to_public_key_der()
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    pub fn key_id(&self) -> String {
        spki_key_id(&self.spki_der())
    }

    /// The `root.signed.keys` entry, as fioctl writes it.
    pub fn public_json(&self) -> Value {
        match self {
            PrivateKey::Ed25519(k) => json!({
                "keytype": "ED25519",
                "keyval": {"public": hex::encode(k.verifying_key().as_bytes())},
            }),
            PrivateKey::Rsa(k) => json!({
                "keytype": "RSA",
                "keyval": {"public": k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap_or_default()},
            }),
        }
    }

    pub fn method(&self) -> Method {
        match self {
            PrivateKey::Ed25519(_) => Method::Ed25519,
            PrivateKey::Rsa(_) => Method::RsassaPssSha256,
        }
    }

    /// Sign `msg`; RSA uses PSS with a 32-byte salt, as fioctl does.
    pub fn sign(&self, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            PrivateKey::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            PrivateKey::Rsa(k) => {
                let hashed = Sha256::digest(msg);
                k.sign_with_rng(
                    &mut rand::rngs::OsRng,
                    rsa::Pss::new_with_salt::<Sha256>(32),
                    &hashed,
                )?
            }
        })
    }

    /// One element of a `signatures` array.
    pub fn signature_json(&self, msg: &[u8]) -> anyhow::Result<Value> {
        let sig = self.sign(msg)?;
        Ok(json!({
            "keyid": self.key_id(),
            "method": self.method().as_str(),
            "sig": base64::engine::general_purpose::STANDARD.encode(sig),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(start: u8) -> [u8; 32] {
        std::array::from_fn(|i| start + i as u8)
    }

    #[test]
    fn reference_key_ids() {
        // Keys A and B of the worked example (docs/bundle-format.md).
        let a = PrivateKey::ed25519_from_seed(seed(0));
        assert_eq!(
            a.public_json()["keyval"]["public"],
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        assert_eq!(
            a.key_id(),
            "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
        );
        let b = PrivateKey::ed25519_from_seed(seed(0x20));
        assert_eq!(
            b.key_id(),
            "824c89aa8efb95ef93629b4519599129cace4adac9a6180daba31ceed41ecee6"
        );
    }

    fn rsa(bits: u32) -> PrivateKey {
        let path = format!(
            "{}/tests/fixtures/keys/rsa{bits}.pem",
            env!("CARGO_MANIFEST_DIR")
        );
        PrivateKey::rsa_from_pkcs8_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn ed25519_sign_verify_and_tamper() {
        let k = PrivateKey::ed25519_from_seed(seed(7));
        let pubk = PublicKey::from_json(&k.public_json()).unwrap();
        let sig = k.sign(b"hello").unwrap();
        assert!(pubk.verify(b"hello", &sig));
        assert!(!pubk.verify(b"hellp", &sig));
        assert!(!pubk.verify(b"hello", &sig[..63]));
    }

    #[test]
    fn rsa_sizes_and_salt_lengths() {
        for bits in [2048, 3072, 4096] {
            let k = rsa(bits);
            let pubk = PublicKey::from_json(&k.public_json()).unwrap();
            assert!(matches!(pubk, PublicKey::Rsa(_)), "{bits}");
            let sig = k.sign(b"msg").unwrap();
            assert!(pubk.verify(b"msg", &sig), "{bits}");
            assert!(!pubk.verify(b"msh", &sig), "{bits}");
        }
        // Salt lengths other than 32 (aktualizr signs with the maximum) are recovered.
        let PrivateKey::Rsa(k) = rsa(2048) else {
            unreachable!()
        };
        let pubk = PublicKey::Rsa(k.to_public_key());
        for salt in [0usize, 20, 64, 256 - 32 - 2] {
            let sig = k
                .sign_with_rng(
                    &mut rand::rngs::OsRng,
                    rsa::Pss::new_with_salt::<Sha256>(salt),
                    &Sha256::digest(b"m"),
                )
                .unwrap();
            assert!(pubk.verify(b"m", &sig), "salt {salt}");
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(!pubk.verify(b"m", &bad), "salt {salt}");
        }
    }

    #[test]
    fn rsa_1024_is_unusable_but_parses() {
        let k = rsa(1024);
        let pubk = PublicKey::from_json(&k.public_json()).unwrap();
        assert!(matches!(pubk, PublicKey::Unusable(_)));
        assert!(!pubk.verify(b"m", &k.sign(b"m").unwrap()));
    }

    #[test]
    fn unknown_key_type_is_refused() {
        let e = PublicKey::from_json(&json!({"keytype": "ECDSA", "keyval": {"public": "x"}}));
        assert_eq!(e.unwrap_err(), UnsupportedKeyType("ECDSA".into()));
        // keytype is matched case-insensitively, as on the device.
        let k = PrivateKey::ed25519_from_seed(seed(1));
        let mut j = k.public_json();
        j["keytype"] = "ed25519".into();
        assert!(matches!(
            PublicKey::from_json(&j),
            Ok(PublicKey::Ed25519(_))
        ));
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
