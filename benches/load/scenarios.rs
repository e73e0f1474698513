//! The scenarios: their names and descriptions, what they draw on (prebuilt requests, accounts,
//! refresh chains, passkeys), and the request each of them sends next on a connection,
//! including the mixed scenario's draw and the login flood's.

use std::sync::Arc;

use serde_json::json;

use crate::passkey::{self, Authenticator};
use crate::wire::{json_str, Target, Wire};
use crate::{PASSWORD, PASSWORD_ALT};

/// A scenario: one kind of operation, repeated on every connection for the scenario's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Healthz,
    MeJwt,
    MeApiKey,
    Entitlements,
    SessionsList,
    Login,
    Register,
    PasswordChange,
    PasskeyLogin,
    Refresh,
    RefreshPeriodic,
    Mixed,
    MeUnderLoginFlood,
    Argon2Raw,
    /// Scale runs only (`scale.rs`): `/me` of users not touched since the server started, each
    /// once, from [`Slot::queue`].
    MeCold,
    /// Scale runs only: the first refresh of users not touched since the start, each once.
    RefreshCold,
}

impl Kind {
    /// In the order they run and are reported.
    pub(crate) const ALL: [Kind; 14] = [
        Kind::Healthz,
        Kind::MeJwt,
        Kind::MeApiKey,
        Kind::Entitlements,
        Kind::SessionsList,
        Kind::Login,
        Kind::Register,
        Kind::PasswordChange,
        Kind::PasskeyLogin,
        Kind::Refresh,
        Kind::RefreshPeriodic,
        Kind::Mixed,
        Kind::MeUnderLoginFlood,
        Kind::Argon2Raw,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Healthz => "healthz",
            Kind::MeJwt => "me-jwt",
            Kind::MeApiKey => "me-apikey",
            Kind::Entitlements => "entitlements",
            Kind::SessionsList => "sessions-list",
            Kind::Login => "login",
            Kind::Register => "register",
            Kind::PasswordChange => "password-change",
            Kind::PasskeyLogin => "passkey-login",
            Kind::Refresh => "refresh",
            Kind::RefreshPeriodic => "refresh-periodic",
            Kind::Mixed => "mixed",
            Kind::MeUnderLoginFlood => "me-under-login-flood",
            Kind::Argon2Raw => "argon2-raw",
            Kind::MeCold => "me-cold",
            Kind::RefreshCold => "refresh-cold",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// What one operation is, for the table's notes.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Kind::Healthz => "GET /healthz (the floor: routing, middleware, JSON)",
            Kind::MeJwt => "GET /api/auth/me, bearer access tokens from setup logins",
            Kind::MeApiKey => "GET /api/auth/me, X-API-Key",
            Kind::Entitlements => "GET /api/auth/me/entitlements, bearer",
            Kind::SessionsList => "GET /api/auth/sessions, bearer",
            Kind::Login => "POST /api/auth/token (form), argon2id verify + durable session",
            Kind::Register => "POST /api/auth/register, argon2id hash + durable create",
            Kind::PasswordChange => {
                "POST /api/auth/password/change, one account per connection: argon2id verify + \
                 hash (two hashes) + durable write"
            }
            Kind::PasskeyLogin => {
                "passkeys/login/start {email} + login/finish with a software authenticator's \
                 assertion (two requests an operation, ECDSA P-256 signed by the client)"
            }
            Kind::Refresh => "POST /api/auth/refresh, one chain per connection, flush durability",
            Kind::RefreshPeriodic => "the same on a second server with periodic durability",
            Kind::Mixed => "~90% /me, ~8% refresh, ~2% login",
            Kind::MeUnderLoginFlood => {
                "GET /api/auth/me (as me-jwt) while as many more connections send wrong-password \
                 logins; only /me is measured"
            }
            Kind::Argon2Raw => "argon2id hashes, one thread per core, no HTTP",
            Kind::MeCold => "GET /api/auth/me of a user untouched since the start (actor loaded)",
            Kind::RefreshCold => "POST /api/auth/refresh, first of a user since the start",
        }
    }

    /// The argon2id hashes each operation runs (0 for those the raw hash rate does not bound).
    pub(crate) fn hashes(self) -> u32 {
        match self {
            Kind::Login | Kind::Register => 1,
            Kind::PasswordChange => 2,
            _ => 0,
        }
    }
}

