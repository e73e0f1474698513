//! Crash safety: the real binary on one data dir, killed with SIGKILL at random moments while a
//! mixed workload is in flight, then restarted, round after round. Only acknowledged (2xx)
//! results are recorded, and after every restart each of them is checked:
//!
//! - every registered user logs in, and the email index leads to the same user id;
//! - the latest acknowledged refresh token of every live chain refreshes (200), and its new
//!   access token works;
//! - sessions logged out stay logged out (their refresh tokens 401, their access tokens 401);
//! - rotated-away tokens answer 401: on a dead chain `invalid_refresh_token`; on a live chain
//!   (sacrificed on purpose) `refresh_token_reused`, after which the chain stays revoked;
//! - an acknowledged phone change is on the profile; an acknowledged code request is in the
//!   outbox and its code still confirms the phone; a confirmed phone stays verified.
//!
//! A change whose request was in flight at the kill may or may not have happened: a refresh in
//! flight leaves either the old token good (200) or the family revoked by our replay of it
//! (`refresh_token_reused`); a logout in flight leaves the session live or gone; a registration
//! in flight leaves the user registered or unknown. Either is accepted, and whichever is found
//! becomes the acknowledged state from then on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Client, RequestBuilder, Response};
use serde_json::{json, Value};

use crate::helpers::*;

const ROUNDS: usize = 30;
const WORKERS: usize = 4;
const ENV: &[(&str, &str)] = &[("BP_AUTH__RATE_LIMIT__ENABLED", "false")];

#[derive(Debug, Clone, PartialEq)]
enum Code {
    /// No code request made (or none acknowledged that we can still check).
    None,
    /// A code request answered 200.
    Acked,
    /// The code from the outbox confirmed the phone (200).
    Verified,
}

#[derive(Debug, Clone)]
struct User {
    email: String,
    id: String,
    /// The phone an acknowledged change set.
    phone: Option<String>,
    /// A phone change that was in flight at the kill.
    phone_in_flight: Option<String>,
    code: Code,
    /// The phone workload has been run for this user (once per user).
    phone_done: bool,
    /// Found missing (a violation already counted): no longer used or checked.
    lost: bool,
}

