//! Keyrings: HMAC-SHA256 keys for digests, AES-256-GCM keys for sealed
//! content, each with one active key and older keys kept for verification and
//! decryption.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::error::{KeyError, RedactError};
use crate::model::{ContentDigest, DigestAlgorithm, SealedContent};
use crate::validate::MAX_SEALED_BYTES;
use otel_audit_sha as sha;

/// The `algorithm` of [`SealedContent`] written by this crate.
pub const SEALED_ALGORITHM: &str = "aes-256-gcm";
/// The shortest HMAC key accepted, in bytes.
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// The AES-256 key length, in bytes.
pub const AES_KEY_BYTES: usize = 32;
/// The AES-GCM nonce length, in bytes.
pub const NONCE_BYTES: usize = 12;
/// The AES-GCM authentication tag length, in bytes.
pub const TAG_BYTES: usize = 16;
/// The longest key id.
pub const MAX_KEY_ID_BYTES: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A key's HMAC-SHA256 state (RFC 2104): SHA-256 after the key block XOR
/// ipad, and after the key block XOR opad. A digest copies the two states
/// and compresses the value's blocks and the outer block directly, without
/// cloning an `Hmac` (about 200 bytes, wiped byte by byte on drop) or
/// buffering: that was as much work again as the compression for the short
/// values digested on an application's calling thread. Wiped on drop, like
/// the key bytes. Checked against the `hmac` crate and RFC 4231.
#[derive(Clone)]
struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl Drop for HmacKey {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

impl HmacKey {
    fn new(key: &[u8]) -> HmacKey {
        let mut block = Zeroizing::new([0u8; 64]);
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let keyed = |pad: u8| {
            let mut padded = Zeroizing::new([0u8; 64]);
            for (p, k) in padded.iter_mut().zip(block.iter()) {
                *p = k ^ pad;
            }
            let mut state = sha::IV;
            sha::compress(&mut state, std::slice::from_ref(&*padded));
            state
        };
        HmacKey {
            inner: keyed(0x36),
            outer: keyed(0x5c),
        }
    }

    fn mac(&self, value: &[u8]) -> [u8; 32] {
        let mut state = self.inner;
        let (blocks, rest) = value.as_chunks::<64>();
        sha::compress(&mut state, blocks);
        // The value's last bytes, then the padding (one block, or two when
        // the length no longer fits after them). Those bytes may be content:
        // they are wiped afterwards (only they, not the whole two blocks).
        let mut tail = [[0u8; 64]; 2];
        tail[0][..rest.len()].copy_from_slice(rest);
        let used = sha::pad(&mut tail, rest.len(), 64 + value.len() as u64);
        sha::compress(&mut state, &tail[..used]);
        tail[0][..rest.len()].zeroize();
        let mut outer_block = [[0u8; 64]];
        outer_block[0][..32].copy_from_slice(&sha::digest_of(&state));
        state.zeroize();
        let used = sha::pad(&mut outer_block, 32, 64 + 32);
        let mut out = self.outer;
        sha::compress(&mut out, &outer_block[..used]);
        sha::digest_of(&out)
    }
}

/// What a keyring's keys are for. One key never serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// HMAC-SHA256 content digests (at least 32 bytes).
    Hmac,
    /// AES-256-GCM sealed content (exactly 32 bytes).
    Encryption,
}

