//! The user's API key: created on first ask, rotated on demand, its use recorded.

use super::{Status, UserState};
use crate::domain::apikey::{ApiKey, NewKey};
use crate::domain::time::Timestamp;

impl UserState {
    /// The current key, creating one if there is none; the secret is returned only on creation.
    pub fn ensure_api_key(&mut self, now: Timestamp) -> (ApiKey, Option<String>) {
        match &self.api_key {
            Some(k) => (k.clone(), None),
            None => {
                let NewKey { secret, record } = ApiKey::generate(now);
                self.api_key = Some(record.clone());
                (record, Some(secret))
            }
        }
    }

    /// Replaces the key (creating one if there is none); returns the new key, its secret and
    /// the digest of the key it replaced.
    pub fn rotate_api_key(&mut self, now: Timestamp) -> (ApiKey, String, Option<[u8; 32]>) {
        let old = self.api_key.as_ref().map(|k| k.digest);
        let NewKey { secret, mut record } = ApiKey::generate(now);
        record.disabled = self.status != Status::Active;
        self.api_key = Some(record.clone());
        (record, secret, old)
    }

    /// The key with `digest`, if it authenticates this user now: the account is active, the
    /// key is the current one and not disabled.
    pub fn usable_api_key(&self, digest: &[u8; 32]) -> Option<&ApiKey> {
        self.api_key
            .as_ref()
            .filter(|k| self.status == Status::Active && &k.digest == digest && !k.disabled)
    }

    /// Records a use of the key, when one is due (write-behind bookkeeping).
    pub fn touch_api_key(&mut self, digest: &[u8; 32], now: Timestamp) {
        if let Some(k) = self.api_key.as_mut().filter(|k| &k.digest == digest) {
            if k.touch_due(now) {
                k.last_used_at = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn api_key_is_created_once_and_rotation_replaces_it() {
        let mut u = user();
        let (k1, secret) = u.ensure_api_key(T0);
        assert!(secret.is_some());
        let (k1_again, none) = u.ensure_api_key(T0);
        assert_eq!(k1, k1_again);
        assert!(none.is_none());
        let (k2, _, old) = u.rotate_api_key(T0);
        assert_eq!(old, Some(k1.digest));
        assert_ne!(k2.id, k1.id);
    }

    #[test]
    fn key_use_is_recorded_at_most_once_a_minute() {
        let mut u = user();
        let (k, _) = u.ensure_api_key(T0);
        u.touch_api_key(&k.digest, T0.plus(1));
        u.touch_api_key(&k.digest, T0.plus(30));
        assert_eq!(u.api_key.as_ref().unwrap().last_used_at, Some(T0.plus(1)));
        u.touch_api_key(&k.digest, T0.plus(61));
        assert_eq!(u.api_key.as_ref().unwrap().last_used_at, Some(T0.plus(61)));
    }
}