/// Requests that never change, built once per target.
pub(crate) struct Prebuilt {
    pub(crate) healthz: Vec<u8>,
    /// `GET /me`, one per access token.
    pub(crate) me: Vec<Vec<u8>>,
    pub(crate) entitlements: Vec<Vec<u8>>,
    pub(crate) sessions: Vec<Vec<u8>>,
    /// `GET /me` with each API key.
    pub(crate) me_apikey: Vec<Vec<u8>>,
}

impl Prebuilt {
    pub(crate) fn new(t: &Target, jwts: &[String], api_keys: &[String]) -> Self {
        let bearer = |path: &str| -> Vec<Vec<u8>> {
            jwts.iter()
                .map(|j| t.get(path, &[("Authorization", &format!("Bearer {j}"))]))
                .collect()
        };
        Self {
            healthz: t.get("/healthz", &[]),
            me: bearer("/api/auth/me"),
            entitlements: bearer("/api/auth/me/entitlements"),
            sessions: bearer("/api/auth/sessions"),
            me_apikey: api_keys
                .iter()
                .map(|k| t.get("/api/auth/me", &[("X-API-Key", k)]))
                .collect(),
        }
    }
}

/// What the HTTP scenarios draw on.
pub(crate) struct Pool {
    /// The servers, connections spread over them in turn (`--url` repeated).
    pub(crate) targets: Vec<Arc<Target>>,
    /// Per target, in the same order.
    pub(crate) prebuilt: Vec<Prebuilt>,
    /// Accounts that log in with [`PASSWORD`].
    pub(crate) emails: Vec<String>,
    /// Distinguishes this run's registrations from any earlier run's.
    pub(crate) run_id: String,
    /// The scenarios' connections (the flood's not counted), for [`Conn::own_account`].
    pub(crate) connections: usize,
}

/// A refresh chain: an account's current tokens.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) email: String,
    pub(crate) access: String,
    pub(crate) refresh: String,
}

impl Chain {
    pub(crate) fn of(body: &[u8], email: &str) -> Result<Self, String> {
        let field = |k: &str| {
            json_str(body, k)
                .map(str::to_string)
                .ok_or_else(|| format!("no {k} in {}", String::from_utf8_lossy(body)))
        };
        Ok(Self {
            email: email.to_string(),
            access: field("access_token")?,
            refresh: field("refresh_token")?,
        })
    }
}

/// What a connection keeps from one round of a scenario to the next.
#[derive(Default)]
pub(crate) struct Slot {
    /// Its refresh chain (`refresh`, `mixed`).
    pub(crate) chain: Option<Chain>,
    /// Its account for `password-change`, and whether it has [`PASSWORD_ALT`] now.
    pub(crate) pw: Option<(Chain, bool)>,
    /// Its account with a passkey, and the authenticator holding it (`passkey-login`).
    pub(crate) passkey: Option<(String, Authenticator)>,
    /// Requests to send once each, last first (`me-cold`, `refresh-cold`); the connection
    /// stops when none is left.
    pub(crate) queue: Vec<Vec<u8>>,
}

/// One connection's state inside a scenario.
pub(crate) struct Conn {
    id: usize,
    target: usize,
    pub(crate) wire: Wire,
    rng: u64,
    pub(crate) slot: Slot,
    pub(crate) chain_broken: bool,
    registered: u64,
    /// Random, so that this connection's registrations never repeat an earlier round's emails.
    tag: u32,
    scratch: Vec<u8>,
}

