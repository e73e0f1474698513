//! The user actor: the only writer of one user's state.
//!
//! Each handler copies the state, lets a `domain` rule change the copy, writes the copy's
//! snapshot, and only then makes it the actor's state and publishes it to readers. A snapshot the
//! store refuses, or a code that could not be delivered, leaves the actor exactly as it was, so
//! memory never runs ahead of disk and a failed request changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::fut::{ready, ActorFutureExt, WrapFuture};
use actix::{Actor, ActorContext, AtomicResponse, Context, Handler};
use tracing::debug;

use super::messages::*;
use super::passkeys::Waiting;
use super::shared::Shared;
use crate::clock;
use crate::delivery::{self, Channel, Purpose};
use crate::domain::backoff::AccountAttempts;
use crate::domain::codes::{self, CodePolicy};
use crate::domain::error::DomainError;
use crate::domain::events::{EventKind, Origin};
use crate::domain::ids::TokenId;
use crate::domain::mfa;
use crate::domain::passkeys::Pending;
use crate::domain::sessions::LoginMethod;
use crate::domain::time::Timestamp;
use crate::domain::user::{EmailMoved, UserState};
use crate::store::{codec, IndexChange, StoreError};

pub struct UserActor {
    pub(super) state: Arc<UserState>,
    /// Seconds (on the directory's clock) of the last read or write; shared with the view.
    activity: Arc<AtomicU64>,
    pub(super) dir: Arc<Shared>,
    /// Set once the actor has left the directory; it then refuses every message.
    retired: bool,
    /// Password checks and wrong second-factor answers (across pending tokens) of this
    /// account. In memory, where this node is the only one: an actor with a live window or a
    /// check in flight is never retired, so the count lasts as long as it matters. With a
    /// shared engine they must count across nodes, so they live in the store and this is only
    /// the last copy read (see [`UserActor::counters`]).
    attempts: AccountAttempts,
    /// WebAuthn ceremonies of this user waiting for their answer (`actors/passkeys.rs`): in
    /// memory only, each answered once, bounded, expiring with its challenge. An actor holding
    /// a live one is not retired.
    pub(super) ceremonies: Pending<Waiting>,
}

/// What a rule decided: the changed copy of the state (if anything changed), the index
/// entries that change with it, and the verdict.
pub(super) struct Decision<T> {
    next: UserState,
    index: Vec<IndexChange>,
    value: Result<T, DomainError>,
}

impl UserActor {
    pub(crate) fn new(state: Arc<UserState>, activity: Arc<AtomicU64>, dir: Arc<Shared>) -> Self {
        Self {
            state,
            activity,
            dir,
            retired: false,
            attempts: AccountAttempts::default(),
            ceremonies: Pending::default(),
        }
    }

    /// An answer that changed nothing.
    pub(super) fn unchanged<T>(&self, value: Result<T, DomainError>) -> Reply<T> {
        if self.retired {
            return Err(ActorError::Retired);
        }
        Ok(Done {
            value,
            state: self.state.clone(),
            ticket: None,
            recorded: Vec::new(),
        })
    }

    /// Whether the attempt counters hold nothing worth keeping at `now` (in memory).
    fn attempts_quiet(&self, now: Timestamp) -> bool {
        if self.dir.store.shared() {
            return true;
        }
        let rules = self.dir.config.attempts;
        let mfa = rules.mfa.unwrap_or(rules.account_or_unlimited());
        self.attempts
            .passwords
            .is_quiet(&rules.account_or_unlimited(), now)
            && self.attempts.second_factors.is_quiet(&mfa, now)
    }

