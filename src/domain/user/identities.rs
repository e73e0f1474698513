//! Identities of one user at OpenID Connect providers: the account a first sign-in creates,
//! linking one (by a verified email at sign-in, or from a session), signing in with one, and
//! unlinking one while another way to log in remains. openidconnect verified the provider's
//! word before any of these rules sees it.

use super::{NewUser, Status, UserState};
use crate::domain::credentials::{parse_full_name, Email};
use crate::domain::error::DomainError;
use crate::domain::events::{EventKind, Origin};
use crate::domain::identities::{Identity, ProviderClaims, MAX_IDENTITIES};
use crate::domain::ids::{IdentityId, SessionId};
use crate::domain::time::Timestamp;

/// How a link is asked for, which decides what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkBy {
    /// A first sign-in whose email names this account: both sides must have verified it.
    VerifiedEmail,
    /// The user, signed in with `SessionId`, asked for it: that session must still be live.
    Session(SessionId),
}

fn new_identity(claims: &ProviderClaims, now: Timestamp, used: bool) -> Identity {
    Identity {
        id: IdentityId::generate(),
        provider: claims.provider.clone(),
        subject: claims.subject.clone(),
        email: claims.email.clone(),
        created_at: now,
        last_used_at: used.then_some(now),
    }
}

impl UserState {
    /// A new owner in a new tenant for a first sign-in: no password (until one is set through
    /// `password/forgot`), the email verified if the provider said so, the identity linked.
    /// `email` is the provider's, parsed.
    pub fn from_identity(
        claims: &ProviderClaims,
        email: Email,
        origin: &Origin,
        now: Timestamp,
    ) -> Self {
        // A provider's name that would not pass registration is left out, not refused.
        let full_name = claims
            .name
            .as_deref()
            .and_then(|n| parse_full_name(n).ok())
            .filter(|n| !n.trim().is_empty());
        let mut user = Self::register(
            NewUser {
                email,
                full_name,
                phone: None,
                password_hash: String::new(),
            },
            now,
        );
        user.email_verified = claims.email_verified;
        user.identities.push(new_identity(claims, now, true));
        user.record(EventKind::IdentityLinked, origin, None, now);
        user
    }

    /// Whether the account has a password (users created by a provider have none).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }

    pub fn identity(&self, id: IdentityId) -> Option<&Identity> {
        self.identities.iter().find(|i| i.id == id)
    }

    fn identity_at(&self, provider: &str, subject: &str) -> Option<usize> {
        self.identities
            .iter()
            .position(|i| i.provider == provider && i.subject == subject)
    }

