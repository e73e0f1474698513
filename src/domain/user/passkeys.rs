//! Passkeys of one user: registering one, naming and removing them, and using one to log in
//! (alone, or as the second factor after a password). webauthn-rs verifies; these rules decide
//! what its verdict changes. A passkey requires user verification, so it is two factors alone.

use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Uuid, Webauthn, WebauthnError,
};

use super::{Status, UserState};
use crate::domain::error::DomainError;
use crate::domain::events::{EventKind, Origin};
use crate::domain::ids::{PasskeyId, SessionId, TokenId};
use crate::domain::passkeys::{StoredPasskey, MAX_PASSKEYS};
use crate::domain::secrets::{RefreshToken, ServerKey};
use crate::domain::sessions::{LoginMethod, SessionPolicy};
use crate::domain::time::Timestamp;

/// What a registration tells the authenticator about the user.
#[derive(Debug, Clone)]
pub struct PasskeyUser {
    /// The user handle: the user's id, which a discoverable passkey gives back at a usernameless
    /// login. Never personal data.
    pub handle: Uuid,
    /// The account's name in the authenticator's list: the email.
    pub name: String,
    pub display_name: String,
    /// The user's credentials, which the authenticator must not register again.
    pub exclude: Vec<Vec<u8>>,
}

/// How a login ceremony expects its credential.
#[derive(Debug)]
pub enum Ceremony {
    /// The user was named (an email, or a password before the second factor): the options
    /// listed the user's passkeys.
    Named(PasskeyAuthentication),
    /// Usernameless: the authenticator chose the credential and names the user by its handle.
    Discoverable(DiscoverableAuthentication),
}

/// webauthn-rs's refusal of an assertion, in our words.
fn refused(e: &WebauthnError, passkey: PasskeyId) -> DomainError {
    match e {
        WebauthnError::CredentialPossibleCompromise => DomainError::PasskeyRefused {
            cloned: Some(passkey),
        },
        _ => DomainError::PasskeyRefused { cloned: None },
    }
}

impl UserState {
    pub fn passkey(&self, id: PasskeyId) -> Option<&StoredPasskey> {
        self.passkeys.iter().find(|p| p.id == id)
    }

    /// The credentials webauthn-rs lists in a login for this user.
    pub fn passkey_credentials(&self) -> Vec<Passkey> {
        self.passkeys
            .iter()
            .filter_map(StoredPasskey::passkey)
            .collect()
    }

    /// Who a new passkey is for; refused once the account has [`MAX_PASSKEYS`].
    pub fn passkey_user(&self) -> Result<PasskeyUser, DomainError> {
        if self.passkeys.len() >= MAX_PASSKEYS {
            return Err(DomainError::TooManyPasskeys);
        }
        let display_name = match &self.full_name {
            Some(n) if !n.trim().is_empty() => n.clone(),
            _ => self.email.clone(),
        };
        Ok(PasskeyUser {
            handle: self.id.0,
            name: self.email.clone(),
            display_name,
            exclude: self
                .passkeys
                .iter()
                .map(|p| p.credential_id.clone())
                .collect(),
        })
    }