impl Conn {
    /// Connection `id` on target `id % targets`, with a random stream fixed by `id`, so that a
    /// run's request mix is the same from one run to the next.
    pub(crate) fn new(id: usize, pool: &Pool, slot: Slot) -> Self {
        let target = id % pool.targets.len();
        Self {
            id,
            target,
            wire: Wire::new(pool.targets[target].clone()),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            slot,
            chain_broken: false,
            registered: 0,
            tag: u32::from_le_bytes(
                bp_auth::domain::secrets::random_32()[..4]
                    .try_into()
                    .unwrap_or([0; 4]),
            ),
            scratch: Vec::with_capacity(1024),
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick(&mut self, len: usize) -> usize {
        (self.next_u64() % len.max(1) as u64) as usize
    }

    /// A random account of this connection's own stripe of `pool.emails` (every
    /// `connections`-th from its id), so that no two connections log in to one account at once:
    /// more than `password.max_in_flight_per_account` (2) checks of one account answer 429.
    fn own_account(&mut self, pool: &Pool) -> usize {
        let n = pool.emails.len().max(1);
        let stride = pool.connections.clamp(1, n);
        let k = self.pick(n.div_ceil(stride));
        (self.id % stride + k * stride) % n
    }

    fn target(&self) -> &Arc<Target> {
        self.wire.target()
    }
}

/// The form body of a login.
pub(crate) fn login_form(email: &str, password: &str) -> Vec<u8> {
    serde_urlencoded::to_string([("username", email), ("password", password)])
        .unwrap_or_default()
        .into_bytes()
}

/// A password login on `wire`; its tokens.
pub(crate) async fn login(wire: &mut Wire, email: &str, password: &str) -> Result<Chain, String> {
    let req = wire.target().post(
        "/api/auth/token",
        "application/x-www-form-urlencoded",
        &login_form(email, password),
        &[],
    );
    wire.send_2xx(&req).await?;
    Chain::of(wire.body(), email)
}

/// One request (or, for a passkey login, one operation) of scenario `kind` on `conn`.
pub(crate) async fn step(kind: Kind, pool: &Pool, conn: &mut Conn) -> Result<(), String> {
    let pre = &pool.prebuilt[conn.target];
    match kind {
        Kind::Healthz => conn.wire.send_2xx(&pre.healthz).await,
        Kind::MeJwt | Kind::MeUnderLoginFlood => {
            let i = conn.pick(pre.me.len());
            conn.wire.send_2xx(&pre.me[i]).await
        }
        Kind::Entitlements => {
            let i = conn.pick(pre.entitlements.len());
            conn.wire.send_2xx(&pre.entitlements[i]).await
        }
        Kind::SessionsList => {
            let i = conn.pick(pre.sessions.len());
            conn.wire.send_2xx(&pre.sessions[i]).await
        }
        Kind::MeApiKey => {
            let i = conn.pick(pre.me_apikey.len());
            conn.wire.send_2xx(&pre.me_apikey[i]).await
        }
        Kind::Login => {
            let email = &pool.emails[conn.own_account(pool)];
            login(&mut conn.wire, email, PASSWORD).await.map(drop)
        }
        Kind::Register => {
            conn.registered += 1;
            let email = format!(
                "reg-{}-{}-{:08x}-{}@bench.example.com",
                pool.run_id, conn.id, conn.tag, conn.registered
            );
            let body = json!({"email": email, "password": PASSWORD});
            let req = conn.target().post_json("/api/auth/register", &body, None);
            conn.wire.send_2xx(&req).await
        }
        Kind::PasswordChange => password_change(conn).await,
        Kind::PasskeyLogin => passkey_login(conn).await,
        Kind::Refresh | Kind::RefreshPeriodic => refresh(conn).await,
        Kind::Mixed => match conn.next_u64() % 100 {
            0..=89 => {
                let i = conn.pick(pre.me.len());
                conn.wire.send_2xx(&pre.me[i]).await
            }
            90..=97 => refresh(conn).await,
            _ => {
                let email = &pool.emails[conn.own_account(pool)];
                login(&mut conn.wire, email, PASSWORD).await.map(drop)
            }
        },
        Kind::Argon2Raw => Err("argon2-raw is not an HTTP scenario".into()),
        Kind::MeCold | Kind::RefreshCold => match conn.slot.queue.pop() {
            Some(req) => conn.wire.send_2xx(&req).await,
            None => Err("no request left".into()),
        },
    }
}

/// Whether a scenario's requests may be pipelined: GETs that change nothing, each independent
/// of the answer before it.
pub(crate) fn pipelinable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Healthz
            | Kind::MeJwt
            | Kind::MeApiKey
            | Kind::Entitlements
            | Kind::SessionsList
            | Kind::MeUnderLoginFlood
            | Kind::MeCold
    )
}