    /// Links the identity `claims` names, as `by` allows. `Some` is the new identity (whose
    /// index entry the caller claims in the same write); `None` means it was linked already.
    pub fn link_identity(
        &mut self,
        claims: &ProviderClaims,
        by: LinkBy,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<Option<Identity>, DomainError> {
        if self.status != Status::Active {
            return Err(DomainError::AccountDeactivated);
        }
        match by {
            LinkBy::VerifiedEmail => {
                let same = claims
                    .email
                    .as_deref()
                    .and_then(|e| Email::parse(e).ok())
                    .is_some_and(|e| e.key() == self.email_key);
                if !(same && claims.email_verified && self.email_verified) {
                    return Err(DomainError::AccountExists);
                }
            }
            LinkBy::Session(sid) => {
                if self.session(sid, now).is_none() {
                    return Err(DomainError::SessionRevoked);
                }
            }
        }
        let signs_in = by == LinkBy::VerifiedEmail;
        if let Some(i) = self.identity_at(&claims.provider, &claims.subject) {
            if signs_in {
                self.identities[i].last_used_at = Some(now);
            }
            return Ok(None);
        }
        if self.identities.len() >= MAX_IDENTITIES {
            return Err(DomainError::TooManyIdentities);
        }
        let identity = new_identity(claims, now, signs_in);
        self.identities.push(identity.clone());
        self.record(EventKind::IdentityLinked, origin, None, now);
        Ok(Some(identity))
    }

    /// A sign-in with a linked identity: refused for a deactivated account; notes the use and
    /// the provider's current email. The session opens at the exchange of the login code.
    pub fn identity_sign_in(
        &mut self,
        claims: &ProviderClaims,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if self.status != Status::Active {
            return Err(DomainError::AccountDeactivated);
        }
        let i = self
            .identity_at(&claims.provider, &claims.subject)
            .ok_or(DomainError::IdentityNotFound)?;
        let identity = &mut self.identities[i];
        identity.last_used_at = Some(now);
        if claims.email.is_some() {
            identity.email.clone_from(&claims.email);
        }
        Ok(())
    }

    /// Unlinks an identity, unless it is the last way to log in (no password, no passkey, no
    /// other identity); returns its index key, released in the same write.
    pub fn unlink_identity(
        &mut self,
        id: IdentityId,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<Vec<u8>, DomainError> {
        let i = self
            .identities
            .iter()
            .position(|x| x.id == id)
            .ok_or(DomainError::IdentityNotFound)?;
        let others = self.has_password() || !self.passkeys.is_empty() || self.identities.len() > 1;
        if !others {
            return Err(DomainError::LastLoginMethod);
        }
        let gone = self.identities.remove(i);
        self.record(EventKind::IdentityUnlinked, origin, None, now);
        Ok(gone.index_key())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::domain::secrets::ServerKey;

    fn claims(sub: &str, email: &str, verified: bool) -> ProviderClaims {
        ProviderClaims {
            provider: "google".into(),
            subject: sub.into(),
            email: Some(email.into()),
            email_verified: verified,
            name: Some("Ada Lovelace".into()),
        }
    }

    #[test]
    fn a_first_sign_in_makes_a_user_without_a_password() {
        let c = claims("1", "Ada@Example.com", true);
        let u = UserState::from_identity(
            &c,
            Email::parse("Ada@Example.com").unwrap(),
            &Origin::default(),
            T0,
        );
        assert!(!u.has_password());
        assert!(u.email_verified);
        assert_eq!(u.email_key, "ada@example.com");
        assert_eq!(u.full_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(u.identities.len(), 1);
        assert_eq!(u.identities[0].last_used_at, Some(T0));
        assert_eq!(
            u.history.newest(1).next().unwrap().kind,
            EventKind::IdentityLinked
        );
        let unverified = UserState::from_identity(
            &ProviderClaims {
                name: Some("bad\u{7}name".into()),
                ..claims("2", "bob@example.com", false)
            },
            Email::parse("bob@example.com").unwrap(),
            &Origin::default(),
            T0,
        );
        assert!(!unverified.email_verified);
        assert_eq!(unverified.full_name, None);
    }

    #[test]
    fn an_email_links_only_when_both_sides_verified_it() {
        let mut u = user();
        let c = claims("1", "ada@example.com", true);
        let o = Origin::default();
        assert_eq!(
            u.link_identity(&c, LinkBy::VerifiedEmail, &o, T0),
            Err(DomainError::AccountExists),
            "the local email is unverified"
        );
        u.email_verified = true;
        let unverified = claims("1", "ada@example.com", false);
        assert_eq!(
            u.link_identity(&unverified, LinkBy::VerifiedEmail, &o, T0),
            Err(DomainError::AccountExists),
            "the provider did not verify it"
        );
        let other = claims("1", "eve@example.com", true);
        assert_eq!(
            u.link_identity(&other, LinkBy::VerifiedEmail, &o, T0),
            Err(DomainError::AccountExists)
        );
        let linked = u
            .link_identity(&c, LinkBy::VerifiedEmail, &o, T0)
            .unwrap()
            .unwrap();
        assert_eq!(linked.subject, "1");
        assert_eq!(
            u.link_identity(&c, LinkBy::VerifiedEmail, &o, T0.plus(5)),
            Ok(None),
            "linked already"
        );
        assert_eq!(u.identities[0].last_used_at, Some(T0.plus(5)));
        u.status = Status::Deactivated;
        assert_eq!(
            u.link_identity(
                &claims("2", "ada@example.com", true),
                LinkBy::VerifiedEmail,
                &o,
                T0
            ),
            Err(DomainError::AccountDeactivated)
        );
    }

    #[test]
    fn a_link_from_a_session_needs_it_live_and_is_bounded() {
        let mut u = user();
        let o = Origin::default();
        let key = ServerKey::from_bytes([1; 32]);
        let (sid, _, _) = u.open_session(&key, &policy(), LOGIN, T0).unwrap();
        let by = LinkBy::Session(sid);
        for i in 0..MAX_IDENTITIES {
            let c = claims(&i.to_string(), "someone@else.example", false);
            assert!(u.link_identity(&c, by, &o, T0).unwrap().is_some());
        }
        let c = claims("more", "x@example.com", false);
        assert_eq!(
            u.link_identity(&c, by, &o, T0),
            Err(DomainError::TooManyIdentities)
        );
        assert_eq!(u.identities[0].last_used_at, None, "not a sign-in");
        u.revoke_session(sid);
        assert_eq!(
            u.link_identity(&claims("0", "x@example.com", false), by, &o, T0),
            Err(DomainError::SessionRevoked)
        );
    }

    #[test]
    fn the_last_way_to_log_in_cannot_be_unlinked() {
        let c = claims("1", "ada@example.com", true);
        let mut u = UserState::from_identity(
            &c,
            Email::parse("ada@example.com").unwrap(),
            &Origin::default(),
            T0,
        );
        let first = u.identities[0].id;
        let o = Origin::default();
        assert_eq!(
            u.unlink_identity(first, &o, T0),
            Err(DomainError::LastLoginMethod)
        );
        u.link_identity(
            &claims("2", "ada@example.com", true),
            LinkBy::VerifiedEmail,
            &o,
            T0,
        )
        .unwrap();
        let key = u.unlink_identity(first, &o, T0).unwrap();
        assert_eq!(key, crate::domain::identities::index_key("google", "1"));
        assert_eq!(
            u.history.newest(1).next().unwrap().kind,
            EventKind::IdentityUnlinked
        );
        let second = u.identities[0].id;
        assert_eq!(
            u.unlink_identity(second, &o, T0),
            Err(DomainError::LastLoginMethod)
        );
        u.password_hash = "$argon2id$...".into();
        u.unlink_identity(second, &o, T0).unwrap();
        assert_eq!(
            u.unlink_identity(second, &o, T0),
            Err(DomainError::IdentityNotFound)
        );
    }

    #[test]
    fn a_sign_in_notes_its_use_and_refuses_a_deactivated_account() {
        let c = claims("1", "ada@example.com", true);
        let mut u = UserState::from_identity(
            &c,
            Email::parse("ada@example.com").unwrap(),
            &Origin::default(),
            T0,
        );
        let moved = claims("1", "ada@new.example", true);
        u.identity_sign_in(&moved, T0.plus(9)).unwrap();
        assert_eq!(u.identities[0].last_used_at, Some(T0.plus(9)));
        assert_eq!(u.identities[0].email.as_deref(), Some("ada@new.example"));
        assert_eq!(u.email_key, "ada@example.com", "the account's email stays");
        assert_eq!(
            u.identity_sign_in(&claims("2", "x@example.com", true), T0),
            Err(DomainError::IdentityNotFound)
        );
        u.status = Status::Deactivated;
        assert_eq!(
            u.identity_sign_in(&c, T0),
            Err(DomainError::AccountDeactivated)
        );
    }
}
