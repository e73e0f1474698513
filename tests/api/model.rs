//! A proptest state machine over one user's sessions, driving the pure domain API
//! (`UserState::{open_session, refresh, logout}`) with a fixed server key and an advancing
//! clock, and checking every verdict against a deliberately simple model: a list of sessions,
//! each either live (with its current generation and its two expiry times) or gone.
//!
//! The model's rules, as the contract states them:
//! - refreshing a live session's current token succeeds and issues the next generation;
//! - an older genuine token is reuse: `RefreshTokenReused`, and the session is gone — except a
//!   retry of the token just rotated inside `refresh.reuse_grace_seconds`, which is answered
//!   with the same successor;
//! - any token of a gone (revoked or expired) session, and any forged token, is
//!   `InvalidRefreshToken` and changes nothing;
//! - logout revokes the session named by the access token's `sid` and the family of a genuine
//!   refresh token, and nothing else; `everywhere` revokes them all;
//! - a login while `MAX_SESSIONS` are live ends the one least recently logged in or rotated.

use bp_auth::domain::credentials::Email;
use bp_auth::domain::events::Origin;
use bp_auth::domain::ids::SessionId;
use bp_auth::domain::secrets::{RefreshToken, ServerKey};
use bp_auth::domain::sessions::{LoginMethod, RefreshOutcome, SessionPolicy};
use bp_auth::domain::time::Timestamp;
use bp_auth::domain::user::{NewUser, UserState};
use bp_auth::domain::DomainError;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const T0: Timestamp = Timestamp(1_800_000_000);
const REFRESH_TTL: u64 = 1_000;
const SESSION_MAX: u64 = 3_000;
/// Small, so that the generated sequences reach it.
const MAX_SESSIONS: usize = 4;

/// How a logout names what to end.
#[derive(Debug, Clone)]
enum LogoutBy {
    /// The access token's `sid` only.
    Sid(usize),
    /// A refresh token of `.0`, `.1` generations back from its current one (clamped).
    Refresh(usize, usize),
    /// A refresh token of `.0` with one secret bit flipped: not genuine, revokes nothing.
    ForgedRefresh(usize, usize),
    /// The access token of one session and a refresh token of another.
    SidAndRefresh(usize, usize),
    /// `everywhere: true`.
    Everywhere,
}

#[derive(Debug, Clone)]
enum Op {
    Login,
    /// The current token of session `pick`.
    RefreshCurrent(usize),
    /// The token just rotated away (a replay, within or outside the grace period).
    Reuse(usize),
    /// A random older token of session `pick`, `.1` generations back (clamped).
    RefreshOld(usize, usize),
    /// A token of session `pick` with bit `.2` of secret byte `.1` flipped.
    RefreshForged(usize, usize, u8),
    Logout(LogoutBy),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        3 => Just(Op::Login),
        6 => pick.prop_map(Op::RefreshCurrent),
        2 => pick.prop_map(Op::Reuse),
        2 => (pick, any::<usize>()).prop_map(|(p, b)| Op::RefreshOld(p, b)),
        1 => (pick, 0usize..32, 0u8..8).prop_map(|(p, i, b)| Op::RefreshForged(p, i, b)),
        1 => pick.prop_map(|p| Op::Logout(LogoutBy::Sid(p))),
        1 => (pick, any::<usize>()).prop_map(|(p, b)| Op::Logout(LogoutBy::Refresh(p, b))),
        1 => (pick, 0usize..32).prop_map(|(p, i)| Op::Logout(LogoutBy::ForgedRefresh(p, i))),
        1 => (pick, pick).prop_map(|(a, b)| Op::Logout(LogoutBy::SidAndRefresh(a, b))),
        1 => Just(Op::Logout(LogoutBy::Everywhere)),
        3 => prop_oneof![0u64..40, 0u64..700].prop_map(Op::Wait),
    ]
}

/// One session as the model sees it.
#[derive(Debug, Clone)]
struct ModelSession {
    sid: SessionId,
    revoked: bool,
    generation: u32,
    refresh_expires_at: Timestamp,
    max_expires_at: Timestamp,
    rotated_at: Timestamp,
    /// The login or last successful refresh (a grace replay too): what the cap's LRU uses.
    last_used_at: Timestamp,
}

impl ModelSession {
    fn live(&self, now: Timestamp) -> bool {
        !self.revoked && now < self.refresh_expires_at && now < self.max_expires_at
    }
}

/// The model, plus every refresh token the real state ever issued (by session, by generation)
/// so that old tokens can be presented again.
struct Harness {
    key: ServerKey,
    policy: SessionPolicy,
    now: Timestamp,
    state: UserState,
    model: Vec<ModelSession>,
    issued: Vec<Vec<RefreshToken>>,
}

