//! Snapshot encoding: one format-version byte, then bincode. sled's own on-disk format is not
//! promised stable across its versions, and ours must be able to change too, so every record
//! says which version wrote it, and a snapshot of an older version is read through a frozen
//! copy of that version's layout ([`super::legacy`]) and migrated.
//!
//! - Version 1: `UserState` as of the first release.
//! - Version 2: adds `email_verified`, the email and reset codes and a pending email change
//!   (version 1 users count as unverified).

use serde::Serialize;

use super::legacy::UserStateV1;
use super::StoreError;
use crate::domain::user::UserState;

pub const FORMAT_VERSION: u8 = 2;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(format!("encode: {e}")))?;
    Ok(out)
}

fn decode_exact<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, StoreError> {
    let (value, read) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(format!("decode: {e}")))?;
    if read != body.len() {
        return Err(StoreError::Corrupt("trailing bytes after snapshot".into()));
    }
    Ok(value)
}

/// A user's snapshot of any version this build knows, as the current `UserState`.
pub fn decode_user(bytes: &[u8]) -> Result<UserState, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => decode_exact(body),
        Some((1, body)) => decode_exact::<UserStateV1>(body).map(UserState::from),
        Some((v, _)) => Err(StoreError::Corrupt(format!(
            "unknown snapshot format version {v}"
        ))),
        None => Err(StoreError::Corrupt("empty snapshot".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credentials::Email;
    use crate::domain::time::Timestamp;
    use crate::domain::user::{NewUser, UserState};

    #[test]
    fn round_trips_a_user_with_a_version_byte() {
        let mut u = UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: None,
                phone: Some("+447700900123".into()),
                password_hash: "$argon2id$v=19$...".into(),
            },
            Timestamp(1_800_000_000),
        );
        u.revision = 42;
        let bytes = encode(&u).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_user(&bytes).unwrap(), u);
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        assert!(decode_user(&[]).is_err());
        assert!(decode_user(&[99, 1, 2]).is_err());
        assert!(decode_user(&[FORMAT_VERSION, 1, 2]).is_err());
    }

    #[test]
    fn a_version_1_snapshot_loads_as_an_unverified_user() {
        let mut u = UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: Some("Ada".into()),
                phone: Some("+447700900123".into()),
                password_hash: "$argon2id$v=19$...".into(),
            },
            Timestamp(1_800_000_000),
        );
        u.revision = 7;
        u.phone_verified = true;
        let v1 = UserStateV1::frozen_from(&u);
        let mut bytes = vec![1u8];
        bincode::serde::encode_into_std_write(&v1, &mut bytes, bincode::config::standard())
            .unwrap();
        let loaded = decode_user(&bytes).unwrap();
        assert_eq!(
            loaded, u,
            "every version 1 field kept, the new ones at their defaults"
        );
        assert!(!loaded.email_verified);
        assert_eq!(
            encode(&loaded).unwrap()[0],
            FORMAT_VERSION,
            "rewritten as version 2"
        );
    }
}
