//! Typed identifiers: lowercase UUIDv7 strings on the wire, 16 bytes in snapshots.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh time-ordered id (UUIDv7).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A user account.
    UserId
);
id_type!(
    /// A tenant (an organisation); each registration creates one.
    TenantId
);
id_type!(
    /// One login, continued by its refreshes; also the id of its refresh-token family.
    SessionId
);
id_type!(
    /// An API key (changes on every rotation).
    ApiKeyId
);
id_type!(
    /// A token's `jti`.
    TokenId
);
id_type!(
    /// An identity at an OpenID Connect provider linked to a user (ours; the provider's is `sub`).
    IdentityId
);
id_type!(
    /// A passkey registered to a user (ours; the credential id is the authenticator's).
    PasskeyId
);
id_type!(
    /// One WebAuthn ceremony (a registration or a login) waiting for its answer.
    ChallengeId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_lowercase_v7() {
        let id = UserId::generate();
        let s = id.to_string();
        assert_eq!(s, s.to_lowercase());
        assert_eq!(id.0.get_version_num(), 7);
        assert_eq!(s.parse::<UserId>().unwrap(), id);
    }
}