    /// Runs `step` on the account's attempt counters. With a shared engine the counters are
    /// read from the store and written back over the version read, the step being run again
    /// on what another node wrote in between: the same compare-and-set that keeps a snapshot
    /// atomic keeps a limit from being passed by guesses spread over the nodes.
    pub(super) fn counters<T>(
        &mut self,
        mut step: impl FnMut(&mut AccountAttempts) -> T,
    ) -> Result<T, ActorError> {
        let store = &self.dir.store;
        if !store.shared() {
            return Ok(step(&mut self.attempts));
        }
        let id = self.state.id;
        for _ in 0..16 {
            let (version, record) = store.load_attempts(id).map_err(ActorError::Store)?;
            let read = match record {
                Some(r) => codec::decode_attempts(&r).map_err(ActorError::Store)?,
                None => AccountAttempts::default(),
            };
            let mut next = read;
            let value = step(&mut next);
            if next == read {
                self.attempts = next;
                return Ok(value);
            }
            let record = codec::encode_attempts(&next).map_err(ActorError::Store)?;
            match store.save_attempts(id, version, &record) {
                Ok(()) => {
                    self.attempts = next;
                    return Ok(value);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(ActorError::Store(e)),
            }
        }
        // Sixteen nodes' writes in a row between one read and its write: give up for now.
        Err(ActorError::Store(StoreError::Io(
            "attempt counters contended; try again".into(),
        )))
    }

    /// Runs a second-factor `rule` under the account's limit of wrong answers: refused while
    /// over it (the right code too), a wrong code or passkey counted (and recorded as
    /// `mfa_failed` from `origin`), a right one clearing the count.
    pub(super) fn second_factor<T>(
        &mut self,
        origin: &Origin,
        rule: impl FnOnce(&mut UserState, &mut Vec<IndexChange>, Timestamp) -> Result<T, DomainError>,
    ) -> Reply<T> {
        let now = clock::now();
        let limit = self.dir.config.attempts.mfa;
        if let Some(limit) = &limit {
            if let Err(e) = self.counters(|c| c.second_factors.check(limit, now))? {
                return self.unchanged(Err(e));
            }
        }
        let reply = self.apply(|s, index, now| {
            let value = rule(s, index, now);
            if let Err(DomainError::InvalidCode { .. } | DomainError::PasskeyRefused { .. }) =
                &value
            {
                s.record(EventKind::MfaFailed, origin, None, now);
            }
            value
        });
        if let (Some(limit), Ok(done)) = (&limit, &reply) {
            let counted = match &done.value {
                Err(DomainError::InvalidCode { .. } | DomainError::PasskeyRefused { .. }) => {
                    self.counters(|c| c.second_factors.fail(limit, now))
                }
                Ok(_) => self.counters(|c| c.second_factors.reset()),
                Err(_) => Ok(()),
            };
            if let Err(e) = counted {
                // The answer stands (it is written); only its count is lost.
                tracing::warn!(user = %self.state.id, error = ?e, "second-factor attempt not counted");
            }
        }
        reply
    }

    pub(super) fn subject(&self) -> Subject {
        Subject {
            tenant: self.state.tenant.id,
            role: self.state.role.as_str(),
        }
    }

    /// Runs `rule` on a copy of the state, without committing it.
    pub(super) fn decide<T>(
        &self,
        rule: impl FnOnce(&mut UserState, &mut Vec<IndexChange>, Timestamp) -> Result<T, DomainError>,
    ) -> Result<Decision<T>, ActorError> {
        if self.retired {
            return Err(ActorError::Retired);
        }
        self.activity
            .store(self.dir.uptime_secs(), Ordering::Relaxed);
        let mut next = (*self.state).clone();
        let mut index = Vec::new();
        let value = rule(&mut next, &mut index, clock::now());
        Ok(Decision { next, index, value })
    }

    /// Writes a decision's state (if it changed) and publishes it.
    pub(super) fn commit<T>(&mut self, d: Decision<T>) -> Reply<T> {
        let Decision {
            mut next,
            index,
            value,
        } = d;
        next.revision = self.state.revision;
        if next == *self.state {
            // Nothing to write, so no version check would catch a stale decision (a refresh
            // token refused because another node rotated it a moment ago): a shared engine
            // is asked whether this state is still the stored one.
            if let Some(stored) = self.dir.store.stored_revision(self.state.id)? {
                if stored != self.state.revision {
                    return Err(ActorError::Store(StoreError::Conflict));
                }
            }
            return Ok(Done {
                value,
                state: self.state.clone(),
                ticket: None,
                recorded: Vec::new(),
            });
        }
        next.revision = self.state.revision.wrapping_add(1);
        let ticket = self.dir.store.save_user(&next, &index)?;
        for change in &index {
            if let IndexChange::ApiKeyDelete(d) = change {
                self.dir.api_keys.remove(d);
            }
        }
        let recorded = next.history.since(&self.state.history).cloned().collect();
        count_sessions(&self.state, &next, clock::now());
        self.state = Arc::new(next);
        self.dir
            .views
            .publish(self.state.clone(), self.activity.clone());
        Ok(Done {
            value,
            state: self.state.clone(),
            ticket: Some(ticket),
            recorded,
        })
    }

    /// Decide and commit in one step (no I/O in between).
    pub(super) fn apply<T>(
        &mut self,
        rule: impl FnOnce(&mut UserState, &mut Vec<IndexChange>, Timestamp) -> Result<T, DomainError>,
    ) -> Reply<T> {
        let d = self.decide(rule)?;
        self.commit(d)
    }

    /// Decide, deliver a code, and commit only if the delivery succeeded. The actor handles no
    /// other message meanwhile (`AtomicResponse`), so the decision cannot go stale.
    fn deliver_then_commit<T: 'static>(
        &mut self,
        decision: Result<Decision<T>, ActorError>,
        message: Option<delivery::Message>,
    ) -> AtomicResponse<Self, Reply<T>> {
        let d = match decision {
            Ok(d) => d,
            Err(e) => return AtomicResponse::new(Box::pin(ready(Err(e)))),
        };
        let Some(message) = message.filter(|_| d.value.is_ok()) else {
            let result = self.commit(d);
            return AtomicResponse::new(Box::pin(ready(result)));
        };
        let channel = match message.channel {
            Channel::Sms => "sms",
            Channel::Email => "email",
        };
        let send = self.dir.delivery.send(message);
        AtomicResponse::new(Box::pin(send.into_actor(self).map(move |sent, act, _| {
            let outcome = if sent.is_ok() { "sent" } else { "failed" };
            crate::metrics::get().deliveries.with_label_values(&[channel, outcome]).inc();
            match sent {
            Ok(()) => act.commit(d),
            Err(e) => {
                tracing::warn!(user = %act.state.id, error = %e, "code delivery failed; request discarded");
                Err(ActorError::Delivery(e.to_string()))
            }
            }
        })))
    }

