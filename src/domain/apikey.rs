//! API keys: `bpk_` + 32 random base62 characters + a 6-character base62 CRC32 checksum of
//! those 32 (GitHub's token scheme), so secret scanners can recognise a leaked key and a
//! mistyped one is refused without any lookup. Only a SHA-256 digest is stored; 190 random bits
//! need no slow hash.

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::ids::ApiKeyId;
use super::secrets::sha256;
use super::time::Timestamp;

pub const PREFIX: &str = "bpk_";
const RANDOM_LEN: usize = 32;
const CHECK_LEN: usize = 6;
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECK_LEN;
/// How much of the key is shown to help its owner recognise it.
const SHOWN_LEN: usize = 12;
/// `last_used_at` is bookkeeping nobody is promised to the second: recording a use at most
/// once a minute keeps a busy key from writing a snapshot per request.
const TOUCH_EVERY_SECONDS: i64 = 60;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in base62, most significant digit first, left-padded with `0` to `width`.
fn base62(mut n: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits).unwrap_or_default()
}

fn checksum(random: &str) -> String {
    base62(u64::from(crc32fast::hash(random.as_bytes())), CHECK_LEN)
}

/// A freshly generated key: the full secret (shown once) and what is stored.
pub struct NewKey {
    pub secret: String,
    pub record: ApiKey,
}

/// What the user's state keeps of their key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    /// SHA-256 of the full key.
    pub digest: [u8; 32],
    /// The first 12 characters, e.g. `bpk_AbCdEfGh`.
    pub prefix: String,
    pub created_at: Timestamp,
    /// Write-behind: updated at most once a minute.
    pub last_used_at: Option<Timestamp>,
    /// Set while the account is deactivated.
    pub disabled: bool,
}

impl ApiKey {
    pub fn generate(now: Timestamp) -> NewKey {
        let random: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from)
            .collect();
        let secret = format!("{PREFIX}{random}{}", checksum(&random));
        let record = ApiKey {
            id: ApiKeyId::generate(),
            digest: digest(&secret),
            prefix: secret[..SHOWN_LEN].to_string(),
            created_at: now,
            last_used_at: None,
            disabled: false,
        };
        NewKey { secret, record }
    }

    /// Whether a use at `now` is worth recording (see `TOUCH_EVERY_SECONDS`).
    pub fn touch_due(&self, now: Timestamp) -> bool {
        self.last_used_at
            .is_none_or(|t| now.0 - t.0 >= TOUCH_EVERY_SECONDS)
    }
}

/// The stored digest of a key.
pub fn digest(key: &str) -> [u8; 32] {
    sha256(key.as_bytes())
}

/// Whether `key` has the format and a valid checksum: checked before any lookup.
pub fn well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    if rest.len() != RANDOM_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, check) = rest.split_at(RANDOM_LEN);
    checksum(random) == check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_format_and_checksum() {
        let k = ApiKey::generate(Timestamp(0));
        assert_eq!(k.secret.len(), KEY_LEN);
        assert!(k.secret.starts_with("bpk_"));
        assert!(well_formed(&k.secret));
        assert_eq!(k.record.prefix, &k.secret[..12]);
        assert_eq!(k.record.digest, digest(&k.secret));
    }

    #[test]
    fn checksum_is_crc32_in_base62() {
        // CRC32("123456789") is the standard check value 0xCBF43926 = 3421780262.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(base62(3_421_780_262, 6), "3jZRME");
        assert_eq!(base62(0, 6), "000000");
        assert_eq!(base62(61, 6), "00000z");
    }

    #[test]
    fn typos_are_refused_without_lookup() {
        let k = ApiKey::generate(Timestamp(0)).secret;
        let mut chars: Vec<char> = k.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(!well_formed(&typo));
        assert!(!well_formed(&k[..k.len() - 1]));
        assert!(!well_formed(&k.replacen("bpk_", "bpx_", 1)));
        assert!(!well_formed(""));
    }
}
