//! Ed25519 keys for signing and checking digests.
//!
//! Keys are PEM files: the private key as PKCS#8 (`-----BEGIN PRIVATE KEY-----`),
//! the public key as SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), the
//! formats OpenSSL and Python's `cryptography` read. A key's id is the first 16
//! hex digits of the SHA-256 of its raw 32-byte public key; a digest names the
//! id of the key that signed it, so old public keys keep verifying old digests
//! after a rotation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Errors reading, writing or using keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a PEM key of the expected kind.
    #[error("{what}: not an Ed25519 {kind} key in PEM ({reason})")]
    Pem {
        /// Where the text came from (a path or a variable name).
        what: String,
        /// `private` or `public`.
        kind: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Random bytes for a new key could not be drawn.
    #[error("cannot draw random bytes for a new key: {0}")]
    Random(String),
}

/// The id of a public key: the first 16 hex digits of SHA-256 of its raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// A private key that signs digests, with its id.
#[derive(Clone)]
pub struct DigestSigner {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for DigestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("DigestSigner")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DigestSigner {
    /// A new random key.
    pub fn generate() -> Result<DigestSigner, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(DigestSigner::from_key(SigningKey::from_bytes(&seed)))
    }

    fn from_key(key: SigningKey) -> DigestSigner {
        let id = key_id(&key.verifying_key());
        DigestSigner { key, id }
    }

    /// Reads a PKCS#8 PEM private key; `what` names its source in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<DigestSigner, KeyError> {
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(DigestSigner::from_key)
            .map_err(|e| KeyError::Pem {
                what: what.to_owned(),
                kind: "private",
                reason: e.to_string(),
            })
    }

    /// Reads a PKCS#8 PEM private key file.
    pub fn load(path: &Path) -> Result<DigestSigner, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        DigestSigner::from_pem(&text, &path.display().to_string())
    }

    /// The key id digests name.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_pem(&self) -> Zeroizing<String> {
        // PKCS#8 v1, the seed alone: the v2 form with the public key
        // appended is refused by some readers (Python's cryptography).
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes")
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> String {
        self.public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 public key always encodes")
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Writes the key pair: `private` (mode 0600, never overwritten) and
    /// `public`.
    pub fn write_pair(&self, private: &Path, public: &Path) -> Result<(), KeyError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        {
            use std::io::Write as _;
            let mut f = opts.open(private).map_err(io(private))?;
            f.write_all(self.private_pem().as_bytes())
                .map_err(io(private))?;
            f.sync_all().map_err(io(private))?;
        }
        std::fs::write(public, self.public_pem()).map_err(io(public))
    }
}

/// Public keys by id: what a verifier trusts.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl PublicKeys {
    /// No keys: signatures cannot be checked.
    pub fn new() -> PublicKeys {
        PublicKeys::default()
    }

    /// Adds a SubjectPublicKeyInfo PEM public key (a private key's PEM is
    /// accepted too, and its public half used); returns its id.
    pub fn add_pem(&mut self, pem: &str, what: &str) -> Result<String, KeyError> {
        let pem = pem.trim();
        let key = match VerifyingKey::from_public_key_pem(pem) {
            Ok(k) => k,
            Err(e) => match DigestSigner::from_pem(pem, what) {
                Ok(s) => s.public_key(),
                Err(_) => {
                    return Err(KeyError::Pem {
                        what: what.to_owned(),
                        kind: "public",
                        reason: e.to_string(),
                    });
                }
            },
        };
        let id = key_id(&key);
        self.keys.insert(id.clone(), key);
        Ok(id)
    }

    /// Adds the key in a PEM file; returns its id.
    pub fn load(&mut self, path: &Path) -> Result<String, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.add_pem(&text, &path.display().to_string())
    }

    /// Adds a key.
    pub fn insert(&mut self, key: VerifyingKey) -> String {
        let id = key_id(&key);
        self.keys.insert(id.clone(), key);
        id
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids known.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks `signature` over `message` with the key `id`.
    pub fn check(&self, id: &str, message: &[u8], signature: &[u8]) -> SignatureCheck {
        let Some(key) = self.keys.get(id) else {
            return SignatureCheck::UnknownKey;
        };
        let Ok(sig) = Signature::from_slice(signature) else {
            return SignatureCheck::Invalid;
        };
        if key.verify(message, &sig).is_ok() {
            SignatureCheck::Valid
        } else {
            SignatureCheck::Invalid
        }
    }
}

/// The result of checking one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Made by the named key over this message.
    Valid,
    /// Not made by the named key over this message.
    Invalid,
    /// The named key is not among the trusted keys.
    UnknownKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_signatures() {
        let s = DigestSigner::generate().unwrap();
        let again = DigestSigner::from_pem(&s.private_pem(), "test").unwrap();
        assert_eq!(again.key_id(), s.key_id());
        let mut keys = PublicKeys::new();
        assert_eq!(keys.add_pem(&s.public_pem(), "pub").unwrap(), s.key_id());
        let sig = s.sign(b"hello");
        assert_eq!(
            keys.check(s.key_id(), b"hello", &sig),
            SignatureCheck::Valid
        );
        assert_eq!(
            keys.check(s.key_id(), b"hellO", &sig),
            SignatureCheck::Invalid
        );
        assert_eq!(
            keys.check("0000", b"hello", &sig),
            SignatureCheck::UnknownKey
        );
        assert_eq!(s.key_id().len(), 16);
        assert!(!format!("{s:?}").contains("PRIVATE"));
        let err = PublicKeys::new().add_pem("nonsense", "k.pem").unwrap_err();
        assert!(
            err.to_string().starts_with("k.pem: not an Ed25519"),
            "{err}"
        );
    }
}
