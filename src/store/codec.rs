//! Snapshot encoding: one format-version byte, then bincode. sled's own on-disk format is not
//! promised stable across its versions, and ours must be able to change too, so every record
//! says which version wrote it, and a snapshot of an older version is read through a frozen
//! copy of that version's layout ([`super::legacy`]) and migrated.
//!
//! - Version 1: `UserState` as of the first release.
//! - Version 2: adds `email_verified`, the email and reset codes and a pending email change
//!   (version 1 users count as unverified).
//! - Version 3: sessions record their last use, login method, user agent and address; the user
//!   keeps a security history (older sessions read as unrecorded, the history starts empty).
//! - Version 4: the user's passkeys (none before), and a `Passkey` login method appended.
//! - Version 5: the user's identities at OpenID Connect providers (none before); an `Oidc`
//!   login method and the `identity_linked`/`identity_unlinked` events appended.
//!
//! A snapshot may be written without its history, the sled engine's way of not rewriting a
//! hundred events with every refresh: its version byte then has [`SPLIT_FLAG`] set
//! ([`encode_split`]), and the history is a record of its own ([`encode_history`]), written only
//! when it changed. Whole snapshots (PostgreSQL's rows, exports, and what [`encode`] writes)
//! carry their history.
//!
//! Pending entries (`domain::identities::Pending`) have a version byte of their own,
//! [`PENDING_VERSION`]: they live minutes, so an unknown version is just an entry not to use.

use serde::Serialize;

use super::legacy::{UserStateV1, UserStateV2, UserStateV3, UserStateV4};
use super::StoreError;
use crate::domain::backoff::AccountAttempts;
use crate::domain::events::History;
use crate::domain::identities::Pending;
use crate::domain::user::UserState;

pub const FORMAT_VERSION: u8 = 5;
/// Set in the version byte of a snapshot whose history is kept apart (see the module docs).
pub const SPLIT_FLAG: u8 = 0x80;
/// The version byte of a history record.
const HISTORY_VERSION: u8 = 1;

/// The version byte of a pending entry's encoding.
pub const PENDING_VERSION: u8 = 1;

/// A pending entry as the store keeps it.
pub fn encode_pending(entry: &Pending) -> Result<Vec<u8>, StoreError> {
    versioned(PENDING_VERSION, &[], entry)
}

