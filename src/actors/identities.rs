//! Identities at OpenID Connect providers in the actor layer: the user actor's handlers for
//! linking, signing in with and unlinking one, and the directory's steps of a sign-in, whose
//! pending entries (a begun flow, a one-time login code) live in the store, where every node
//! finds them.
//!
//! Secrets never reach the store: a flow is kept under a keyed digest of its `state`, and the
//! PKCE verifier and the nonce are derived from the `state` with the server key, so a node that
//! takes the flow can recompute them and nobody who reads the store can; a login code is kept
//! under its digest.

use actix::{Context, Handler, Message};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::directory::{log_recorded, Directory, DirectoryError};
use super::messages::{ActorError, Reply};
use super::user::UserActor;
use crate::clock;
use crate::domain::credentials::Email;
use crate::domain::error::DomainError;
use crate::domain::events::Origin;
use crate::domain::identities::{
    index_key, Flow, Pending, ProviderClaims, FLOW_TTL, LOGIN_CODE_TTL,
};
use crate::domain::ids::{IdentityId, UserId};
use crate::domain::secrets::random_32;
use crate::domain::user::{LinkBy, UserState};
use crate::store::{codec, Created, IndexChange, StoreError};

/// How often a first sign-in decides again when a concurrent one (on this node or another)
/// claimed the email or the identity first.
const SIGN_IN_TRIES: usize = 4;

// ---------------------------------------------------------------------------------------------
// Messages and the user actor's handlers.
// ---------------------------------------------------------------------------------------------

/// Link the identity `claims` names to this user, as `by` allows; its index entry is claimed in
/// the same write (`identity_taken` if another user holds it).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct LinkIdentity {
    pub claims: ProviderClaims,
    pub by: LinkBy,
    pub origin: Origin,
}

/// A sign-in with an identity linked to this user.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
struct SignInWithIdentity {
    claims: ProviderClaims,
}

/// Unlink one of the user's identities, releasing its index entry in the same write.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<()>")]
pub struct UnlinkIdentity {
    pub identity: IdentityId,
    pub origin: Origin,
}

impl Handler<LinkIdentity> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: LinkIdentity, _: &mut Context<Self>) -> Self::Result {
        let decision = self.decide(|s, index, now| {
            if let Some(added) = s.link_identity(&msg.claims, msg.by, &msg.origin, now)? {
                index.push(IndexChange::IdentityPut(added.index_key()));
            }
            Ok(())
        })?;
        match self.commit(decision) {
            Err(ActorError::Store(StoreError::IdentityTaken)) => {
                self.unchanged(Err(DomainError::IdentityTaken))
            }
            other => other,
        }
    }
}

impl Handler<SignInWithIdentity> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: SignInWithIdentity, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, now| s.identity_sign_in(&msg.claims, now))
    }
}

impl Handler<UnlinkIdentity> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: UnlinkIdentity, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, index, now| {
            let key = s.unlink_identity(msg.identity, &msg.origin, now)?;
            index.push(IndexChange::IdentityDelete(key));
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The directory's steps of a sign-in.
// ---------------------------------------------------------------------------------------------

/// A fresh secret of 256 bits, URL-safe: a `state` or a login code.
fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_32())
}

/// The secrets a flow's `state` implies: the PKCE code verifier (43 characters, as RFC 7636
/// asks) and the nonce.
#[derive(Debug)]
pub struct FlowSecrets {
    pub state: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

impl Directory {
    fn pending_digest(&self, purpose: &str, secret: &str) -> [u8; 32] {
        self.shared().key.digest(purpose, secret.as_bytes())
    }

    fn put_pending(
        &self,
        key: &[u8; 32],
        entry: &Pending,
        ttl: u64,
    ) -> Result<bool, DirectoryError> {
        self.usable()?;
        let shared = self.shared();
        let now = clock::now();
        let value = codec::encode_pending(entry)?;
        let max = shared.config.oidc_max_pending;
        Ok(shared
            .store
            .put_pending(key, &value, now.plus(ttl), now, max)?)
    }

    fn take_pending(&self, key: &[u8; 32]) -> Result<Option<Pending>, DirectoryError> {
        self.usable()?;
        let taken = self.shared().store.take_pending(key, clock::now())?;
        Ok(taken.as_deref().and_then(codec::decode_pending))
    }