    /// Generates a code for `purpose`, lets `rule` store its hash and say where it goes (if
    /// anywhere), delivers it, and commits only once it was delivered.
    fn issue_code<T: 'static>(
        &mut self,
        purpose: Purpose,
        rule: impl FnOnce(
            &mut UserState,
            [u8; 32],
            Timestamp,
        ) -> Result<(Option<(Channel, String)>, T), DomainError>,
    ) -> AtomicResponse<Self, Reply<T>> {
        let code = codes::generate();
        let hash = self.code_hash(purpose.as_str(), &code);
        let user = self.state.id;
        let mut message = None;
        let decision = self.decide(|s, _, now| {
            let (to, value) = rule(s, hash, now)?;
            message = to.map(|(channel, to)| {
                delivery::Message::new(channel, &to, purpose, &code, user, now)
            });
            Ok(value)
        });
        self.deliver_then_commit(decision, message)
    }

    /// Withdraws the view and stops; the directory drops the address when told. Messages
    /// already queued get `Retired` and are retried by the directory on a fresh actor.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        self.retired = true;
        self.dir.views.forget(self.state.id, &self.state);
        debug!(user = %self.state.id, "user actor retired after idling");
        ctx.stop();
    }

    fn code_hash(&self, purpose: &str, code: &str) -> [u8; 32] {
        self.dir
            .key
            .code_hash(purpose, self.state.id.as_bytes(), code)
    }
}

