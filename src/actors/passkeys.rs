//! Passkey ceremonies in the actor layer: the user actor's handlers for them, the directory's
//! table of login ceremonies not yet tied to a user, and the directory's login steps.
//!
//! Where each ceremony's state waits for its answer:
//!
//! - a registration, a login that named an email, and a second factor: in the user's actor
//!   ([`Waiting`], in memory, bounded per user, each answered once, expiring with its
//!   challenge); the actor is not retired while one waits;
//! - a usernameless login: in the directory's [`LoginTable`], since no user is known until the
//!   authenticator names one. The table also routes every login ceremony that named an email
//!   (challenge id → user), and remembers the decoys given to emails without passkeys, so that
//!   the answer to a finish never tells whether the email had any.
//!
//! The table has a fixed number of slots, picked by a keyed hash of the challenge id: a new
//! ceremony takes its slot, displacing whatever was there (that ceremony's finish then answers
//! `invalid_challenge`), so memory is set at start however many ceremonies anyone begins.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;

use actix::{Context, Handler, Message};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};

use super::directory::{Directory, DirectoryError};
use super::messages::{ActorError, Opened, Reply};
use super::user::UserActor;
use crate::clock;
use crate::domain::error::DomainError;
use crate::domain::events::Origin;
use crate::domain::ids::{ChallengeId, PasskeyId, TokenId, UserId};
use crate::domain::passkeys::{login_options, StoredPasskey};
use crate::domain::sessions::LoginMethod;
use crate::domain::time::Timestamp;
use crate::domain::user::Ceremony;
use crate::store::{IndexChange, StoreError};

/// A ceremony waiting in a user's actor.
#[derive(Debug)]
pub enum Waiting {
    Registration(PasskeyRegistration),
    /// A login that named the user's email.
    Login(PasskeyAuthentication),
    /// The second factor of the login challenge `jti` (its MFA-pending token).
    SecondFactor {
        jti: TokenId,
        state: PasskeyAuthentication,
    },
}

// ---------------------------------------------------------------------------------------------
// Messages.
// ---------------------------------------------------------------------------------------------

/// Start registering a passkey: the options for `navigator.credentials.create()`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<CreationChallengeResponse>")]
pub struct StartPasskeyRegistration {
    pub challenge: ChallengeId,
}

/// Finish a registration with the authenticator's answer; the passkey is kept as `name`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<StoredPasskey>")]
pub struct FinishPasskeyRegistration {
    pub challenge: ChallengeId,
    pub name: String,
    pub credential: Box<RegisterPublicKeyCredential>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<StoredPasskey>")]
pub struct RenamePasskey {
    pub passkey: PasskeyId,
    pub name: String,
}

#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct RemovePasskey {
    pub passkey: PasskeyId,
    pub origin: Origin,
}

/// Start a login that named this user: `None` if the user has no passkey (the directory then
/// answers decoy options).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Option<RequestChallengeResponse>>")]
struct StartPasskeyLogin {
    challenge: ChallengeId,
}

/// Finish a login: `ceremony` is the usernameless state from the directory's table, or `None`
/// for a ceremony waiting here.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Opened>")]
struct FinishPasskeyLogin {
    challenge: ChallengeId,
    ceremony: Option<DiscoverableAuthentication>,
    credential: Box<PublicKeyCredential>,
    origin: Origin,
}

/// Start a passkey answer to the login challenge `jti` (its MFA-pending token).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<RequestChallengeResponse>")]
pub struct StartMfaPasskey {
    pub jti: TokenId,
    pub challenge: ChallengeId,
}

/// Answer the login challenge `jti` with a passkey; on success a session opens.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Opened>")]
pub struct AnswerMfaPasskey {
    pub jti: TokenId,
    pub challenge: ChallengeId,
    pub credential: Box<PublicKeyCredential>,
    pub origin: Origin,
}

// ---------------------------------------------------------------------------------------------
// The user actor's handlers.
// ---------------------------------------------------------------------------------------------

fn ceremony_error(e: impl std::fmt::Display) -> ActorError {
    ActorError::Ceremony(e.to_string())
}

impl UserActor {
    fn challenge_ttl(&self) -> u64 {
        self.dir.config.passkeys.challenge_ttl
    }