impl Harness {
    fn new(grace: u64) -> Self {
        let email = Email::parse("model@example.com").expect("email");
        let state = UserState::register(
            NewUser {
                email,
                full_name: None,
                phone: None,
                password_hash: "$argon2id$not-used-here".into(),
            },
            T0,
        );
        Self {
            key: ServerKey::from_bytes([42; 32]),
            policy: SessionPolicy {
                refresh_ttl: REFRESH_TTL,
                session_max: SESSION_MAX,
                rotation_enabled: true,
                reuse_grace: grace,
                max_sessions: MAX_SESSIONS,
            },
            now: T0,
            state,
            model: Vec::new(),
            issued: Vec::new(),
        }
    }

    fn pick(&self, p: usize) -> Option<usize> {
        (!self.model.is_empty()).then(|| p % self.model.len())
    }

    fn forged(&self, i: usize, byte: usize, bit: u8) -> RefreshToken {
        let current = self.issued[i].last().expect("a token").clone();
        let mut t = current;
        t.secret[byte % 32] ^= 1 << (bit % 8);
        t
    }

    /// The token `back` generations before session `i`'s latest one (clamped to generation 0).
    fn older(&self, i: usize, back: usize) -> RefreshToken {
        let tokens = &self.issued[i];
        let last = tokens.len() - 1;
        tokens[last - back.min(last)].clone()
    }

    /// Presents `token` (of model session `i`, or forged) and checks the verdict.
    fn refresh(
        &mut self,
        i: usize,
        token: &RefreshToken,
        forged: bool,
    ) -> Result<(), TestCaseError> {
        let now = self.now;
        let got = self
            .state
            .refresh(token, &self.key, &self.policy, &Origin::default(), now);
        let grace = self.policy.reuse_grace;
        let m = &mut self.model[i];
        if forged || !m.live(now) {
            prop_assert_eq!(
                got.as_ref()
                    .map(|g| g.token.generation)
                    .map_err(Clone::clone),
                Err(DomainError::InvalidRefreshToken),
                "forged or dead session ({:?})",
                m
            );
            return Ok(());
        }
        if token.generation == m.generation {
            let grant =
                got.map_err(|e| TestCaseError::fail(format!("refresh of current: {e:?} ({m:?})")))?;
            prop_assert_eq!(grant.outcome, RefreshOutcome::Rotated);
            prop_assert_eq!(grant.token.generation, m.generation + 1);
            prop_assert_eq!(grant.token.session, m.sid);
            prop_assert!(!self.issued[i].contains(&grant.token), "a fresh secret");
            m.generation += 1;
            m.refresh_expires_at = now.plus(REFRESH_TTL).min(m.max_expires_at);
            m.rotated_at = now;
            m.last_used_at = now;
            prop_assert_eq!(grant.expires_at, m.refresh_expires_at.min(m.max_expires_at));
            self.issued[i].push(grant.token);
            return Ok(());
        }
        prop_assert!(token.generation < m.generation);
        let in_grace = grace > 0
            && token.generation + 1 == m.generation
            && now.0 <= m.rotated_at.0 + grace as i64;
        if in_grace {
            let grant = got.map_err(|e| TestCaseError::fail(format!("retry in grace: {e:?}")))?;
            prop_assert_eq!(grant.outcome, RefreshOutcome::GraceReplay);
            prop_assert_eq!(
                &grant.token,
                self.issued[i].last().expect("current"),
                "the same successor"
            );
            m.last_used_at = now;
            return Ok(());
        }
        prop_assert_eq!(
            got.map(|g| g.token.generation),
            Err(DomainError::RefreshTokenReused),
            "an older genuine token is reuse"
        );
        m.revoked = true;
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Login => {
                let now = self.now;
                let live = self.model.iter().filter(|m| m.live(now));
                if live.clone().count() >= MAX_SESSIONS {
                    // The first of the least recently used, in login order, as the state keeps it.
                    let lru = live.min_by_key(|m| m.last_used_at).map(|m| m.sid);
                    for m in &mut self.model {
                        if Some(m.sid) == lru {
                            m.revoked = true;
                        }
                    }
                }
                let (sid, token, expires) = self
                    .state
                    .open_session(
                        &self.key,
                        &self.policy,
                        (LoginMethod::Password, &Origin::default()),
                        self.now,
                    )
                    .map_err(|e| TestCaseError::fail(format!("login: {e:?}")))?;
                prop_assert_eq!(token.generation, 0);
                prop_assert_eq!(token.session, sid);
                prop_assert_eq!(token.user, self.state.id);
                prop_assert!(self.model.iter().all(|m| m.sid != sid), "a new sid");
                prop_assert_eq!(expires, self.now.plus(REFRESH_TTL));
                self.model.push(ModelSession {
                    sid,
                    revoked: false,
                    generation: 0,
                    refresh_expires_at: self.now.plus(REFRESH_TTL),
                    max_expires_at: self.now.plus(SESSION_MAX),
                    rotated_at: self.now,
                    last_used_at: self.now,
                });
                self.issued.push(vec![token]);
            }
            Op::RefreshCurrent(p) => {
                if let Some(i) = self.pick(*p) {
                    let t = self.older(i, 0);
                    self.refresh(i, &t, false)?;
                }
            }
            Op::Reuse(p) => {
                if let Some(i) = self.pick(*p) {
                    let t = self.older(i, 1);
                    self.refresh(i, &t, false)?;
                }
            }
            Op::RefreshOld(p, back) => {
                if let Some(i) = self.pick(*p) {
                    let t = self.older(i, *back % (self.issued[i].len() + 1));
                    self.refresh(i, &t, false)?;
                }
            }
            Op::RefreshForged(p, byte, bit) => {
                if let Some(i) = self.pick(*p) {
                    let t = self.forged(i, *byte, *bit);
                    self.refresh(i, &t, true)?;
                }
            }
            Op::Logout(by) => self.logout(by),
            Op::Wait(secs) => self.now = self.now.plus(*secs),
        }
        self.compare()
    }

    fn logout(&mut self, by: &LogoutBy) {
        let key = &self.key;
        match by {
            LogoutBy::Everywhere => {
                self.state
                    .logout((None, None, true), key, &Origin::default(), self.now);
                self.model.iter_mut().for_each(|m| m.revoked = true);
            }
            LogoutBy::Sid(p) => {
                if let Some(i) = self.pick(*p) {
                    self.state.logout(
                        (Some(self.model[i].sid), None, false),
                        key,
                        &Origin::default(),
                        self.now,
                    );
                    self.model[i].revoked = true;
                }
            }
            LogoutBy::Refresh(p, back) => {
                if let Some(i) = self.pick(*p) {
                    let t = self.older(i, *back % (self.issued[i].len() + 1));
                    self.state
                        .logout((None, Some(&t), false), key, &Origin::default(), self.now);
                    // A genuine token of the family, current or older, ends it.
                    self.model[i].revoked = true;
                }
            }
            LogoutBy::ForgedRefresh(p, byte) => {
                if let Some(i) = self.pick(*p) {
                    let t = self.forged(i, *byte, 0);
                    self.state
                        .logout((None, Some(&t), false), key, &Origin::default(), self.now);
                }
            }
            LogoutBy::SidAndRefresh(a, b) => {
                if let (Some(i), Some(j)) = (self.pick(*a), self.pick(*b)) {
                    let t = self.older(j, 0);
                    self.state.logout(
                        (Some(self.model[i].sid), Some(&t), false),
                        key,
                        &Origin::default(),
                        self.now,
                    );
                    self.model[i].revoked = true;
                    self.model[j].revoked = true;
                }
            }
        }
    }

    /// The real state agrees with the model on which sessions are live and at which generation,
    /// and holds no live session the model does not know.
    fn compare(&self) -> Result<(), TestCaseError> {
        let now = self.now;
        for m in &self.model {
            let real = self.state.session(m.sid, now).map(|s| s.generation);
            let want = m.live(now).then_some(m.generation);
            prop_assert_eq!(real, want, "session {:?} at {:?}", m, now);
        }
        let live_real = self
            .state
            .sessions
            .iter()
            .filter(|s| s.is_live(now))
            .count();
        let live_model = self.model.iter().filter(|m| m.live(now)).count();
        prop_assert_eq!(live_real, live_model, "no phantom sessions");
        Ok(())
    }
}