/// Counts the sessions a change opened and ended. Why one ended is read from what the change
/// recorded (a session past its life is `expired`, whatever else happened).
fn count_sessions(before: &UserState, after: &UserState, now: Timestamp) {
    // The common change (a refresh) keeps the same sessions in the same order: no search.
    let same = before.sessions.len() == after.sessions.len()
        && before
            .sessions
            .iter()
            .zip(&after.sessions)
            .all(|(b, a)| b.id == a.id);
    if same {
        return;
    }
    let metrics = crate::metrics::get();
    for s in after.sessions.iter() {
        if !before.sessions.iter().any(|b| b.id == s.id) {
            metrics
                .sessions_created
                .with_label_values(&[s.method.as_str()])
                .inc();
        }
    }
    let cause = after
        .history
        .since(&before.history)
        .last()
        .map(|e| match e.kind {
            EventKind::Login => "session_limit",
            EventKind::SessionRevoked if e.ip.is_none() && e.user_agent.is_none() => "admin",
            kind => kind.as_str(),
        });
    for s in before.sessions.iter() {
        if !after.sessions.iter().any(|a| a.id == s.id) {
            let reason = if s.is_live(now) {
                cause.unwrap_or("other")
            } else {
                "expired"
            };
            metrics.sessions_ended.with_label_values(&[reason]).inc();
        }
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;
}

impl Handler<RetireIfIdle> for UserActor {
    type Result = bool;

    /// The directory's sweeper saw this actor idle; it may have been used since, so check again.
    fn handle(&mut self, _: RetireIfIdle, ctx: &mut Context<Self>) -> bool {
        let last = self.activity.load(Ordering::Relaxed);
        if !self.retired
            && self.dir.uptime_secs().saturating_sub(last) >= self.dir.config.idle.as_secs()
            && self.attempts_quiet(clock::now())
            && self.ceremonies.is_quiet(clock::now())
        {
            self.retire(ctx);
        }
        self.retired
    }
}

impl Handler<ReservePassword> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, _: ReservePassword, _: &mut Context<Self>) -> Self::Result {
        if self.retired {
            return Err(ActorError::Retired);
        }
        self.activity
            .store(self.dir.uptime_secs(), Ordering::Relaxed);
        let rules = self.dir.config.attempts;
        let now = clock::now();
        let value = self.counters(|c| {
            c.passwords
                .reserve(rules.account.as_ref(), rules.max_in_flight, now)
        })?;
        self.unchanged(value)
    }
}

impl Handler<SettlePassword> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: SettlePassword, _: &mut Context<Self>) -> Self::Result {
        let rule = self.dir.config.attempts.account_or_unlimited();
        let now = clock::now();
        self.counters(|c| c.passwords.settle(&rule, msg.0, now))?;
        self.unchanged(Ok(()))
    }
}

impl Handler<Discard> for UserActor {
    type Result = ();

    fn handle(&mut self, _: Discard, ctx: &mut Context<Self>) {
        if !self.retired {
            self.retire(ctx);
        }
    }
}

impl Handler<OpenSession> for UserActor {
    type Result = Reply<Opened>;

    fn handle(&mut self, msg: OpenSession, _: &mut Context<Self>) -> Self::Result {
        let policy = self.dir.config.policy;
        let key = self.dir.key.clone();
        let subject = self.subject();
        self.apply(|s, _, now| {
            let login = (msg.method, &msg.origin);
            let opened = s.open_session(&key, &policy, login, now)?;
            Ok(Opened::new(opened, subject, now))
        })
    }
}

impl Handler<Refresh> for UserActor {
    type Result = Reply<Refreshed>;

    fn handle(&mut self, msg: Refresh, _: &mut Context<Self>) -> Self::Result {
        let policy = self.dir.config.policy;
        let key = self.dir.key.clone();
        let subject = self.subject();
        self.apply(|s, _, now| {
            let grant = s.refresh(&msg.token, &key, &policy, &msg.origin, now)?;
            Ok(Refreshed {
                grant,
                subject,
                issued_at: now,
            })
        })
    }
}