    /// Opens a named login ceremony for the user's passkeys.
    fn start_authentication(
        &mut self,
        id: ChallengeId,
        second_factor: Option<TokenId>,
    ) -> Result<RequestChallengeResponse, ActorError> {
        let webauthn = self.dir.config.passkeys.webauthn.clone();
        let (options, state) = webauthn
            .start_passkey_authentication(&self.state.passkey_credentials())
            .map_err(ceremony_error)?;
        let waiting = match second_factor {
            Some(jti) => Waiting::SecondFactor { jti, state },
            None => Waiting::Login(state),
        };
        let ttl = self.challenge_ttl();
        self.ceremonies.open(id, waiting, ttl, clock::now());
        Ok(options)
    }
}

impl Handler<StartPasskeyRegistration> for UserActor {
    type Result = Reply<CreationChallengeResponse>;

    fn handle(&mut self, msg: StartPasskeyRegistration, _: &mut Context<Self>) -> Self::Result {
        let who = match self.state.passkey_user() {
            Ok(who) => who,
            Err(e) => return self.unchanged(Err(e)),
        };
        let webauthn = self.dir.config.passkeys.webauthn.clone();
        let (options, state) = webauthn
            .start_passkey_registration(who.handle, &who.name, &who.display_name, Some(who.exclude))
            .map_err(ceremony_error)?;
        let ttl = self.challenge_ttl();
        self.ceremonies.open(
            msg.challenge,
            Waiting::Registration(state),
            ttl,
            clock::now(),
        );
        self.unchanged(Ok(options))
    }
}

impl Handler<FinishPasskeyRegistration> for UserActor {
    type Result = Reply<StoredPasskey>;

    /// The credential id is claimed in the same write as the snapshot; if another user holds
    /// it, nothing is written and the answer is `passkey_exists`.
    fn handle(&mut self, msg: FinishPasskeyRegistration, _: &mut Context<Self>) -> Self::Result {
        let Some(Waiting::Registration(ceremony)) =
            self.ceremonies.take(msg.challenge, clock::now())
        else {
            return self.unchanged(Err(DomainError::InvalidChallenge));
        };
        let webauthn = self.dir.config.passkeys.webauthn.clone();
        let decision = self.decide(|s, index, now| {
            let added = s.add_passkey(
                &webauthn,
                &ceremony,
                &msg.credential,
                msg.name,
                &msg.origin,
                now,
            )?;
            index.push(IndexChange::PasskeyPut(added.credential_id.clone()));
            Ok(added)
        })?;
        match self.commit(decision) {
            Err(ActorError::Store(StoreError::PasskeyTaken)) => {
                self.unchanged(Err(DomainError::PasskeyExists))
            }
            other => other,
        }
    }
}

impl Handler<RenamePasskey> for UserActor {
    type Result = Reply<StoredPasskey>;

    fn handle(&mut self, msg: RenamePasskey, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, _| s.rename_passkey(msg.passkey, msg.name))
    }
}

impl Handler<RemovePasskey> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: RemovePasskey, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, index, now| {
            let credential_id = s.remove_passkey(msg.passkey, &msg.origin, now)?;
            index.push(IndexChange::PasskeyDelete(credential_id));
            Ok(())
        })
    }
}

impl Handler<StartPasskeyLogin> for UserActor {
    type Result = Reply<Option<RequestChallengeResponse>>;

    fn handle(&mut self, msg: StartPasskeyLogin, _: &mut Context<Self>) -> Self::Result {
        if self.state.passkeys.is_empty() {
            return self.unchanged(Ok(None));
        }
        let options = self.start_authentication(msg.challenge, None)?;
        self.unchanged(Ok(Some(options)))
    }
}

impl Handler<FinishPasskeyLogin> for UserActor {
    type Result = Reply<Opened>;

    fn handle(&mut self, msg: FinishPasskeyLogin, _: &mut Context<Self>) -> Self::Result {
        let ceremony = match msg.ceremony {
            Some(state) => Ceremony::Discoverable(state),
            None => match self.ceremonies.take(msg.challenge, clock::now()) {
                Some(Waiting::Login(state)) => Ceremony::Named(state),
                _ => return self.unchanged(Err(DomainError::InvalidChallenge)),
            },
        };
        let webauthn = self.dir.config.passkeys.webauthn.clone();
        let policy = self.dir.config.policy;
        let key = self.dir.key.clone();
        let subject = self.subject();
        self.apply(|s, _, now| {
            let opened = s.passkey_login(
                &webauthn,
                (ceremony, &msg.credential),
                (&key, &policy),
                &msg.origin,
                now,
            )?;
            Ok(Opened::new(opened, subject, now))
        })
    }
}

impl Handler<StartMfaPasskey> for UserActor {
    type Result = Reply<RequestChallengeResponse>;

