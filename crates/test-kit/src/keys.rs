//! Signing keys of the Foundries TUF flavour, for the bundle writer and the tests: the
//! device only verifies (`foundries_tuf::keys`), so signing lives here and never ships.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use foundries_tuf::keys::{spki_key_id, Method, ED25519_SPKI_PREFIX};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
    use foundries_tuf::keys::PublicKey;

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
        let path = format!("{}/keys/rsa{bits}.pem", env!("CARGO_MANIFEST_DIR"));
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
    fn key_type_is_matched_case_insensitively() {
        // As on the device (an unknown type is refused: foundries-tuf's own tests).
        let k = PrivateKey::ed25519_from_seed(seed(1));
        let mut j = k.public_json();
        j["keytype"] = "ed25519".into();
        assert!(matches!(
            PublicKey::from_json(&j),
            Ok(PublicKey::Ed25519(_))
        ));
    }
}