/// Up to `depth` requests of a [`pipelinable`] scenario in one write; their statuses in
/// `statuses` (fewer than `depth` when a queue runs out).
pub(crate) async fn step_pipelined(
    kind: Kind,
    pool: &Pool,
    conn: &mut Conn,
    depth: usize,
    statuses: &mut Vec<u16>,
) -> Result<(), String> {
    let pre = &pool.prebuilt[conn.target];
    let mut batch = std::mem::take(&mut conn.scratch);
    batch.clear();
    let mut count = 0;
    for _ in 0..depth {
        let list = match kind {
            Kind::Healthz => {
                batch.extend_from_slice(&pre.healthz);
                count += 1;
                continue;
            }
            Kind::MeCold => {
                if let Some(req) = conn.slot.queue.pop() {
                    batch.extend_from_slice(&req);
                    count += 1;
                }
                continue;
            }
            Kind::MeApiKey => &pre.me_apikey,
            Kind::Entitlements => &pre.entitlements,
            Kind::SessionsList => &pre.sessions,
            _ => &pre.me,
        };
        let i = conn.pick(list.len());
        batch.extend_from_slice(&list[i]);
        count += 1;
    }
    let r = if count == 0 {
        statuses.clear();
        Ok(())
    } else {
        conn.wire.send_pipelined(&batch, count, statuses).await
    };
    conn.scratch = batch;
    r
}

/// Whether `conn` has nothing left to send in `kind`.
pub(crate) fn exhausted(kind: Kind, conn: &Conn) -> bool {
    matches!(kind, Kind::MeCold | Kind::RefreshCold) && conn.slot.queue.is_empty()
}

/// A login flood's request: a wrong password for an email that names no account (so no
/// account's limits or history are involved: only the hashing pool). 401 is its right answer,
/// 503 the pool shedding; the status is returned for counting.
pub(crate) async fn flood_login(conn: &mut Conn) -> Result<u16, String> {
    conn.registered += 1;
    let email = format!("flood-{}-{}@bench.example.com", conn.id, conn.registered);
    let req = conn.target().post(
        "/api/auth/token",
        "application/x-www-form-urlencoded",
        &login_form(&email, "bench: a wrong password, on purpose"),
        &[],
    );
    conn.wire.send(&req).await
}

async fn refresh(conn: &mut Conn) -> Result<(), String> {
    let Some(chain) = conn.slot.chain.as_mut() else {
        conn.chain_broken = true;
        return Err("no refresh chain".into());
    };
    // Built into the connection's own buffer: the token changes on every request.
    let buf = &mut conn.scratch;
    buf.clear();
    let body_len = r#"{"refresh_token":""}"#.len() + chain.refresh.len();
    use std::io::Write;
    let _ = write!(
        buf,
        "POST /api/auth/refresh HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {body_len}\r\n\r\n{{\"refresh_token\":\"{}\"}}",
        conn.wire.target().host,
        chain.refresh
    );
    let r = conn.wire.send_2xx(buf).await;
    let next = r.and_then(|()| Chain::of(conn.wire.body(), &chain.email));
    match next {
        Ok(next) => {
            *chain = next;
            Ok(())
        }
        Err(e) => {
            conn.chain_broken = true;
            Err(e)
        }
    }
}

/// Changes the connection's account's password to the other of the two, keeping its sessions.
async fn password_change(conn: &mut Conn) -> Result<(), String> {
    let Some((chain, alt)) = conn.slot.pw.as_mut() else {
        return Err("no account for password-change".into());
    };
    let (from, to) = if *alt {
        (PASSWORD_ALT, PASSWORD)
    } else {
        (PASSWORD, PASSWORD_ALT)
    };
    let body =
        json!({"current_password": from, "new_password": to, "revoke_other_sessions": false});
    let req = conn
        .wire
        .target()
        .post_json("/api/auth/password/change", &body, Some(&chain.access));
    conn.wire.send_2xx(&req).await?;
    *alt = !*alt;
    Ok(())
}

async fn passkey_login(conn: &mut Conn) -> Result<(), String> {
    let Some((email, authenticator)) = conn.slot.passkey.as_mut() else {
        return Err("no passkey for passkey-login".into());
    };
    passkey::login(&mut conn.wire, email, authenticator).await
}