    /// Verifies a registration against its ceremony and keeps the new passkey as `name`. The
    /// caller claims its credential id in the global index in the same write.
    pub fn add_passkey(
        &mut self,
        webauthn: &Webauthn,
        ceremony: &PasskeyRegistration,
        credential: &RegisterPublicKeyCredential,
        name: String,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<StoredPasskey, DomainError> {
        if self.passkeys.len() >= MAX_PASSKEYS {
            return Err(DomainError::TooManyPasskeys);
        }
        let passkey = webauthn
            .finish_passkey_registration(credential, ceremony)
            .map_err(|_| DomainError::InvalidPasskey)?;
        if self
            .passkeys
            .iter()
            .any(|p| p.credential_id == passkey.cred_id().as_slice())
        {
            return Err(DomainError::PasskeyExists);
        }
        let stored = StoredPasskey::new(&passkey, name, now)?;
        self.passkeys.push(stored.clone());
        self.record(EventKind::PasskeyAdded, origin, None, now);
        Ok(stored)
    }

    pub fn rename_passkey(
        &mut self,
        id: PasskeyId,
        name: String,
    ) -> Result<StoredPasskey, DomainError> {
        let p = self
            .passkeys
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or(DomainError::PasskeyNotFound)?;
        p.name = name;
        Ok(p.clone())
    }

    /// Removes a passkey; returns its credential id, whose index entry goes in the same write.
    /// The last second factor removed turns `mfa_enabled` off.
    pub fn remove_passkey(
        &mut self,
        id: PasskeyId,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<Vec<u8>, DomainError> {
        let i = self
            .passkeys
            .iter()
            .position(|p| p.id == id)
            .ok_or(DomainError::PasskeyNotFound)?;
        let gone = self.passkeys.remove(i);
        self.record(EventKind::PasskeyRemoved, origin, None, now);
        Ok(gone.credential_id)
    }

    /// An operator's reset of every second factor (TOTP, its recovery codes and challenges,
    /// and every passkey); returns the credential ids whose index entries go in the same write.
    pub fn reset_second_factors(&mut self) -> Vec<Vec<u8>> {
        self.mfa = crate::domain::mfa::MfaState::default();
        self.passkeys.drain(..).map(|p| p.credential_id).collect()
    }

    /// Verifies an assertion made for `ceremony` with one of this user's passkeys. On success
    /// the stored credential follows the authenticator (signature counter, backup state) and
    /// the passkey's last use is `now`. Every failure is `PasskeyRefused` (with the passkey, if
    /// its counter went back: a cloned authenticator).
    pub fn use_passkey(
        &mut self,
        webauthn: &Webauthn,
        ceremony: Ceremony,
        credential: &PublicKeyCredential,
        now: Timestamp,
    ) -> Result<PasskeyId, DomainError> {
        let unknown = DomainError::PasskeyRefused { cloned: None };
        let i = self
            .passkeys
            .iter()
            .position(|p| p.credential_id == credential.get_credential_id())
            .ok_or(unknown.clone())?;
        let id = self.passkeys[i].id;
        let mut passkey = self.passkeys[i].passkey().ok_or(unknown.clone())?;
        let result = match ceremony {
            Ceremony::Named(state) => webauthn.finish_passkey_authentication(credential, &state),
            Ceremony::Discoverable(state) => {
                // The authenticator names the user; it must name this one.
                let named = webauthn
                    .identify_discoverable_authentication(credential)
                    .map(|(handle, _)| handle == self.id.0);
                if !matches!(named, Ok(true)) {
                    return Err(unknown);
                }
                webauthn.finish_discoverable_authentication_v2(credential, state, &passkey)
            }
        }
        .map_err(|e| refused(&e, id))?;
        // webauthn-rs compares the counter with the credential as it was when the ceremony
        // began; another login may have moved it since. A counter that is not above the highest
        // one accepted means two copies of the key are signing: refused, as webauthn-rs would.
        let stored = &mut self.passkeys[i];
        let counter = result.counter();
        if (counter > 0 || stored.sign_count > 0) && counter <= stored.sign_count {
            return Err(DomainError::PasskeyRefused { cloned: Some(id) });
        }
        stored.sign_count = counter;
        if passkey.update_credential(&result) == Some(true) {
            stored.store(&passkey)?;
        }
        stored.last_used_at = Some(now);
        Ok(id)
    }

    /// A login with a passkey alone: verified first, so that a deactivated account answers so
    /// only to the holder of its passkey; then a session opens, recorded as a passkey login. A
    /// refused assertion is recorded as a failed login from `origin`.
    pub fn passkey_login(
        &mut self,
        webauthn: &Webauthn,
        (ceremony, credential): (Ceremony, &PublicKeyCredential),
        (key, policy): (&ServerKey, &SessionPolicy),
        origin: &Origin,
        now: Timestamp,
    ) -> Result<(SessionId, RefreshToken, Timestamp), DomainError> {
        if let Err(e) = self.use_passkey(webauthn, ceremony, credential, now) {
            self.record(EventKind::LoginFailed, origin, None, now);
            return Err(e);
        }
        if self.status != Status::Active {
            return Err(DomainError::AccountDeactivated);
        }
        self.open_session(key, policy, (LoginMethod::Passkey, origin), now)
    }

    /// Answers the login challenge `jti` (opened by a right password) with a passkey. A refused
    /// assertion spends one of the challenge's attempts, as a wrong code does.
    pub fn mfa_answer_passkey(
        &mut self,
        jti: TokenId,
        webauthn: &Webauthn,
        (state, credential): (PasskeyAuthentication, &PublicKeyCredential),
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !self.mfa_enabled() || !self.mfa.challenge_open(jti, now) {
            return Err(DomainError::InvalidToken);
        }
        let used = self.use_passkey(webauthn, Ceremony::Named(state), credential, now);
        let settled = self.mfa.settle_challenge(jti, used.is_ok());
        match used {
            Ok(_) => settled,
            Err(e) => Err(e),
        }
    }

    /// Whether a second factor by passkey can be asked: an open challenge `jti` and a passkey.
    pub fn mfa_passkey_challenge(&self, jti: TokenId, now: Timestamp) -> Result<(), DomainError> {
        if !self.mfa.challenge_open(jti, now) {
            return Err(DomainError::InvalidToken);
        }
        if self.passkeys.is_empty() {
            return Err(DomainError::NoPasskey);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod soft {
    //! A software authenticator (webauthn-authenticator-rs's `SoftPasskey`) and a relying
    //! party, to make real registrations and assertions in tests.

    use webauthn_authenticator_rs::prelude::WebauthnAuthenticator;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_rs::prelude::{PublicKeyCredential, RequestChallengeResponse, Url, Webauthn};

    use super::*;
    use crate::domain::passkeys::RelyingParty;

    pub(crate) fn webauthn() -> Webauthn {
        RelyingParty {
            id: "localhost",
            name: "BlitzPulse",
            origins: &["http://localhost:8080".into()],
            challenge_ttl: 300,
        }
        .build()
        .unwrap()
    }

    pub(crate) fn origin() -> Url {
        Url::parse("http://localhost:8080").unwrap()
    }

    /// Registers a new soft passkey to `u` as `name`; returns the authenticator.
    pub(crate) fn register(
        u: &mut UserState,
        w: &Webauthn,
        name: &str,
        now: Timestamp,
    ) -> SoftPasskey {
        let mut soft = SoftPasskey::new(true);
        let who = u.passkey_user().unwrap();
        let (ccr, state) = w
            .start_passkey_registration(who.handle, &who.name, &who.display_name, None)
            .unwrap();
        let credential = soft.do_registration(origin(), ccr).unwrap();
        u.add_passkey(w, &state, &credential, name.into(), &Origin::default(), now)
            .unwrap();
        soft
    }

    /// A named login ceremony for `u` and its answer by `soft`.
    pub(crate) fn assert(
        u: &UserState,
        w: &Webauthn,
        soft: &mut SoftPasskey,
    ) -> (PasskeyAuthentication, PublicKeyCredential) {
        let (rcr, state): (RequestChallengeResponse, _) = w
            .start_passkey_authentication(&u.passkey_credentials())
            .unwrap();
        (state, soft.do_authentication(origin(), rcr).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::soft::*;
    use super::*;

    fn key() -> ServerKey {
        ServerKey::from_bytes([1; 32])
    }

    #[test]
    fn a_passkey_is_a_second_factor_and_the_last_one_gone_turns_mfa_off() {
        let w = webauthn();
        let mut u = user();
        assert!(!u.mfa_enabled());
        register(&mut u, &w, "Laptop", T0);
        assert!(u.mfa_enabled());
        assert_eq!(u.passkeys[0].name, "Laptop");
        assert_eq!(u.passkeys[0].last_used_at, None);
        let kinds: Vec<EventKind> = u.history.newest(10).map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::PasskeyAdded]);
        let id = u.passkeys[0].id;
        let renamed = u.rename_passkey(id, "Work laptop".into()).unwrap();
        assert_eq!(renamed.name, "Work laptop");
        let gone = u.remove_passkey(id, &Origin::default(), T0).unwrap();
        assert_eq!(gone, renamed.credential_id);
        assert!(!u.mfa_enabled());
        assert_eq!(
            u.remove_passkey(id, &Origin::default(), T0),
            Err(DomainError::PasskeyNotFound)
        );
        assert_eq!(
            u.rename_passkey(id, "x".into()),
            Err(DomainError::PasskeyNotFound)
        );
    }

    #[test]
    fn the_same_credential_is_not_registered_twice_and_the_count_is_bounded() {
        let w = webauthn();
        let mut u = user();
        let mut soft = register(&mut u, &w, "a", T0);
        // A second registration of the same authenticator credential: replay its response.
        let who = u.passkey_user().unwrap();
        assert_eq!(who.exclude, [u.passkeys[0].credential_id.clone()]);
        let (ccr, state) = w
            .start_passkey_registration(who.handle, &who.name, &who.display_name, None)
            .unwrap();
        let credential =
            webauthn_authenticator_rs::prelude::WebauthnAuthenticator::do_registration(
                &mut soft,
                origin(),
                ccr,
            )
            .unwrap();
        u.add_passkey(&w, &state, &credential, "b".into(), &Origin::default(), T0)
            .unwrap();
        // The same response again: its challenge is the ceremony's, and the credential is known.
        assert_eq!(
            u.add_passkey(&w, &state, &credential, "c".into(), &Origin::default(), T0),
            Err(DomainError::PasskeyExists)
        );
        while u.passkeys.len() < MAX_PASSKEYS {
            register(&mut u, &w, "more", T0);
        }
        assert_eq!(u.passkey_user().unwrap_err(), DomainError::TooManyPasskeys);
    }

    #[test]
    fn a_registration_for_another_ceremony_is_invalid() {
        let w = webauthn();
        let mut u = user();
        let who = u.passkey_user().unwrap();
        let (ccr, _) = w
            .start_passkey_registration(who.handle, &who.name, &who.display_name, None)
            .unwrap();
        let (_, other) = w
            .start_passkey_registration(who.handle, &who.name, &who.display_name, None)
            .unwrap();
        let mut soft = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
        let credential =
            webauthn_authenticator_rs::prelude::WebauthnAuthenticator::do_registration(
                &mut soft,
                origin(),
                ccr,
            )
            .unwrap();
        assert_eq!(
            u.add_passkey(&w, &other, &credential, "x".into(), &Origin::default(), T0),
            Err(DomainError::InvalidPasskey)
        );
        assert!(u.passkeys.is_empty());
    }

    #[test]
    fn a_passkey_login_opens_a_multi_factor_session_and_moves_the_counter() {
        let w = webauthn();
        let mut u = user();
        let mut soft = register(&mut u, &w, "Laptop", T0);
        let before = u.passkeys[0].credential.clone();
        let (state, answer) = assert(&u, &w, &mut soft);
        let (sid, _, _) = u
            .passkey_login(
                &w,
                (Ceremony::Named(state), &answer),
                (&key(), &policy()),
                &Origin::default(),
                T0.plus(5),
            )
            .unwrap();
        let s = u.session(sid, T0.plus(5)).unwrap();
        assert_eq!(s.method, LoginMethod::Passkey);
        assert!(s.method.is_multi_factor());
        assert_eq!(u.passkeys[0].last_used_at, Some(T0.plus(5)));
        assert_ne!(u.passkeys[0].credential, before, "the counter was stored");
        assert_eq!(u.passkeys[0].sign_count, 1);
        assert_eq!(u.history.newest(1).next().unwrap().kind, EventKind::Login);
    }

    #[test]
    fn a_replayed_or_cloned_assertion_is_refused() {
        let w = webauthn();
        let mut u = user();
        let mut soft = register(&mut u, &w, "Laptop", T0);
        let (state, answer) = assert(&u, &w, &mut soft);
        let login = |u: &mut UserState, c: Ceremony, a: &PublicKeyCredential| {
            u.passkey_login(&w, (c, a), (&key(), &policy()), &Origin::default(), T0)
        };
        login(&mut u, Ceremony::Named(state.clone()), &answer).unwrap();
        // The same assertion for the same ceremony (answered already, which the actor would
        // not allow): webauthn-rs compares its counter with the one the ceremony began with and
        // takes it; the highest counter accepted since refuses it, as it would a clone's.
        let id = u.passkeys[0].id;
        assert_eq!(
            login(&mut u, Ceremony::Named(state), &answer),
            Err(DomainError::PasskeyRefused { cloned: Some(id) })
        );
        // An assertion for another ceremony than its own.
        let (_, stray) = assert(&u, &w, &mut soft);
        let (other, _) = assert(&u, &w, &mut soft);
        assert_eq!(
            login(&mut u, Ceremony::Named(other), &stray),
            Err(DomainError::PasskeyRefused { cloned: None })
        );
        assert_eq!(
            u.history.newest(1).next().unwrap().kind,
            EventKind::LoginFailed
        );
        assert_eq!(u.sessions.len(), 1);
    }

    #[test]
    fn another_users_credential_is_unknown_here() {
        let w = webauthn();
        let mut ada = user();
        let mut bob = user();
        let mut soft = register(&mut bob, &w, "Bob's", T0);
        register(&mut ada, &w, "Ada's", T0);
        let (state, answer) = assert(&bob, &w, &mut soft);
        assert_eq!(
            ada.use_passkey(&w, Ceremony::Named(state), &answer, T0),
            Err(DomainError::PasskeyRefused { cloned: None })
        );
    }

    #[test]
    fn a_deactivated_account_is_told_so_only_after_the_assertion() {
        let w = webauthn();
        let mut u = user();
        let mut soft = register(&mut u, &w, "Laptop", T0);
        u.status = Status::Deactivated;
        let (other, stray) = {
            let (_, stray) = assert(&u, &w, &mut soft);
            let (other, _) = assert(&u, &w, &mut soft);
            (other, stray)
        };
        let attempt = u.passkey_login(
            &w,
            (Ceremony::Named(other), &stray),
            (&key(), &policy()),
            &Origin::default(),
            T0,
        );
        assert!(matches!(attempt, Err(DomainError::PasskeyRefused { .. })));
        let (state, answer) = assert(&u, &w, &mut soft);
        let attempt = u.passkey_login(
            &w,
            (Ceremony::Named(state), &answer),
            (&key(), &policy()),
            &Origin::default(),
            T0,
        );
        assert_eq!(attempt, Err(DomainError::AccountDeactivated));
        assert!(u.sessions.is_empty());
    }

    #[test]
    fn a_passkey_answers_the_login_challenge_and_a_wrong_one_spends_an_attempt() {
        let w = webauthn();
        let mut u = user();
        let mut soft = register(&mut u, &w, "Laptop", T0);
        let jti = u.mfa_challenge(300, T0).unwrap();
        assert_eq!(u.mfa_passkey_challenge(jti, T0), Ok(()));
        let (_, stray) = assert(&u, &w, &mut soft);
        let (other, _) = assert(&u, &w, &mut soft);
        assert!(matches!(
            u.mfa_answer_passkey(jti, &w, (other, &stray), T0),
            Err(DomainError::PasskeyRefused { .. })
        ));
        assert_eq!(u.mfa.challenges[0].attempts_left, 4);
        let (state, answer) = assert(&u, &w, &mut soft);
        u.mfa_answer_passkey(jti, &w, (state, &answer), T0).unwrap();
        assert!(!u.mfa.challenge_open(jti, T0), "used once");
        let (state, answer) = assert(&u, &w, &mut soft);
        assert_eq!(
            u.mfa_answer_passkey(jti, &w, (state, &answer), T0),
            Err(DomainError::InvalidToken)
        );
    }

    #[test]
    fn no_passkey_no_passkey_challenge() {
        let mut u = user();
        u.mfa.enabled = true;
        let jti = u.mfa_challenge(300, T0).unwrap();
        assert_eq!(
            u.mfa_passkey_challenge(jti, T0),
            Err(DomainError::NoPasskey)
        );
        assert_eq!(
            u.mfa_passkey_challenge(TokenId::generate(), T0),
            Err(DomainError::InvalidToken)
        );
    }

    #[test]
    fn a_reset_of_second_factors_takes_totp_and_every_passkey() {
        let w = webauthn();
        let mut u = user();
        register(&mut u, &w, "a", T0);
        register(&mut u, &w, "b", T0);
        u.mfa.enabled = true;
        u.mfa.secret = Some(vec![1, 2, 3]);
        let ids: Vec<Vec<u8>> = u.passkeys.iter().map(|p| p.credential_id.clone()).collect();
        assert_eq!(u.reset_second_factors(), ids);
        assert!(!u.mfa_enabled());
        assert!(u.passkeys.is_empty() && u.mfa.secret.is_none());
    }
}