impl Handler<Logout> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: Logout, _: &mut Context<Self>) -> Self::Result {
        let key = self.dir.key.clone();
        self.apply(|s, _, now| {
            let what = (msg.session, msg.refresh.as_ref(), msg.everywhere);
            s.logout(what, &key, &msg.origin, now);
            Ok(())
        })
    }
}

impl Handler<EndSession> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: EndSession, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, now| s.end_session(msg.session, &msg.origin, now))
    }
}

impl Handler<EndOtherSessions> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: EndOtherSessions, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, now| {
            s.end_other_sessions(msg.current, &msg.origin, now);
            Ok(())
        })
    }
}

impl Handler<Record> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: Record, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, now| {
            s.record(msg.what, &msg.origin, None, now);
            Ok(())
        })
    }
}

impl Handler<GetApiKey> for UserActor {
    type Result = Reply<KeyIssued>;

    fn handle(&mut self, _: GetApiKey, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, index, now| {
            let (key, secret) = s.ensure_api_key(now);
            if secret.is_some() {
                index.push(IndexChange::ApiKeyPut(key.digest));
            }
            Ok(KeyIssued { key, secret })
        })
    }
}

impl Handler<RotateApiKey> for UserActor {
    type Result = Reply<KeyIssued>;

    fn handle(&mut self, msg: RotateApiKey, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, index, now| {
            let (key, secret, old) = s.rotate_api_key(now);
            s.record(EventKind::ApiKeyRotated, &msg.origin, None, now);
            if let Some(old) = old {
                index.push(IndexChange::ApiKeyDelete(old));
            }
            index.push(IndexChange::ApiKeyPut(key.digest));
            Ok(KeyIssued {
                key,
                secret: Some(secret),
            })
        })
    }
}

impl Handler<TouchApiKey> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: TouchApiKey, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, now| {
            s.touch_api_key(&msg.digest, now);
            Ok(())
        })
    }
}

impl Handler<PatchProfile> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: PatchProfile, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, _| {
            s.patch_profile(msg.0);
            Ok(())
        })
    }
}

impl Handler<RequestPhoneCode> for UserActor {
    type Result = AtomicResponse<Self, Reply<CodeSent>>;

    fn handle(&mut self, _: RequestPhoneCode, _: &mut Context<Self>) -> Self::Result {
        let policy: CodePolicy = self.dir.config.phone_codes;
        self.issue_code(Purpose::VerifyPhone, |s, hash, now| {
            let phone = s.request_phone_code(hash, &policy, now)?;
            let sent = CodeSent {
                destination: delivery::mask(&phone),
                expires_in: policy.ttl,
                resend_after: policy.resend,
            };
            Ok((Some((Channel::Sms, phone)), sent))
        })
    }
}

impl Handler<ConfirmPhone> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: ConfirmPhone, _: &mut Context<Self>) -> Self::Result {
        let hash = self.code_hash(Purpose::VerifyPhone.as_str(), &msg.code);
        self.apply(|s, _, now| s.confirm_phone(&hash, now))
    }
}

impl Handler<Deactivate> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: Deactivate, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, now| {
            s.deactivate();
            s.record(EventKind::Deactivated, &msg.origin, None, now);
            Ok(())
        })
    }
}

impl Handler<RequestReactivation> for UserActor {
    type Result = AtomicResponse<Self, Reply<bool>>;

    fn handle(&mut self, _: RequestReactivation, _: &mut Context<Self>) -> Self::Result {
        let policy: CodePolicy = self.dir.config.reactivate_codes;
        self.issue_code(Purpose::Reactivate, |s, hash, now| {
            let issued = s.request_reactivation(hash, &policy, now);
            let to = issued.then(|| (Channel::Email, s.email.clone()));
            Ok((to, issued))
        })
    }
}