/// A pending entry back; `None` for one this build did not write (another version, or junk).
pub fn decode_pending(bytes: &[u8]) -> Option<Pending> {
    match bytes.split_first() {
        Some((&PENDING_VERSION, body)) => decode_exact(body).ok(),
        _ => None,
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    versioned(FORMAT_VERSION, &[], value)
}

/// Every record's layout: its version byte, a fixed `header` of the record's own, then bincode.
fn versioned<T: Serialize>(version: u8, header: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(1 + header.len() + 64);
    out.push(version);
    out.extend_from_slice(header);
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

/// A user's snapshot without its history ([`SPLIT_FLAG`]); the history goes to
/// [`encode_history`]. Copying the state is cheap: its history's events are shared.
pub fn encode_split(state: &UserState) -> Result<Vec<u8>, StoreError> {
    let mut core = state.clone();
    core.history = History::default();
    let mut out = encode(&core)?;
    out[0] |= SPLIT_FLAG;
    Ok(out)
}

/// A history record: its version byte, the count of events ever recorded (big-endian, read by
/// [`history_recorded`] without decoding the rest), then the history.
pub fn encode_history(history: &History) -> Result<Vec<u8>, StoreError> {
    versioned(HISTORY_VERSION, &history.recorded().to_be_bytes(), history)
}

/// The layout version of an attempt-counter record (independent of the snapshots').
const ATTEMPTS_VERSION: u8 = 1;

/// A user's attempt counters as a shared engine keeps them.
pub fn encode_attempts(a: &AccountAttempts) -> Result<Vec<u8>, StoreError> {
    versioned(ATTEMPTS_VERSION, &[], a)
}

pub fn decode_attempts(bytes: &[u8]) -> Result<AccountAttempts, StoreError> {
    match bytes.split_first() {
        Some((&ATTEMPTS_VERSION, body)) => decode_exact(body),
        _ => Err(StoreError::Corrupt(
            "unknown attempt counters record".into(),
        )),
    }
}

/// The count of events ever recorded of a history record.
pub fn history_recorded(bytes: &[u8]) -> Option<u64> {
    match bytes.split_first() {
        Some((&HISTORY_VERSION, rest)) => rest.get(..8)?.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

pub fn decode_history(bytes: &[u8]) -> Result<History, StoreError> {
    match bytes.split_first() {
        Some((&HISTORY_VERSION, rest)) if rest.len() >= 8 => decode_exact(&rest[8..]),
        _ => Err(StoreError::Corrupt("unknown history record".into())),
    }
}

/// Whether a snapshot keeps its history apart ([`SPLIT_FLAG`]), so that its reader must add it.
pub fn is_split(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|v| v & SPLIT_FLAG != 0)
}

/// A user's snapshot of any version this build knows, as the current `UserState` (of one
/// written without its history, with an empty history: see [`is_split`]).
pub fn decode_user(bytes: &[u8]) -> Result<UserState, StoreError> {
    let version = bytes.first().map(|v| v & !SPLIT_FLAG);
    match version.zip(bytes.get(1..)) {
        Some((FORMAT_VERSION, body)) => decode_exact(body),
        Some((4, body)) => decode_exact::<UserStateV4>(body).map(UserState::from),
        Some((3, body)) => decode_exact::<UserStateV3>(body)
            .map(UserStateV4::from)
            .map(UserState::from),
        Some((2, body)) => decode_exact::<UserStateV2>(body)
            .map(UserStateV3::from)
            .map(UserStateV4::from)
            .map(UserState::from),
        Some((1, body)) => decode_exact::<UserStateV1>(body)
            .map(UserStateV2::from)
            .map(UserStateV3::from)
            .map(UserStateV4::from)
            .map(UserState::from),
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
            "rewritten as the current version"
        );
    }

    #[test]
    fn older_sessions_load_as_unrecorded_and_the_history_starts_empty() {
        use crate::domain::events::Origin;
        use crate::domain::secrets::ServerKey;
        use crate::domain::sessions::{LoginMethod, SessionPolicy};
        let now = Timestamp(1_800_000_000);
        let mut u = UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: None,
                phone: None,
                password_hash: "$argon2id$v=19$...".into(),
            },
            now,
        );
        let policy = SessionPolicy {
            refresh_ttl: 1_000,
            session_max: 10_000,
            rotation_enabled: true,
            reuse_grace: 0,
            max_sessions: 100,
        };
        let origin = Origin::new("192.0.2.1".parse().ok(), Some("curl/8"), None);
        let key = ServerKey::from_bytes([1; 32]);
        let (sid, _, _) = u
            .open_session(&key, &policy, (LoginMethod::SecondFactor, &origin), now)
            .unwrap();
        u.email_verified = true;
        for (version, bytes) in [
            (1u8, {
                let mut b = vec![1u8];
                let v1 = UserStateV1::frozen_from(&u);
                bincode::serde::encode_into_std_write(&v1, &mut b, bincode::config::standard())
                    .unwrap();
                b
            }),
            (2u8, {
                let mut b = vec![2u8];
                let v2 = UserStateV2::frozen_from(&u);
                bincode::serde::encode_into_std_write(&v2, &mut b, bincode::config::standard())
                    .unwrap();
                b
            }),
        ] {
            let loaded = decode_user(&bytes).unwrap();
            let s = loaded.session(sid, now).expect("the session survives");
            assert_eq!(s.method, LoginMethod::Unrecorded, "version {version}");
            assert_eq!((s.ip, s.user_agent.as_deref()), (None, None));
            assert_eq!(s.last_used_at, s.rotated_at);
            assert_eq!(s.current_hash, u.sessions[0].current_hash);
            assert!(loaded.history.is_empty());
            assert_eq!(loaded.email_verified, version == 2);
        }
        let current = decode_user(&encode(&u).unwrap()).unwrap();
        assert_eq!(current, u);
        assert_eq!(current.history.len(), 1, "the login was recorded");
    }

    #[test]
    fn a_version_3_snapshot_loads_with_no_passkeys_and_keeps_the_rest() {
        use crate::domain::events::Origin;
        use crate::domain::secrets::ServerKey;
        use crate::domain::sessions::{LoginMethod, SessionPolicy};
        let now = Timestamp(1_800_000_000);
        let mut u = UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: Some("Ada".into()),
                phone: None,
                password_hash: "$argon2id$v=19$...".into(),
            },
            now,
        );
        let policy = SessionPolicy {
            refresh_ttl: 1_000,
            session_max: 10_000,
            rotation_enabled: true,
            reuse_grace: 0,
            max_sessions: 100,
        };
        let origin = Origin::new("192.0.2.1".parse().ok(), Some("curl/8"), None);
        let key = ServerKey::from_bytes([1; 32]);
        for method in [LoginMethod::Password, LoginMethod::SecondFactor] {
            u.open_session(&key, &policy, (method, &origin), now)
                .unwrap();
        }
        u.email_verified = true;
        u.mfa.enabled = true;
        u.revision = 9;
        let mut bytes = vec![3u8];
        let v3 = UserStateV3::frozen_from(&u);
        bincode::serde::encode_into_std_write(&v3, &mut bytes, bincode::config::standard())
            .unwrap();
        let loaded = decode_user(&bytes).unwrap();
        assert_eq!(loaded, u, "every version 3 field kept");
        assert!(loaded.passkeys.is_empty());
        let methods: Vec<LoginMethod> = loaded.sessions.iter().map(|s| s.method).collect();
        assert_eq!(methods, [LoginMethod::Password, LoginMethod::SecondFactor]);
        assert_eq!(
            encode(&loaded).unwrap()[0],
            FORMAT_VERSION,
            "rewritten as the current version"
        );
    }

    #[test]
    fn a_version_4_snapshot_loads_with_no_identities_and_keeps_the_rest() {
        let w = crate::domain::user::soft::webauthn();
        let now = Timestamp(1_800_000_000);
        let mut u = UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: Some("Ada".into()),
                phone: None,
                password_hash: "$argon2id$v=19$...".into(),
            },
            now,
        );
        crate::domain::user::soft::register(&mut u, &w, "Laptop", now);
        u.email_verified = true;
        u.revision = 11;
        let mut bytes = vec![4u8];
        let v4 = UserStateV4::frozen_from(&u);
        bincode::serde::encode_into_std_write(&v4, &mut bytes, bincode::config::standard())
            .unwrap();
        let loaded = decode_user(&bytes).unwrap();
        assert_eq!(loaded, u, "every version 4 field kept");
        assert!(loaded.identities.is_empty());
        assert!(loaded.has_password());
        assert_eq!(encode(&loaded).unwrap()[0], 5, "rewritten as version 5");
    }

    #[test]
    fn a_user_with_an_identity_round_trips_and_pending_entries_too() {
        use crate::domain::identities::{Flow, Pending, ProviderClaims};
        let claims = ProviderClaims {
            provider: "google".into(),
            subject: "1234".into(),
            email: Some("ada@example.com".into()),
            email_verified: true,
            name: None,
        };
        let u = UserState::from_identity(
            &claims,
            Email::parse("ada@example.com").unwrap(),
            &crate::domain::events::Origin::default(),
            Timestamp(1_800_000_000),
        );
        assert_eq!(decode_user(&encode(&u).unwrap()).unwrap(), u);
        let flow = Pending::Flow(Flow {
            provider: "google".into(),
            redirect_to: "https://app.example.com/after".into(),
            link: None,
            binding: Some([7; 32]),
        });
        let code = Pending::LoginCode {
            user: u.id,
            provider: "google".into(),
        };
        for entry in [flow, code] {
            let bytes = encode_pending(&entry).unwrap();
            assert_eq!(bytes[0], PENDING_VERSION);
            assert_eq!(decode_pending(&bytes), Some(entry));
        }
        assert_eq!(decode_pending(&[]), None);
        assert_eq!(decode_pending(&[PENDING_VERSION + 1, 0]), None);
        assert_eq!(decode_pending(&[PENDING_VERSION, 0xff, 0xff]), None);
    }

    #[test]
    fn a_user_with_a_passkey_round_trips() {
        let w = crate::domain::user::soft::webauthn();
        let mut u = UserState::register(
            NewUser {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: None,
                phone: None,
                password_hash: "$argon2id$v=19$...".into(),
            },
            Timestamp(1_800_000_000),
        );
        crate::domain::user::soft::register(&mut u, &w, "Laptop", Timestamp(1_800_000_000));
        let loaded = decode_user(&encode(&u).unwrap()).unwrap();
        assert_eq!(loaded, u);
        assert!(
            loaded.passkeys[0].passkey().is_some(),
            "webauthn-rs reads it back"
        );
    }
}
