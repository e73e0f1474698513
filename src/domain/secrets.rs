//! Opaque secrets handed to clients, and the server-held key that derives and hashes them.
//!
//! Only hashes of secrets are ever stored. Refresh tokens are 256 random bits; their SHA-256 is
//! enough. Short codes (6 digits) would fall to a dictionary, so they are hashed with a keyed
//! HMAC instead, under [`ServerKey`].

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::ids::{SessionId, UserId};

type HmacSha256 = Hmac<Sha256>;

/// 32 bytes from the operating system's generator.
pub fn random_32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The server's own secret, kept in the data dir beside the signing keys. It derives the secrets
/// of refresh tokens (so any generation can be recognised, and a retried rotation answered,
/// without storing any token) and keys the hashes of short codes.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl ServerKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail; fall back to a keyed hash of the
        // same inputs rather than carry an unreachable error everywhere.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return sha256(&[&self.0[..], &parts.concat()].concat()),
        };
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// The secret of generation `generation` of the refresh family `sid`: a PRF of the two
    /// under this key, so checking any generation costs one HMAC.
    pub fn refresh_secret(&self, sid: SessionId, generation: u32) -> [u8; 32] {
        self.mac(&[b"bprt-v2", sid.as_bytes(), &generation.to_be_bytes()])
    }

    /// The stored form of a short code, bound to its purpose and owner.
    pub fn code_hash(&self, purpose: &str, owner: &[u8], code: &str) -> [u8; 32] {
        self.mac(&[b"bp-code-v1", purpose.as_bytes(), owner, code.as_bytes()])
    }

    /// A keyed digest for other secrets that need one (API keys, recovery codes).
    pub fn digest(&self, purpose: &str, secret: &[u8]) -> [u8; 32] {
        self.mac(&[b"bp-digest-v1", purpose.as_bytes(), secret])
    }
}

/// The key that encrypts secrets the server must read back (TOTP secrets), kept beside the
/// signing keys. ChaCha20-Poly1305 with a random nonce per message, the owner's id as
/// associated data so a ciphertext cannot be moved to another user.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

const NONCE_LEN: usize = 12;

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{ChaCha20Poly1305, Nonce};
        let cipher = ChaCha20Poly1305::new_from_slice(&self.0).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .ok()?;
        Some([&nonce[..], &ct].concat())
    }

    /// The plaintext, or `None` if the data was tampered with or sealed for another owner.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{ChaCha20Poly1305, Nonce};
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let cipher = ChaCha20Poly1305::new_from_slice(&self.0).ok()?;
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
    }
}

/// A refresh token as presented: `bprt_` + base64url(user ‖ session ‖ generation ‖ secret).
///
/// The user and session let the server route it to its owner's actor without an index; the
/// generation says which of its family's tokens it is; the 256-bit secret is what proves it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub user: UserId,
    pub session: SessionId,
    pub generation: u32,
    pub secret: [u8; 32],
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("user", &self.user)
            .field("session", &self.session)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

const REFRESH_PREFIX: &str = "bprt_";
const REFRESH_RAW_LEN: usize = 16 + 16 + 4 + 32;

impl RefreshToken {
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(REFRESH_RAW_LEN);
        raw.extend_from_slice(self.user.as_bytes());
        raw.extend_from_slice(self.session.as_bytes());
        raw.extend_from_slice(&self.generation.to_be_bytes());
        raw.extend_from_slice(&self.secret);
        format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// `None` for anything that is not exactly a token of this format.
    pub fn parse(s: &str) -> Option<Self> {
        let body = s.strip_prefix(REFRESH_PREFIX)?;
        if body.len() > 100 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
        if raw.len() != REFRESH_RAW_LEN {
            return None;
        }
        let user: [u8; 16] = raw[0..16].try_into().ok()?;
        let session: [u8; 16] = raw[16..32].try_into().ok()?;
        let generation: [u8; 4] = raw[32..36].try_into().ok()?;
        let secret: [u8; 32] = raw[36..68].try_into().ok()?;
        Some(Self {
            user: UserId::from_bytes(user),
            session: SessionId::from_bytes(session),
            generation: u32::from_be_bytes(generation),
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_round_trips() {
        let t = RefreshToken {
            user: UserId::generate(),
            session: SessionId::generate(),
            generation: 7,
            secret: random_32(),
        };
        let s = t.encode();
        assert!(s.starts_with("bprt_"));
        assert!(s.len() >= 5 + 43, "at least 256 bits of randomness");
        assert_eq!(RefreshToken::parse(&s), Some(t));
    }

    #[test]
    fn refresh_token_rejects_garbage() {
        for bad in [
            "",
            "bprt_",
            "bprt_abc",
            "xx_AAAA",
            &format!("bprt_{}", "A".repeat(90)),
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let t = RefreshToken {
            user: UserId::generate(),
            session: SessionId::generate(),
            generation: 0,
            secret: [7; 32],
        };
        assert!(!format!("{t:?}").contains("7, 7"));
        assert!(!format!("{:?}", ServerKey::from_bytes([7; 32])).contains('7'));
    }

    #[test]
    fn sealed_data_opens_only_for_its_owner() {
        let k = DataKey::from_bytes([5; 32]);
        let sealed = k.seal(b"user-1", b"totp secret").unwrap();
        assert_eq!(k.open(b"user-1", &sealed).unwrap(), b"totp secret");
        assert!(k.open(b"user-2", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.open(b"user-1", &tampered).is_none());
        assert!(DataKey::from_bytes([6; 32])
            .open(b"user-1", &sealed)
            .is_none());
    }

    #[test]
    fn refresh_secrets_depend_on_key_session_and_generation() {
        let k = ServerKey::from_bytes([1; 32]);
        let sid = SessionId::generate();
        assert_eq!(k.refresh_secret(sid, 1), k.refresh_secret(sid, 1));
        assert_ne!(k.refresh_secret(sid, 1), k.refresh_secret(sid, 2));
        assert_ne!(
            k.refresh_secret(sid, 1),
            k.refresh_secret(SessionId::generate(), 1)
        );
        assert_ne!(
            k.refresh_secret(sid, 1),
            ServerKey::from_bytes([2; 32]).refresh_secret(sid, 1)
        );
    }
}