impl KeyPurpose {
    /// The purpose's name in configuration (`hmac`, `encryption`).
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Hmac => "hmac",
            KeyPurpose::Encryption => "encryption",
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a key id: 1 to 64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
/// Key ids are stored in every row and inside inline digests
/// (`hmac-sha256:<key id>:<hex>`), so they must not contain `:` or spaces.
pub fn check_key_id(key_id: &str) -> Result<(), KeyError> {
    crate::validate::check_path_token(key_id, MAX_KEY_ID_BYTES).map_err(|reason| {
        KeyError::InvalidId {
            key_id: key_id.chars().take(64).collect(),
            reason,
        }
    })
}

/// A set of keys for one [`KeyPurpose`]: the active key seals or digests new
/// data; the others are kept so that data written under them can still be
/// verified or decrypted after a rotation.
///
/// Key bytes are wiped from memory when the keyring is dropped, and `Debug`
/// shows only key ids.
///
/// ```
/// use otel_audit_event::redact::{Keyring, decrypt};
/// let mut ring = Keyring::encryption("aes-2024", [1u8; 32])?;
/// let old = ring.seal("gen_ai.prompt", b"hello")?;
/// ring.add("aes-2025", [2u8; 32])?;
/// ring.set_active("aes-2025")?;
/// let new = ring.seal("gen_ai.prompt", b"world")?;
/// assert_eq!(new.key_id, "aes-2025");
/// assert_eq!(decrypt(&old, &ring)?, b"hello"); // the retired key still opens old data
/// assert!(!format!("{ring:?}").contains("0101"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Keyring {
    purpose: KeyPurpose,
    active: String,
    keys: BTreeMap<String, Zeroizing<Vec<u8>>>,
    /// HMAC keyrings: the active key's keyed state (inner and outer hash
    /// after the key block), used per digest instead of re-keying.
    active_mac: Option<HmacKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("purpose", &self.purpose)
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn check_key(purpose: KeyPurpose, key_id: &str, key: &[u8]) -> Result<(), KeyError> {
    check_key_id(key_id)?;
    match purpose {
        KeyPurpose::Hmac if key.len() < MIN_HMAC_KEY_BYTES => Err(KeyError::TooShort {
            purpose,
            key_id: key_id.to_owned(),
            len: key.len(),
            min: MIN_HMAC_KEY_BYTES,
        }),
        KeyPurpose::Encryption if key.len() != AES_KEY_BYTES => Err(KeyError::WrongLength {
            purpose,
            key_id: key_id.to_owned(),
            len: key.len(),
            expected: AES_KEY_BYTES,
        }),
        _ => Ok(()),
    }
}

impl Keyring {
    /// A keyring with one key, which is active.
    pub fn new(
        purpose: KeyPurpose,
        active_id: impl Into<String>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, KeyError> {
        let id = active_id.into();
        let key = Zeroizing::new(key.into());
        check_key(purpose, &id, &key)?;
        let mut keys = BTreeMap::new();
        keys.insert(id.clone(), key);
        let mut ring = Keyring {
            purpose,
            active: id,
            keys,
            active_mac: None,
        };
        ring.key_active_mac();
        Ok(ring)
    }

    /// Precomputes the active key's HMAC state (HMAC keyrings only).
    fn key_active_mac(&mut self) {
        self.active_mac = match self.purpose {
            KeyPurpose::Hmac => self.keys.get(&self.active).map(|k| HmacKey::new(k)),
            KeyPurpose::Encryption => None,
        };
    }

    /// An HMAC keyring with one active key of at least 32 bytes.
    pub fn hmac(active_id: impl Into<String>, key: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        Keyring::new(KeyPurpose::Hmac, active_id, key)
    }

    /// An AES-256-GCM keyring with one active key of exactly 32 bytes.
    pub fn encryption(
        active_id: impl Into<String>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, KeyError> {
        Keyring::new(KeyPurpose::Encryption, active_id, key)
    }

    /// Adds a key that is not active (an older key kept for decryption and
    /// verification, or the next key before [`set_active`](Self::set_active)).
    pub fn add(
        &mut self,
        key_id: impl Into<String>,
        key: impl Into<Vec<u8>>,
    ) -> Result<(), KeyError> {
        let id = key_id.into();
        let key = Zeroizing::new(key.into());
        check_key(self.purpose, &id, &key)?;
        if self.keys.contains_key(&id) {
            return Err(KeyError::Duplicate { key_id: id });
        }
        self.keys.insert(id, key);
        Ok(())
    }

    /// Makes another key of the keyring the one used for new data.
    pub fn set_active(&mut self, key_id: &str) -> Result<(), KeyError> {
        if !self.keys.contains_key(key_id) {
            return Err(KeyError::UnknownActive {
                key_id: key_id.to_owned(),
            });
        }
        key_id.clone_into(&mut self.active);
        self.key_active_mac();
        Ok(())
    }

    /// What the keys are for.
    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    /// The id of the key used for new data.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Every key id, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether the keyring holds `key_id`.
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    fn key(&self, key_id: &str, want: KeyPurpose) -> Result<&[u8], RedactError> {
        if self.purpose != want {
            return Err(RedactError::WrongKeyring {
                expected: want,
                found: self.purpose,
            });
        }
        self.keys
            .get(key_id)
            .map(|k| k.as_slice())
            .ok_or_else(|| RedactError::UnknownKey {
                purpose: want,
                key_id: key_id.to_owned(),
            })
    }

    fn mac(&self, key_id: &str) -> Result<HmacSha256, RedactError> {
        let key = self.key(key_id, KeyPurpose::Hmac)?;
        // HMAC accepts keys of any length; ours are checked to be >= 32 bytes.
        Ok(<HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    /// HMAC-SHA256 of `value` under the key `key_id` (an auditor can recompute
    /// a stored digest for a candidate value this way).
    pub fn hmac_sha256(&self, key_id: &str, value: &[u8]) -> Result<[u8; 32], RedactError> {
        if key_id == self.active
            && let Some(key) = &self.active_mac
        {
            return Ok(key.mac(value));
        }
        let mut mac = self.mac(key_id)?;
        mac.update(value);
        Ok(mac.finalize().into_bytes().into())
    }

    /// A keyed digest of `value` under the active key.
    pub fn digest(&self, field: &str, value: &[u8]) -> Result<ContentDigest, RedactError> {
        Ok(ContentDigest {
            field: field.to_owned(),
            algorithm: DigestAlgorithm::HmacSha256,
            key_id: Some(self.active.clone()),
            digest: self.hmac_sha256(&self.active, value)?,
        })
    }

    /// Encrypts `plaintext` with the active key: AES-256-GCM, a fresh random
    /// 12-byte nonce, and the field name as associated data, so that the
    /// ciphertext only opens as that field's content.
    pub fn seal(&self, field: &str, plaintext: &[u8]) -> Result<SealedContent, RedactError> {
        let max = MAX_SEALED_BYTES - TAG_BYTES;
        if plaintext.len() > max {
            return Err(RedactError::TooLarge {
                field: field.to_owned(),
                len: plaintext.len(),
                max,
            });
        }
        let key = self.key(&self.active, KeyPurpose::Encryption)?;
        let cipher = Aes256Gcm::new_from_slice(key).expect("keys are checked to be 32 bytes");
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|source| RedactError::Random { source })?;
        let ciphertext = cipher
            .encrypt(
                &Nonce::<U12>::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| RedactError::TooLarge {
                field: field.to_owned(),
                len: plaintext.len(),
                max,
            })?;
        Ok(SealedContent {
            field: field.to_owned(),
            algorithm: SEALED_ALGORITHM.to_owned(),
            key_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }
}

/// Opens sealed content with the key named by its `key_id` (any key of the
/// keyring, not only the active one, so data sealed before a rotation still
/// opens). Fails if the ciphertext was altered or moved to another field.
///
/// The plaintext is returned as it was sealed (UTF-8 for text fields).
pub fn decrypt(sealed: &SealedContent, keys: &Keyring) -> Result<Vec<u8>, RedactError> {
    if sealed.algorithm != SEALED_ALGORITHM {
        return Err(RedactError::UnsupportedAlgorithm {
            field: sealed.field.clone(),
            algorithm: sealed.algorithm.chars().take(64).collect(),
        });
    }
    let nonce: [u8; NONCE_BYTES] =
        sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| RedactError::InvalidNonce {
                field: sealed.field.clone(),
                len: sealed.nonce.len(),
            })?;
    let key = keys.key(&sealed.key_id, KeyPurpose::Encryption)?;
    let cipher = Aes256Gcm::new_from_slice(key).expect("keys are checked to be 32 bytes");
    cipher
        .decrypt(
            &Nonce::<U12>::from(nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: sealed.field.as_bytes(),
            },
        )
        .map_err(|_| RedactError::Decrypt {
            field: sealed.field.clone(),
            key_id: sealed.key_id.clone(),
        })
}

/// A plain SHA-256 digest of `value` (no key: use only when chosen explicitly).
pub fn sha256_digest(field: &str, value: &[u8]) -> ContentDigest {
    ContentDigest {
        field: field.to_owned(),
        algorithm: DigestAlgorithm::Sha256,
        key_id: None,
        digest: Sha256::digest(value).into(),
    }
}

/// Checks whether `candidate` is the value a stored digest was computed from,
/// in constant time. HMAC digests need the HMAC keyring holding the digest's
/// key id (retired keys included); plain SHA-256 digests need no keys.
///
/// ```
/// use otel_audit_event::redact::{Keyring, verify_digest};
/// let ring = Keyring::hmac("k1", [7u8; 32])?;
/// let digest = ring.digest("gen_ai.prompt", b"What is my balance?")?;
/// assert!(verify_digest(&digest, b"What is my balance?", Some(&ring))?);
/// assert!(!verify_digest(&digest, b"What is my balance", Some(&ring))?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_digest(
    digest: &ContentDigest,
    candidate: &[u8],
    keys: Option<&Keyring>,
) -> Result<bool, RedactError> {
    match digest.algorithm {
        DigestAlgorithm::Sha256 => {
            let got: [u8; 32] = Sha256::digest(candidate).into();
            Ok(constant_time_eq(&got, &digest.digest))
        }
        DigestAlgorithm::HmacSha256 => {
            let keys = keys.ok_or(RedactError::NoKeyring {
                purpose: KeyPurpose::Hmac,
            })?;
            let key_id = digest
                .key_id
                .as_deref()
                .ok_or_else(|| RedactError::MissingKeyId {
                    field: digest.field.clone(),
                })?;
            let mut mac = keys.mac(key_id)?;
            mac.update(candidate);
            Ok(mac.verify_slice(&digest.digest).is_ok())
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The keys a [`Redactor`](super::Redactor) uses.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// HMAC keys, needed when the policy uses `hmac` (the default for content).
    pub hmac: Option<Keyring>,
    /// Encryption keys, needed when the policy uses `encrypt`.
    pub encryption: Option<Keyring>,
}

impl Keys {
    /// HMAC keys only.
    pub fn hmac(keyring: Keyring) -> Self {
        Keys {
            hmac: Some(keyring),
            encryption: None,
        }
    }

    /// Adds encryption keys.
    #[must_use]
    pub fn with_encryption(mut self, keyring: Keyring) -> Self {
        self.encryption = Some(keyring);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lengths_are_checked() {
        assert!(matches!(
            Keyring::hmac("k", [0u8; 31]),
            Err(KeyError::TooShort { len: 31, .. })
        ));
        assert!(Keyring::hmac("k", [0u8; 64]).is_ok());
        assert!(matches!(
            Keyring::encryption("k", [0u8; 33]),
            Err(KeyError::WrongLength { len: 33, .. })
        ));
        let err = Keyring::hmac("bad:id", [0u8; 32]).unwrap_err();
        assert!(err.to_string().contains("bad:id"), "{err}");
        let mut ring = Keyring::hmac("a", [0u8; 32]).unwrap();
        assert!(matches!(
            ring.add("a", [1u8; 32]),
            Err(KeyError::Duplicate { .. })
        ));
        assert!(matches!(
            ring.set_active("zz"),
            Err(KeyError::UnknownActive { .. })
        ));
    }

    #[test]
    fn hmac_matches_an_independent_computation() {
        // HMAC-SHA256 with a 32-byte key, checked against an independent
        // computation (Python: hmac.new(b"\x0b"*32, b"Hi There", sha256)).
        let ring = Keyring::hmac("k", [0x0bu8; 32]).unwrap();
        let d = ring.hmac_sha256("k", b"Hi There").unwrap();
        assert_eq!(
            hex::encode(d),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    /// The direct computation is HMAC-SHA256: RFC 4231's cases 1 (short
    /// key) and 6 (key longer than a block), and the `hmac` crate for every
    /// value length up to five blocks, around each padding boundary, with
    /// keys shorter than, equal to and longer than a block.
    #[test]
    fn the_direct_hmac_is_hmac_sha256() {
        let rfc = [
            (
                vec![0x0bu8; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                vec![0xaau8; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, value, expected) in rfc {
            assert_eq!(hex::encode(HmacKey::new(&key).mac(&value)), expected);
        }
        let value: Vec<u8> = (0..320u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [32, 33, 63, 64, 65, 100, 200] {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 13 + 1) as u8).collect();
            let direct = HmacKey::new(&key);
            for n in 0..=value.len() {
                let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&key).unwrap();
                mac.update(&value[..n]);
                let want: [u8; 32] = mac.finalize().into_bytes().into();
                assert_eq!(direct.mac(&value[..n]), want, "key {key_len} value {n}");
            }
        }
    }

    #[test]
    fn the_cached_active_key_follows_rotation() {
        let fresh = |key: &[u8], v: &[u8]| -> [u8; 32] {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap();
            mac.update(v);
            mac.finalize().into_bytes().into()
        };
        let mut ring = Keyring::hmac("old", [1u8; 32]).unwrap();
        assert_eq!(
            ring.digest("f", b"v").unwrap().digest,
            fresh(&[1u8; 32], b"v")
        );
        ring.add("new", [2u8; 40]).unwrap();
        assert_eq!(
            ring.digest("f", b"v").unwrap().digest,
            fresh(&[1u8; 32], b"v")
        );
        ring.set_active("new").unwrap();
        let d = ring.digest("f", b"v").unwrap();
        assert_eq!(d.key_id.as_deref(), Some("new"));
        assert_eq!(d.digest, fresh(&[2u8; 40], b"v"));
        // The retired key still verifies what it wrote.
        assert_eq!(
            ring.hmac_sha256("old", b"v").unwrap(),
            fresh(&[1u8; 32], b"v")
        );
        // A clone keeps the keyed state.
        assert_eq!(ring.clone().digest("f", b"v").unwrap(), d);
    }

    #[test]
    fn purposes_are_not_mixed() {
        let ring = Keyring::hmac("k", [0u8; 32]).unwrap();
        assert!(matches!(
            ring.seal("f", b"x"),
            Err(RedactError::WrongKeyring { .. })
        ));
    }

    #[test]
    fn seal_open_and_tamper() {
        let ring = Keyring::encryption("e1", [9u8; 32]).unwrap();
        let s = ring.seal("gen_ai.prompt", b"secret text").unwrap();
        assert_eq!(s.nonce.len(), 12);
        assert_eq!(s.ciphertext.len(), 11 + 16);
        assert_eq!(decrypt(&s, &ring).unwrap(), b"secret text");
        let s2 = ring.seal("gen_ai.prompt", b"secret text").unwrap();
        assert_ne!(s.nonce, s2.nonce, "nonces must be fresh");
        let mut bad = s.clone();
        bad.ciphertext[0] ^= 1;
        assert!(matches!(
            decrypt(&bad, &ring),
            Err(RedactError::Decrypt { .. })
        ));
        let mut bad = s.clone();
        bad.algorithm = "rot13".into();
        assert!(matches!(
            decrypt(&bad, &ring),
            Err(RedactError::UnsupportedAlgorithm { .. })
        ));
        let mut bad = s;
        bad.nonce.pop();
        assert!(matches!(
            decrypt(&bad, &ring),
            Err(RedactError::InvalidNonce { len: 11, .. })
        ));
    }
}