impl Handler<ConfirmReactivation> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: ConfirmReactivation, _: &mut Context<Self>) -> Self::Result {
        let hash = self.code_hash(Purpose::Reactivate.as_str(), &msg.code);
        self.apply(|s, _, now| {
            s.confirm_reactivation(&hash, now)?;
            s.record(EventKind::Reactivated, &msg.origin, None, now);
            Ok(())
        })
    }
}

impl UserActor {
    /// The user's TOTP generator, from the decrypted secret.
    fn totp(&self) -> Option<totp_rs::TOTP> {
        let sealed = self.state.mfa.secret.as_ref()?;
        let secret = self.dir.data_key.open(self.state.id.as_bytes(), sealed)?;
        mfa::totp(&secret, &self.state.email).ok()
    }

    fn recovery_hash(&self, code: &str) -> [u8; 32] {
        let normal = mfa::normalise_recovery(code);
        self.dir.key.digest(
            "mfa-recovery",
            &[self.state.id.as_bytes().as_slice(), normal.as_bytes()].concat(),
        )
    }
}

impl Handler<MfaSetup> for UserActor {
    type Result = Reply<MfaEnrolment>;

    fn handle(&mut self, _: MfaSetup, _: &mut Context<Self>) -> Self::Result {
        let secret = mfa::new_secret();
        let sealed = self.dir.data_key.seal(self.state.id.as_bytes(), &secret);
        let totp = mfa::totp(&secret, &self.state.email);
        self.apply(|s, _, _| {
            let totp = totp?;
            let sealed = sealed.ok_or(DomainError::MfaNotSetUp)?;
            s.mfa_setup(sealed)?;
            Ok(MfaEnrolment {
                secret_base32: totp.get_secret_base32(),
                otpauth_url: totp.get_url(),
            })
        })
    }
}

impl Handler<MfaVerify> for UserActor {
    type Result = Reply<Vec<String>>;

    fn handle(&mut self, msg: MfaVerify, _: &mut Context<Self>) -> Self::Result {
        let totp = self.totp();
        let codes = mfa::new_recovery_codes();
        let hashes = codes.iter().map(|c| self.recovery_hash(c)).collect();
        self.second_factor(&msg.origin, |s, _, now| {
            s.mfa_enable(totp.as_ref(), &msg.code, hashes, now)?;
            s.record(EventKind::MfaEnabled, &msg.origin, None, now);
            Ok(codes)
        })
    }
}

impl Handler<MfaDisable> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: MfaDisable, _: &mut Context<Self>) -> Self::Result {
        let totp = self.totp();
        self.second_factor(&msg.origin, |s, _, now| {
            s.mfa_disable(totp.as_ref(), &msg.code, now)?;
            s.record(EventKind::MfaDisabled, &msg.origin, None, now);
            Ok(())
        })
    }
}

impl Handler<BeginMfa> for UserActor {
    type Result = Reply<(TokenId, Subject)>;

    fn handle(&mut self, msg: BeginMfa, _: &mut Context<Self>) -> Self::Result {
        let subject = self.subject();
        self.apply(|s, _, now| Ok((s.mfa_challenge(msg.ttl, now)?, subject)))
    }
}

impl Handler<AnswerMfa> for UserActor {
    type Result = Reply<Opened>;

    fn handle(&mut self, msg: AnswerMfa, _: &mut Context<Self>) -> Self::Result {
        let totp = self.totp();
        let recovery = msg.recovery_code.as_deref().map(|c| self.recovery_hash(c));
        let policy = self.dir.config.policy;
        let key = self.dir.key.clone();
        let subject = self.subject();
        self.second_factor(&msg.origin, |s, _, now| {
            s.mfa_answer(msg.jti, totp.as_ref(), msg.code.as_deref(), recovery, now)?;
            let login = (LoginMethod::SecondFactor, &msg.origin);
            let opened = s.open_session(&key, &policy, login, now)?;
            Ok(Opened::new(opened, subject, now))
        })
    }
}