impl User {
    /// A user found registered, with nothing else known yet.
    fn new(email: String, id: &Value) -> Self {
        Self {
            email,
            id: id.as_str().unwrap_or_default().to_string(),
            phone: None,
            phone_in_flight: None,
            code: Code::None,
            phone_done: false,
            lost: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ChainState {
    Live,
    /// A refresh of `latest` was in flight at the kill.
    RefreshInFlight,
    /// A logout of the chain was in flight at the kill.
    LogoutInFlight,
    /// Logged out (204).
    LoggedOut,
    /// Revoked by a detected reuse (401 `refresh_token_reused`).
    Revoked,
    /// A definitive answer contradicted the model (already counted): no longer checked.
    Broken,
}

/// One session's refresh chain, as the client saw it.
#[derive(Debug, Clone)]
struct Chain {
    user: usize,
    latest: String,
    access: String,
    /// Acknowledged, rotated-away tokens, oldest first.
    old: Vec<String>,
    state: ChainState,
    busy: bool,
}

#[derive(Default)]
struct Model {
    users: Vec<User>,
    /// Registrations in flight at the kill: (email).
    maybe_registered: Vec<String>,
    chains: Vec<Chain>,
    violations: Vec<String>,
    acked: Acked,
}

#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    registrations: usize,
    logins: usize,
    refreshes: usize,
    logouts: usize,
    phone_changes: usize,
    code_requests: usize,
    in_flight_at_kill: usize,
}

type Shared = Arc<Mutex<Model>>;

fn with<R>(m: &Shared, f: impl FnOnce(&mut Model) -> R) -> R {
    let mut guard = m.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn answer(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends `req`: its answer, or status 0 and the error when none came.
async fn answer_or_error(req: RequestBuilder) -> (u16, Value) {
    match req.send().await {
        Ok(res) => answer(res).await,
        Err(e) => (0, json!(e.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// The workload.
// ---------------------------------------------------------------------------------------------

struct Worker {
    client: Client,
    base: String,
    model: Shared,
    killed: Arc<AtomicBool>,
    rng: StdRng,
}

impl Worker {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn violation(&self, what: String) {
        with(&self.model, |m| m.violations.push(what));
    }

    /// Sends `req`: its answer, or `None` when it got none (the server was killed), after
    /// counting it as in flight at the kill and applying `in_flight` to the model.
    async fn send(
        &self,
        req: RequestBuilder,
        in_flight: impl FnOnce(&mut Model),
    ) -> Option<(u16, Value)> {
        match req.send().await {
            Ok(res) => Some(answer(res).await),
            Err(_) => {
                with(&self.model, |m| {
                    m.acked.in_flight_at_kill += 1;
                    in_flight(m);
                });
                None
            }
        }
    }

    async fn run(mut self) {
        while !self.killed.load(Ordering::SeqCst) {
            let roll = self.rng.gen_range(0..100);
            let went_on = match roll {
                0..=17 => self.register().await,
                18..=37 => self.login().await,
                38..=72 => self.refresh().await,
                73..=84 => self.logout().await,
                _ => self.phone().await,
            };
            if !went_on {
                // The server is gone: this worker is done for the round.
                return;
            }
        }
    }

    /// Each op answers false once a request got no answer (the server was killed).
    async fn register(&mut self) -> bool {
        let email = format!("crash-{}@example.com", uuid::Uuid::now_v7().simple());
        with(&self.model, |m| m.maybe_registered.push(email.clone()));
        let req = self
            .client
            .post(self.url("/api/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}));
        let Some((status, body)) = self.send(req, |_| {}).await else {
            return false;
        };
        with(&self.model, |m| {
            m.maybe_registered.retain(|e| *e != email);
            if status == 201 {
                m.acked.registrations += 1;
                m.users.push(User::new(email.clone(), &body["id"]));
            } else {
                m.violations
                    .push(format!("register {email}: {status} {body}"));
            }
        });
        true
    }

    async fn login(&mut self) -> bool {
        let pick = with(&self.model, |m| {
            let found: Vec<usize> = (0..m.users.len()).filter(|&i| !m.users[i].lost).collect();
            (!found.is_empty()).then(|| {
                let i = found[self.rng.gen_range(0..found.len())];
                (i, m.users[i].email.clone())
            })
        });
        let Some((user, email)) = pick else {
            return true;
        };
        let req = self
            .client
            .post(self.url("/api/auth/token"))
            .form(&[("username", email.as_str()), ("password", PASSWORD)]);
        let Some((status, body)) = self.send(req, |_| {}).await else {
            return false;
        };
        if status == 200 {
            let t = Tokens::from_json(&body);
            with(&self.model, |m| {
                m.acked.logins += 1;
                m.chains.push(Chain {
                    user,
                    latest: t.refresh,
                    access: t.access,
                    old: Vec::new(),
                    state: ChainState::Live,
                    busy: false,
                });
            });
        } else if status == 429 {
            // Other workers had `password.max_in_flight_per_account` logins of this user in
            // flight: a refusal that changed nothing, not a lost change.
        } else {
            self.violation(format!(
                "workload: registered {email} cannot log in: {status} {body}"
            ));
            with(&self.model, |m| m.users[user].lost = true);
        }
        true
    }

    /// Checks out a live chain that no other worker is using.
    fn checkout(&mut self, filter: impl Fn(&Model, &Chain) -> bool) -> Option<usize> {
        with(&self.model, |m| {
            let free: Vec<usize> = (0..m.chains.len())
                .filter(|&i| {
                    let c = &m.chains[i];
                    c.state == ChainState::Live && !c.busy && filter(m, c)
                })
                .collect();
            if free.is_empty() {
                return None;
            }
            let i = free[self.rng.gen_range(0..free.len())];
            m.chains[i].busy = true;
            Some(i)
        })
    }

    async fn refresh(&mut self) -> bool {
        let Some(i) = self.checkout(|_, _| true) else {
            return true;
        };
        let latest = with(&self.model, |m| m.chains[i].latest.clone());
        let req = self
            .client
            .post(self.url("/api/auth/refresh"))
            .json(&json!({"refresh_token": latest}));
        let in_flight = |m: &mut Model| m.chains[i].state = ChainState::RefreshInFlight;
        let Some((status, body)) = self.send(req, in_flight).await else {
            return false;
        };
        with(&self.model, |m| {
            let c = &mut m.chains[i];
            c.busy = false;
            if status == 200 {
                let t = Tokens::from_json(&body);
                c.old.push(std::mem::replace(&mut c.latest, t.refresh));
                c.access = t.access;
                m.acked.refreshes += 1;
            } else {
                c.state = ChainState::Broken;
                m.violations.push(format!(
                    "workload: the latest acknowledged refresh token was refused: {status} {body}"
                ));
            }
        });
        true
    }

    async fn logout(&mut self) -> bool {
        let Some(i) = self.checkout(|_, _| true) else {
            return true;
        };
        let (latest, access) = with(&self.model, |m| {
            (m.chains[i].latest.clone(), m.chains[i].access.clone())
        });
        let req = self
            .client
            .post(self.url("/api/auth/logout"))
            .bearer_auth(&access)
            .json(&json!({"refresh_token": latest}));
        let in_flight = |m: &mut Model| m.chains[i].state = ChainState::LogoutInFlight;
        let Some((status, body)) = self.send(req, in_flight).await else {
            return false;
        };
        with(&self.model, |m| {
            let c = &mut m.chains[i];
            c.busy = false;
            if status == 204 {
                c.state = ChainState::LoggedOut;
                m.acked.logouts += 1;
            } else {
                c.state = ChainState::Broken;
                m.violations
                    .push(format!("workload: logout answered {status} {body}"));
            }
        });
        true
    }

    /// PATCH /me with a new phone, then a code request, for a user that has had neither.
    async fn phone(&mut self) -> bool {
        let Some(i) = self.checkout(|m, c| !m.users[c.user].phone_done) else {
            return true;
        };
        let phone = format!("+4477009{:05}", self.rng.gen_range(0..100_000));
        let (user, access) = with(&self.model, |m| {
            let c = &m.chains[i];
            m.users[c.user].phone_done = true;
            (c.user, c.access.clone())
        });
        let release = |m: &mut Model| m.chains[i].busy = false;
        let req = self
            .client
            .patch(self.url("/api/auth/me"))
            .bearer_auth(&access)
            .json(&json!({"phone": phone}));
        let in_flight = |m: &mut Model| {
            m.users[user].phone_in_flight = Some(phone.clone());
            release(m);
        };
        let Some((status, body)) = self.send(req, in_flight).await else {
            return false;
        };
        if status != 200 || body["phone"] != json!(phone) {
            self.violation(format!("workload: PATCH /me phone: {status} {body}"));
            with(&self.model, release);
            return true;
        }
        with(&self.model, |m| {
            m.acked.phone_changes += 1;
            m.users[user].phone = Some(phone.clone());
        });
        let req = self
            .client
            .post(self.url("/api/auth/verify-phone/request"))
            .bearer_auth(&access);
        let Some((status, body)) = self.send(req, release).await else {
            return false;
        };
        with(&self.model, |m| {
            release(m);
            if status == 200 {
                m.acked.code_requests += 1;
                m.users[user].code = Code::Acked;
            } else {
                m.violations.push(format!(
                    "workload: first code request answered {status} {body}"
                ));
            }
        });
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Verification after a restart.
// ---------------------------------------------------------------------------------------------

/// The newest verify_phone code the outbox holds for `user_id`.
fn outbox_code(data_dir: &Path, user_id: &str) -> Option<String> {
    let text = std::fs::read_to_string(outbox_path(data_dir)).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["user_id"] == user_id && v["purpose"] == "verify_phone")
        .filter_map(|v| v["code"].as_str().map(str::to_string))
        .next_back()
}

async fn login(client: &Client, base: &str, email: &str) -> (u16, Value) {
    let req = client
        .post(format!("{base}/api/auth/token"))
        .form(&[("username", email), ("password", PASSWORD)]);
    answer_or_error(req).await
}

async fn refresh(client: &Client, base: &str, token: &str) -> (u16, Value) {
    let req = client
        .post(format!("{base}/api/auth/refresh"))
        .json(&json!({"refresh_token": token}));
    answer_or_error(req).await
}

async fn me(client: &Client, base: &str, access: &str) -> (u16, Value) {
    let req = client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(access);
    answer_or_error(req).await
}

/// Checks one user; returns it updated with what is now known, and the violations found.
async fn verify_user(
    client: &Client,
    base: &str,
    data_dir: &Path,
    mut u: User,
) -> (User, Vec<String>) {
    let mut v = Vec::new();
    if u.lost {
        return (u, v);
    }
    let (status, body) = login(client, base, &u.email).await;
    if status != 200 {
        v.push(format!(
            "registered {} cannot log in: {status} {body}",
            u.email
        ));
        u.lost = true;
        return (u, v);
    }
    let access = Tokens::from_json(&body).access;
    let (status, profile) = me(client, base, &access).await;
    if status != 200 {
        v.push(format!(
            "/me of {} after login: {status} {profile}",
            u.email
        ));
        return (u, v);
    }
    if profile["id"] != json!(u.id) || profile["email"] != json!(u.email) {
        v.push(format!(
            "the email index of {} leads to {profile}, registered as {}",
            u.email, u.id
        ));
    }
    if let Some(p) = u.phone_in_flight.take() {
        if profile["phone"] == json!(p) {
            u.phone = Some(p);
        } else if profile["phone"] != json!(u.phone) {
            v.push(format!(
                "{}: phone {} is neither the old {:?} nor the in-flight {p}",
                u.email, profile["phone"], u.phone
            ));
        }
    }
    if let Some(p) = &u.phone {
        if profile["phone"] != json!(p) {
            v.push(format!(
                "{}: acknowledged phone {p} lost: {}",
                u.email, profile["phone"]
            ));
        }
    }
    match u.code {
        Code::None => {}
        Code::Verified => {
            if profile["phone_verified"] != json!(true) {
                v.push(format!(
                    "{}: a confirmed phone is no longer verified",
                    u.email
                ));
            }
        }
        Code::Acked => match outbox_code(data_dir, &u.id) {
            None => v.push(format!(
                "{}: an acknowledged code request is not in the outbox",
                u.email
            )),
            Some(code) => {
                let req = client
                    .post(format!("{base}/api/auth/verify-phone/confirm"))
                    .bearer_auth(&access)
                    .json(&json!({"code": code}));
                let (status, body) = answer_or_error(req).await;
                if status == 200 && body["phone_verified"] == json!(true) {
                    u.code = Code::Verified;
                } else {
                    v.push(format!(
                        "{}: the acknowledged code no longer confirms: {status} {body}",
                        u.email
                    ));
                    u.code = Code::None;
                }
            }
        },
    }
    (u, v)
}

fn is_401(status: u16, body: &Value, codes: &[&str]) -> bool {
    status == 401 && codes.iter().any(|c| body["code"] == *c)
}

/// Checks one chain; returns it updated and the violations found.
async fn verify_chain(client: &Client, base: &str, mut c: Chain) -> (Chain, Vec<String>) {
    let mut v = Vec::new();
    c.busy = false;
    match c.state {
        ChainState::Live | ChainState::RefreshInFlight | ChainState::LogoutInFlight => {
            let (status, body) = refresh(client, base, &c.latest).await;
            match (c.state, status) {
                (_, 200) => {
                    let t = Tokens::from_json(&body);
                    c.old.push(std::mem::replace(&mut c.latest, t.refresh));
                    c.access = t.access;
                    c.state = ChainState::Live;
                    let (s, b) = me(client, base, &c.access).await;
                    if s != 200 {
                        v.push(format!("a live chain's new access token: {s} {b}"));
                    }
                }
                (ChainState::RefreshInFlight, _)
                    if is_401(status, &body, &["refresh_token_reused"]) =>
                {
                    // The in-flight refresh had been applied; replaying its token revoked it.
                    c.state = ChainState::Revoked;
                }
                (ChainState::LogoutInFlight, _)
                    if is_401(status, &body, &["invalid_refresh_token"]) =>
                {
                    c.state = ChainState::LoggedOut;
                }
                (state, _) => {
                    v.push(format!(
                        "the latest acknowledged refresh token of a {state:?} chain: {status} {body}"
                    ));
                    c.state = ChainState::Broken;
                }
            }
        }
        ChainState::LoggedOut | ChainState::Revoked => {
            let (status, body) = refresh(client, base, &c.latest).await;
            if !is_401(status, &body, &["invalid_refresh_token"]) {
                v.push(format!(
                    "a {:?} chain's latest refresh token: {status} {body}",
                    c.state
                ));
            }
            let (status, body) = me(client, base, &c.access).await;
            if !is_401(status, &body, &["session_revoked", "token_expired"]) {
                v.push(format!(
                    "a {:?} chain's access token: {status} {body}",
                    c.state
                ));
            }
            for old in &c.old {
                let (status, body) = refresh(client, base, old).await;
                if !is_401(status, &body, &["invalid_refresh_token"]) {
                    v.push(format!(
                        "a rotated-away token of a {:?} chain: {status} {body}",
                        c.state
                    ));
                }
            }
        }
        ChainState::Broken => {}
    }
    (c, v)
}

/// Presents a rotated-away token of a live chain: reuse, and the chain is revoked for good.
async fn sacrifice(client: &Client, base: &str, c: &mut Chain, rng: &mut StdRng) -> Vec<String> {
    let mut v = Vec::new();
    let old = c.old[rng.gen_range(0..c.old.len())].clone();
    let (status, body) = refresh(client, base, &old).await;
    if !is_401(status, &body, &["refresh_token_reused"]) {
        v.push(format!(
            "a rotated-away token of a live chain: {status} {body}"
        ));
    }
    let (status, body) = refresh(client, base, &c.latest).await;
    if !is_401(status, &body, &["invalid_refresh_token"]) {
        v.push(format!("the latest token after reuse: {status} {body}"));
    }
    c.state = ChainState::Revoked;
    v
}

async fn verify(base: &str, data_dir: &Path, model: &Shared, rng: &mut StdRng) -> usize {
    let client = http();
    let (users, maybe, chains) = with(model, |m| {
        (
            std::mem::take(&mut m.users),
            std::mem::take(&mut m.maybe_registered),
            std::mem::take(&mut m.chains),
        )
    });
    let mut violations = Vec::new();
    let mut checks = 0;

    // Registrations in flight: either registered or not.
    let mut users = users;
    for email in maybe {
        checks += 1;
        let (status, body) = login(&client, base, &email).await;
        match status {
            200 => {
                let access = Tokens::from_json(&body).access;
                let (_, profile) = me(&client, base, &access).await;
                users.push(User::new(email, &profile["id"]));
            }
            401 => {}
            _ => violations.push(format!(
                "login of an in-flight registration: {status} {body}"
            )),
        }
    }

    checks += users.len();
    let checked: Vec<(User, Vec<String>)> = stream::iter(users)
        .map(|u| verify_user(&client, base, data_dir, u))
        .buffered(4)
        .collect()
        .await;
    let mut users = Vec::new();
    for (u, v) in checked {
        users.push(u);
        violations.extend(v);
    }

    checks += chains.len();
    let checked: Vec<(Chain, Vec<String>)> = stream::iter(chains)
        .map(|c| verify_chain(&client, base, c))
        .buffered(8)
        .collect()
        .await;
    let mut chains = Vec::new();
    for (c, v) in checked {
        chains.push(c);
        violations.extend(v);
    }

    // Sacrifice up to two live chains to check their rotated-away tokens.
    for _ in 0..2 {
        let candidates: Vec<usize> = (0..chains.len())
            .filter(|&i| chains[i].state == ChainState::Live && !chains[i].old.is_empty())
            .collect();
        if candidates.is_empty() {
            break;
        }
        let i = candidates[rng.gen_range(0..candidates.len())];
        checks += 1;
        violations.extend(sacrifice(&client, base, &mut chains[i], rng).await);
    }

    with(model, |m| {
        m.users = users;
        m.chains = chains;
        m.violations.extend(violations);
    });
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_changes_survive_sigkill_at_random_moments() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("crash: seed {seed} (set CRASH_SEED to replay the schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let model: Shared = Arc::new(Mutex::new(Model::default()));
    let started = Instant::now();
    let mut checks = 0;

    for round in 0..ROUNDS {
        let server = ServerProcess::start(dir.path(), ENV).await;
        let base = server.address.clone();
        if round > 0 {
            checks += verify(&base, dir.path(), &model, &mut rng).await;
        }
        let killed = Arc::new(AtomicBool::new(false));
        let client = http();
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                tokio::spawn(
                    Worker {
                        client: client.clone(),
                        base: base.clone(),
                        model: model.clone(),
                        killed: killed.clone(),
                        rng: StdRng::seed_from_u64(rng.gen()),
                    }
                    .run(),
                )
            })
            .collect();
        let pause = rng.gen_range(50..=400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        killed.store(true, Ordering::SeqCst);
        server.kill();
        for w in workers {
            w.await.expect("worker");
        }
    }
    // The last round's changes.
    let server = ServerProcess::start(dir.path(), ENV).await;
    checks += verify(&server.address, dir.path(), &model, &mut rng).await;
    server.terminate();

    let (violations, acked, users, chains) = with(&model, |m| {
        (
            m.violations.clone(),
            m.acked,
            m.users.len(),
            m.chains.iter().fold([0usize; 3], |mut n, c| {
                match c.state {
                    ChainState::Live => n[0] += 1,
                    ChainState::LoggedOut => n[1] += 1,
                    _ => n[2] += 1,
                }
                n
            }),
        )
    });
    println!(
        "crash: {ROUNDS} rounds of SIGKILL in {:.1} s, {checks} checks after restarts, {} violations",
        started.elapsed().as_secs_f64(),
        violations.len()
    );
    println!(
        "crash: acknowledged {} registrations, {} logins, {} refreshes, {} logouts, {} phone changes, \
         {} code requests; {} requests in flight at the kills",
        acked.registrations,
        acked.logins,
        acked.refreshes,
        acked.logouts,
        acked.phone_changes,
        acked.code_requests,
        acked.in_flight_at_kill
    );
    println!(
        "crash: {users} users; chains: {} live, {} logged out, {} revoked or in-flight-decided",
        chains[0], chains[1], chains[2]
    );
    for v in &violations {
        println!("crash: VIOLATION {v}");
    }
    assert!(acked.refreshes > 0 && acked.logouts > 0 && acked.registrations > 0);
    assert_eq!(violations.len(), 0, "violations: {violations:#?}");
}