fn run(grace: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(grace);
    for op in ops {
        h.step(op)?;
    }
    // Whatever happened, every token of a gone session is refused, and every old token of a
    // live session is reuse (or a grace replay).
    for i in 0..h.model.len() {
        if !h.model[i].live(h.now) {
            for t in h.issued[i].clone() {
                h.refresh(i, &t, false)?;
            }
        }
    }
    h.compare()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sessions_follow_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(0, &ops)?;
    }

    #[test]
    fn sessions_follow_the_model_with_a_grace_period(ops in prop::collection::vec(op(), 1..80)) {
        run(30, &ops)?;
    }
}

/// The model's rules on a fixed sequence, so a reader sees them without a generator.
#[test]
fn a_worked_sequence() {
    let mut h = Harness::new(0);
    let ops = [
        Op::Login,
        Op::Login,
        Op::RefreshCurrent(0),
        Op::RefreshCurrent(0),
        Op::RefreshCurrent(1),
        Op::Reuse(0), // gen 1 of session 0 again: reuse, session 0 gone
        Op::RefreshCurrent(0),
        Op::RefreshCurrent(1),               // session 1 unaffected
        Op::Logout(LogoutBy::Refresh(1, 1)), // an old genuine token of session 1 ends it
        Op::RefreshCurrent(1),
        Op::Login,
        Op::Wait(1_001), // past the refresh lifetime
        Op::RefreshCurrent(2),
    ];
    for op in &ops {
        h.step(op).unwrap();
    }
    assert!(h.model.iter().all(|m| !m.live(h.now)));
    assert!(h.state.sessions.iter().all(|s| !s.is_live(h.now)));
}
