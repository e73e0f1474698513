//! Snapshot encoding: one format-version byte, then bincode. sled's own on-disk format is not
//! promised stable across its versions, and ours must be able to change too, so every record
//! says which version wrote it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// Version 1: `UserState` as of the first release.
pub const FORMAT_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(format!("encode: {e}")))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            let (value, read) =
                bincode::serde::decode_from_slice(body, bincode::config::standard())
                    .map_err(|e| StoreError::Corrupt(format!("decode: {e}")))?;
            if read != body.len() {
                return Err(StoreError::Corrupt("trailing bytes after snapshot".into()));
            }
            Ok(value)
        }
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
        assert_eq!(decode::<UserState>(&bytes).unwrap(), u);
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        assert!(decode::<UserState>(&[]).is_err());
        assert!(decode::<UserState>(&[99, 1, 2]).is_err());
        assert!(decode::<UserState>(&[FORMAT_VERSION, 1, 2]).is_err());
    }
}