    fn handle(&mut self, msg: StartMfaPasskey, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.state.mfa_passkey_challenge(msg.jti, clock::now()) {
            return self.unchanged(Err(e));
        }
        let options = self.start_authentication(msg.challenge, Some(msg.jti))?;
        self.unchanged(Ok(options))
    }
}

impl Handler<AnswerMfaPasskey> for UserActor {
    type Result = Reply<Opened>;

    fn handle(&mut self, msg: AnswerMfaPasskey, _: &mut Context<Self>) -> Self::Result {
        // A spent or voided pending token is that, whatever ceremony it names.
        if !self.state.mfa.challenge_open(msg.jti, clock::now()) {
            return self.unchanged(Err(DomainError::InvalidToken));
        }
        let state = match self.ceremonies.take(msg.challenge, clock::now()) {
            Some(Waiting::SecondFactor { jti, state }) if jti == msg.jti => state,
            _ => return self.unchanged(Err(DomainError::InvalidChallenge)),
        };
        let webauthn = self.dir.config.passkeys.webauthn.clone();
        let policy = self.dir.config.policy;
        let key = self.dir.key.clone();
        let subject = self.subject();
        self.second_factor(&msg.origin, |s, _, now| {
            s.mfa_answer_passkey(msg.jti, &webauthn, (state, &msg.credential), now)?;
            let login = (LoginMethod::SecondFactor, &msg.origin);
            let opened = s.open_session(&key, &policy, login, now)?;
            Ok(Opened::new(opened, subject, now))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The directory's table and login steps.
// ---------------------------------------------------------------------------------------------

/// What a login ceremony in the table is.
enum LoginKind {
    /// Usernameless: the state itself.
    Discoverable(DiscoverableAuthentication),
    /// Named an email with passkeys: the state waits in this user's actor.
    Named(UserId),
    /// Named an email without passkeys (or without an account): every answer is refused.
    Decoy,
}

struct LoginEntry {
    id: ChallengeId,
    expires_at: Timestamp,
    kind: LoginKind,
}

/// The login ceremonies not waiting in a user's actor, in a fixed number of slots.
pub(crate) struct LoginTable {
    hasher: RandomState,
    slots: Box<[Mutex<Option<Box<LoginEntry>>>]>,
}

impl LoginTable {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            slots: (0..n.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn with<R>(&self, id: ChallengeId, f: impl FnOnce(&mut Option<Box<LoginEntry>>) -> R) -> R {
        let i = (self.hasher.hash_one(id) % self.slots.len() as u64) as usize;
        let mut slot = match self.slots[i].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut slot)
    }

    /// Keeps a ceremony for `ttl` seconds, displacing whatever held its slot.
    fn put(&self, id: ChallengeId, kind: LoginKind, ttl: u64, now: Timestamp) {
        let entry = Box::new(LoginEntry {
            id,
            expires_at: now.plus(ttl),
            kind,
        });
        self.with(id, |slot| *slot = Some(entry));
    }

    /// The ceremony `id`, gone from the table; `None` if unknown, answered, displaced or expired.
    fn take(&self, id: ChallengeId, now: Timestamp) -> Option<LoginKind> {
        self.with(id, |slot| match slot.take() {
            Some(e) if e.id == id => (e.expires_at > now).then_some(e.kind),
            other => {
                *slot = other;
                None
            }
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().map(|s| s.is_some()).unwrap_or(false))
            .count()
    }
}

/// How a finished login went: the user it was about (if the ceremony or the credential named
/// one) and the verdict.
pub type LoginFinished = (Option<UserId>, Result<Opened, DomainError>);

impl Directory {
    /// The user a passkey's credential id is registered to.
    pub fn user_by_passkey(&self, credential_id: &[u8]) -> Result<Option<UserId>, DirectoryError> {
        let shared = self.shared();
        if !self.ready() {
            return Err(DirectoryError::Storage("a store flush failed".into()));
        }
        Ok(shared.store.user_by_passkey(credential_id)?)
    }

    /// Starts a login ceremony: usernameless without `email_key`, else for that email's
    /// passkeys. An email with no passkey, or with no account, gets options of the same shape
    /// (its decoy credentials), and a ceremony whose every answer is refused.
    pub async fn start_passkey_login(
        &self,
        email_key: Option<&str>,
    ) -> Result<(ChallengeId, RequestChallengeResponse), DirectoryError> {
        let shared = self.shared().clone();
        let passkeys = &shared.config.passkeys;
        let id = ChallengeId::generate();
        let Some(email_key) = email_key else {
            let (options, state) = passkeys
                .webauthn
                .start_discoverable_authentication()
                .map_err(|e| DirectoryError::Ceremony(e.to_string()))?;
            let kind = LoginKind::Discoverable(state);
            shared
                .logins
                .put(id, kind, passkeys.challenge_ttl, clock::now());
            return Ok((id, options));
        };
        let named = match self.user_by_email(email_key)? {
            Some(user) => match self.call(user, StartPasskeyLogin { challenge: id }).await {
                Ok(Ok(Some(options))) => Some((user, options)),
                Ok(Ok(None)) | Ok(Err(_)) | Err(DirectoryError::UnknownUser) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let (kind, options) = match named {
            Some((user, options)) => (LoginKind::Named(user), login_options(options)),
            None => {
                let options = match &shared.decoys {
                    Some(decoys) => decoys.options(&passkeys.webauthn, email_key),
                    None => passkeys
                        .webauthn
                        .start_discoverable_authentication()
                        .map(|(o, _)| o),
                }
                .map_err(|e| DirectoryError::Ceremony(e.to_string()))?;
                (LoginKind::Decoy, options)
            }
        };
        shared
            .logins
            .put(id, kind, passkeys.challenge_ttl, clock::now());
        Ok((id, options))
    }

    /// Finishes a login ceremony with the authenticator's answer (`None`: a body that is no
    /// credential): `invalid_challenge` for a ceremony unknown, answered or expired;
    /// `PasskeyRefused` for an assertion that does not verify (a decoy's, or a credential of no
    /// one or of another account); else a session of the user whose passkey it is. The
    /// ceremony is used up either way.
    pub async fn finish_passkey_login(
        &self,
        challenge: ChallengeId,
        credential: Option<PublicKeyCredential>,
        origin: Origin,
    ) -> Result<LoginFinished, DirectoryError> {
        let refused = DomainError::PasskeyRefused { cloned: None };
        let entry = self.shared().logins.take(challenge, clock::now());
        let Some(entry) = entry else {
            return Ok((None, Err(DomainError::InvalidChallenge)));
        };
        let Some(credential) = credential else {
            return Ok((None, Err(refused)));
        };
        let (user, ceremony) = match entry {
            LoginKind::Decoy => return Ok((None, Err(refused))),
            LoginKind::Named(user) => (user, None),
            LoginKind::Discoverable(state) => {
                match self.user_by_passkey(credential.get_credential_id())? {
                    Some(user) => (user, Some(state)),
                    None => return Ok((None, Err(refused))),
                }
            }
        };
        let msg = FinishPasskeyLogin {
            challenge,
            ceremony,
            credential: Box::new(credential),
            origin,
        };
        match self.call(user, msg).await {
            Ok(verdict) => Ok((Some(user), verdict)),
            Err(DirectoryError::UnknownUser) => Ok((None, Err(refused))),
            Err(e) => Err(e),
        }
    }
}

/// Settings for tests of this layer: the relying party of `http://localhost:8080`.
#[cfg(test)]
pub(crate) fn test_settings() -> super::directory::PasskeySettings {
    super::directory::PasskeySettings {
        webauthn: std::sync::Arc::new(crate::domain::user::soft::webauthn()),
        challenge_ttl: 300,
        login_slots: 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    #[test]
    fn the_table_answers_each_ceremony_once_until_it_expires() {
        let t = LoginTable::new(1024);
        let (a, b) = (ChallengeId::generate(), ChallengeId::generate());
        t.put(a, LoginKind::Decoy, 300, T0);
        t.put(b, LoginKind::Named(UserId::generate()), 300, T0);
        assert!(matches!(t.take(a, T0.plus(299)), Some(LoginKind::Decoy)));
        assert!(t.take(a, T0).is_none(), "answered once");
        assert!(t.take(b, T0.plus(300)).is_none(), "expired");
        assert!(t.take(ChallengeId::generate(), T0).is_none());
    }

    #[test]
    fn the_table_never_grows_and_a_miss_leaves_the_slot_alone() {
        let t = LoginTable::new(16);
        let ids: Vec<ChallengeId> = (0..10_000)
            .map(|_| {
                let id = ChallengeId::generate();
                t.put(id, LoginKind::Decoy, 300, T0);
                id
            })
            .collect();
        assert_eq!(t.slots.len(), 16);
        assert!(t.len() <= 16);
        // The newest ids hold their slots; a lookup of another id that lands on one keeps it.
        let last = *ids.last().unwrap();
        for _ in 0..100 {
            assert!(t.take(ChallengeId::generate(), T0).is_none());
        }
        assert!(t.take(last, T0).is_some());
    }
}