    /// The secrets of the flow named by `state` (a fresh one without it).
    pub fn flow_secrets(&self, state: Option<&str>) -> FlowSecrets {
        let state = state.map_or_else(new_secret, str::to_string);
        let key = &self.shared().key;
        let derive = |purpose: &str| URL_SAFE_NO_PAD.encode(key.digest(purpose, state.as_bytes()));
        FlowSecrets {
            pkce_verifier: derive("oidc-pkce-verifier"),
            nonce: derive("oidc-nonce"),
            state,
        }
    }

    /// Keeps a begun flow for [`FLOW_TTL`] under its `state`; `false` if the store holds as
    /// many pending entries as it may.
    pub fn begin_flow(&self, state: &str, flow: Flow) -> Result<bool, DirectoryError> {
        let key = self.pending_digest("oidc-flow", state);
        self.put_pending(&key, &Pending::Flow(flow), FLOW_TTL)
    }

    /// The flow `state` names, gone from the store whatever happens next; `None` if unknown,
    /// used or expired.
    pub fn take_flow(&self, state: &str) -> Result<Option<Flow>, DirectoryError> {
        let key = self.pending_digest("oidc-flow", state);
        Ok(match self.take_pending(&key)? {
            Some(Pending::Flow(flow)) => Some(flow),
            _ => None,
        })
    }

    /// A one-time login code for `user`, valid [`LOGIN_CODE_TTL`]; `None` if the store is full.
    pub fn issue_login_code(
        &self,
        user: UserId,
        provider: &str,
    ) -> Result<Option<String>, DirectoryError> {
        let code = new_secret();
        let key = self.pending_digest("oidc-login-code", &code);
        let entry = Pending::LoginCode {
            user,
            provider: provider.to_string(),
        };
        Ok(self
            .put_pending(&key, &entry, LOGIN_CODE_TTL)?
            .then_some(code))
    }

    /// The user a login code was issued to, the code gone; `None` if unknown, used or expired.
    pub fn take_login_code(&self, code: &str) -> Result<Option<UserId>, DirectoryError> {
        let key = self.pending_digest("oidc-login-code", code);
        Ok(match self.take_pending(&key)? {
            Some(Pending::LoginCode { user, .. }) => Some(user),
            _ => None,
        })
    }

    /// The user an identity is linked to.
    pub fn user_by_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<UserId>, DirectoryError> {
        self.usable()?;
        Ok(self
            .shared()
            .store
            .user_by_identity(&index_key(provider, subject))?)
    }

    /// A sign-in with a verified identity: the user it is linked to; else the user whose email
    /// it names, linked if both sides verified the email (`account_exists` otherwise); else a
    /// new user, created with the identity in one atomic write. A deactivated account is
    /// refused. Races with other sign-ins (on any node) are decided by the store's claims and
    /// decided again here on what they left.
    pub async fn sign_in_with_identity(
        &self,
        claims: &ProviderClaims,
        origin: &Origin,
    ) -> Result<Result<UserId, DomainError>, DirectoryError> {
        for _ in 0..SIGN_IN_TRIES {
            if let Some(user) = self.user_by_identity(&claims.provider, &claims.subject)? {
                let msg = SignInWithIdentity {
                    claims: claims.clone(),
                };
                match self.call(user, msg).await {
                    // Unlinked meanwhile: decide again.
                    Ok(Err(DomainError::IdentityNotFound)) | Err(DirectoryError::UnknownUser) => {
                        continue
                    }
                    other => return Ok(other?.map(|()| user)),
                }
            }
            let Some(email) = claims.email.as_deref().and_then(|e| Email::parse(e).ok()) else {
                return Ok(Err(DomainError::EmailMissing));
            };
            if let Some(user) = self.user_by_email(email.key())? {
                let msg = LinkIdentity {
                    claims: claims.clone(),
                    by: LinkBy::VerifiedEmail,
                    origin: origin.clone(),
                };
                match self.call(user, msg).await {
                    // Another sign-in linked it (here, or to another user) first: decide again.
                    Ok(Err(DomainError::IdentityTaken)) | Err(DirectoryError::UnknownUser) => {
                        continue
                    }
                    other => return Ok(other?.map(|()| user)),
                }
            }
            let state = UserState::from_identity(claims, email, origin, clock::now());
            let store = &self.shared().store;
            self.usable()?;
            match store.create_user(&state)? {
                Created::Yes(ticket) => {
                    store.commit().durable(ticket).await?;
                    log_recorded(
                        state.id,
                        &state
                            .history
                            .since(&Default::default())
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                    return Ok(Ok(state.id));
                }
                Created::EmailTaken | Created::IdentityTaken => continue,
            }
        }
        Err(DirectoryError::Unavailable)
    }
}