impl Handler<ChangePassword> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: ChangePassword, _: &mut Context<Self>) -> Self::Result {
        self.apply(|s, _, now| {
            s.change_password(msg.hash, msg.current, msg.revoke_others);
            s.record(EventKind::PasswordChanged, &msg.origin, None, now);
            Ok(())
        })
    }
}

impl Handler<RequestPasswordReset> for UserActor {
    type Result = AtomicResponse<Self, Reply<bool>>;

    fn handle(&mut self, _: RequestPasswordReset, _: &mut Context<Self>) -> Self::Result {
        let policy: CodePolicy = self.dir.config.reset_codes;
        self.issue_code(Purpose::PasswordReset, |s, hash, now| {
            let issued = s.request_password_reset(hash, &policy, now);
            let to = issued.then(|| (Channel::Email, s.email.clone()));
            Ok((to, issued))
        })
    }
}

impl Handler<ResetPassword> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: ResetPassword, _: &mut Context<Self>) -> Self::Result {
        let hash = self.code_hash(Purpose::PasswordReset.as_str(), &msg.code);
        self.apply(|s, _, now| {
            s.reset_password(&hash, msg.hash, now)?;
            s.record(EventKind::PasswordReset, &msg.origin, None, now);
            Ok(())
        })
    }
}

impl Handler<RequestEmailCode> for UserActor {
    type Result = AtomicResponse<Self, Reply<CodeSent>>;

    fn handle(&mut self, _: RequestEmailCode, _: &mut Context<Self>) -> Self::Result {
        let policy: CodePolicy = self.dir.config.email_codes;
        self.issue_code(Purpose::VerifyEmail, |s, hash, now| {
            let to = s.request_email_code(hash, &policy, now)?;
            let sent = CodeSent {
                destination: delivery::mask_email(&to),
                expires_in: policy.ttl,
                resend_after: policy.resend,
            };
            Ok((Some((Channel::Email, to)), sent))
        })
    }
}

impl Handler<ConfirmEmail> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: ConfirmEmail, _: &mut Context<Self>) -> Self::Result {
        let hash = self.code_hash(Purpose::VerifyEmail.as_str(), &msg.code);
        self.apply(|s, _, now| s.confirm_email(&hash, now))
    }
}

impl Handler<RequestEmailChange> for UserActor {
    type Result = AtomicResponse<Self, Reply<CodeSent>>;

    fn handle(&mut self, msg: RequestEmailChange, _: &mut Context<Self>) -> Self::Result {
        let policy: CodePolicy = self.dir.config.email_codes;
        self.issue_code(Purpose::ChangeEmail, |s, hash, now| {
            let to = s.request_email_change(&msg.new_email, hash, &policy, now)?;
            let sent = CodeSent {
                destination: delivery::mask_email(&to),
                expires_in: policy.ttl,
                resend_after: policy.resend,
            };
            Ok((Some((Channel::Email, to)), sent))
        })
    }
}

impl Handler<ConfirmEmailChange> for UserActor {
    type Result = Reply<EmailMoved>;

    /// The new address is claimed in the same write as the snapshot; if another user claimed it
    /// first, the write is refused and the answer is `email_taken`, with nothing changed.
    fn handle(&mut self, msg: ConfirmEmailChange, _: &mut Context<Self>) -> Self::Result {
        let hash = self.code_hash(Purpose::ChangeEmail.as_str(), &msg.code);
        let decision = self.decide(|s, index, now| {
            let moved = s.confirm_email_change(&hash, now)?;
            s.record(EventKind::EmailChanged, &msg.origin, None, now);
            index.push(IndexChange::EmailMove {
                from: moved.old_key.clone(),
                to: moved.new_key.clone(),
            });
            Ok(moved)
        })?;
        match self.commit(decision) {
            Err(ActorError::Store(StoreError::EmailTaken)) => {
                self.unchanged(Err(DomainError::EmailTaken))
            }
            other => other,
        }
    }
}
