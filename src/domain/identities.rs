//! Identities at OpenID Connect providers ("Sign in with Google"): an account's linked
//! identities as they are kept, the key of the global index (provider, `sub`) → user, what a
//! provider said about the user once openidconnect had verified it, and the single-use entries a
//! sign-in keeps between its requests.
//!
//! ```text
//!   start(provider, redirect_to) ──▶ FLOW(state digest, provider, redirect_to, link?) in the
//!        store, 10 minutes; PKCE verifier and nonce derived from the state with a server key,
//!        so neither is stored
//!   callback(code, state): the flow is taken (used once, right or wrong) ──▶ code exchanged,
//!        ID token verified by openidconnect ──▶ the identity names a user, or links one by a
//!        verified email, or creates one ──▶ LOGIN CODE(digest, user) in the store, 60 seconds
//!   exchange(login_code): the code is taken ──▶ a session, or the MFA-pending answer
//! ```
//!
//! Every pending entry lives in the store (not in one node's memory), keyed by a digest of its
//! secret, so that a start, its callback and the exchange may each reach another node.

use serde::{Deserialize, Serialize};

use super::ids::{IdentityId, SessionId, UserId};
use super::time::Timestamp;

/// The most identities one account may have linked.
pub const MAX_IDENTITIES: usize = 8;

/// OpenID Connect Core 1.0 §2: `sub` is at most 255 ASCII characters; a longer one is refused.
pub const SUBJECT_MAX_LEN: usize = 255;

/// How long a begun sign-in waits for its callback (`state` and `nonce`): the contract's 10
/// minutes.
pub const FLOW_TTL: u64 = 600;

/// How long a one-time login code waits for its exchange.
pub const LOGIN_CODE_TTL: u64 = 60;

/// An identity at a provider, linked to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: IdentityId,
    /// The provider's name in the configuration (`[oidc.providers.<name>]`).
    pub provider: String,
    /// The provider's `sub`: stable and unique at that provider, never reassigned.
    pub subject: String,
    /// The email the provider gave at the last sign-in, to help the owner tell identities apart.
    pub email: Option<String>,
    pub created_at: Timestamp,
    /// The last sign-in through it; `None` until then (an identity linked from a session).
    pub last_used_at: Option<Timestamp>,
}

impl Identity {
    /// The key of the global index.
    pub fn index_key(&self) -> Vec<u8> {
        index_key(&self.provider, &self.subject)
    }
}

/// The key of the identity index: the provider's name, length-prefixed so that no pair of
/// (provider, subject) can spell another's key, then the subject.
pub fn index_key(provider: &str, subject: &str) -> Vec<u8> {
    let p = provider.as_bytes();
    let mut key = Vec::with_capacity(2 + p.len() + subject.len());
    key.extend_from_slice(&(p.len() as u16).to_be_bytes());
    key.extend_from_slice(p);
    key.extend_from_slice(subject.as_bytes());
    key
}

/// What a provider said about the user, from an ID token openidconnect verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderClaims {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    /// Only `email_verified: true` counts; absent is false.
    pub email_verified: bool,
    pub name: Option<String>,
}

/// An entry kept through the store between two requests of a sign-in, used once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pending {
    /// A sign-in (or link) begun, waiting for the provider's callback.
    Flow(Flow),
    /// A sign-in finished, waiting for the frontend to exchange its login code.
    LoginCode { user: UserId, provider: String },
}

/// A begun sign-in: where it goes back to, and who it links to (a link begun from a session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub provider: String,
    /// The frontend URL the callback redirects to, checked against the allowlist at the start.
    pub redirect_to: String,
    /// For a link: the user and the session that asked for it.
    pub link: Option<(UserId, SessionId)>,
    /// For a sign-in: the SHA-256 of the value of the cookie the start set in the browser,
    /// which the callback must carry, so that a callback URL made for one browser signs no other
    /// into the account it names (login CSRF). A link is bound to its session instead.
    pub binding: Option<[u8; 32]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_cannot_collide_across_the_provider_boundary() {
        assert_ne!(index_key("ab", "c"), index_key("a", "bc"));
        assert_eq!(index_key("google", "123"), index_key("google", "123"));
        assert_ne!(index_key("google", "123"), index_key("google", "1234"));
        let id = Identity {
            id: IdentityId::generate(),
            provider: "google".into(),
            subject: "123".into(),
            email: None,
            created_at: Timestamp(0),
            last_used_at: None,
        };
        assert_eq!(id.index_key(), index_key("google", "123"));
    }
}
