//! The scenarios: their names and descriptions, what they draw on (tokens, keys, accounts,
//! refresh chains), and the request each of them sends next on a connection, including the
//! mixed scenario's draw.

use reqwest::Client;
use serde_json::json;

use crate::http::{body_2xx, client, login, register, tokens_of, Chain};

/// A scenario: one kind of operation, repeated on every connection for the scenario's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Healthz,
    MeJwt,
    MeApiKey,
    Entitlements,
    Login,
    Register,
    Refresh,
    RefreshPeriodic,
    Mixed,
    Argon2Raw,
}

impl Kind {
    /// In the order they run and are reported.
    pub(crate) const ALL: [Kind; 10] = [
        Kind::Healthz,
        Kind::MeJwt,
        Kind::MeApiKey,
        Kind::Entitlements,
        Kind::Login,
        Kind::Register,
        Kind::Refresh,
        Kind::RefreshPeriodic,
        Kind::Mixed,
        Kind::Argon2Raw,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Healthz => "healthz",
            Kind::MeJwt => "me-jwt",
            Kind::MeApiKey => "me-apikey",
            Kind::Entitlements => "entitlements",
            Kind::Login => "login",
            Kind::Register => "register",
            Kind::Refresh => "refresh",
            Kind::RefreshPeriodic => "refresh-periodic",
            Kind::Mixed => "mixed",
            Kind::Argon2Raw => "argon2-raw",
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
            Kind::Login => "POST /api/auth/token (form), argon2id verify + durable session",
            Kind::Register => "POST /api/auth/register, argon2id hash + durable create",
            Kind::Refresh => "POST /api/auth/refresh, one chain per connection, flush durability",
            Kind::RefreshPeriodic => "the same on a second server with periodic durability",
            Kind::Mixed => "~90% /me, ~8% refresh, ~2% login",
            Kind::Argon2Raw => "argon2id hashes, one thread per core, no HTTP",
        }
    }
}

/// What the HTTP scenarios draw on.
pub(crate) struct Pool {
    pub(crate) base: String,
    /// Access tokens of distinct users, from logins made during setup.
    pub(crate) jwts: Vec<String>,
    pub(crate) api_keys: Vec<String>,
    /// Accounts that log in with [`PASSWORD`](crate::PASSWORD).
    pub(crate) emails: Vec<String>,
    /// Distinguishes this run's registrations from any earlier run's.
    pub(crate) run_id: String,
}

/// One connection's state inside a scenario.
pub(crate) struct Conn {
    id: usize,
    pub(crate) client: Client,
    rng: u64,
    pub(crate) chain: Option<Chain>,
    pub(crate) chain_broken: bool,
    registered: u64,
}

impl Conn {
    /// Connection `id`, with its own client and a random stream fixed by `id`, so that a run's
    /// request mix is the same from one run to the next.
    pub(crate) fn new(id: usize, chain: Option<Chain>) -> Self {
        Self {
            id,
            client: client(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            chain,
            chain_broken: false,
            registered: 0,
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
}

/// One request of scenario `kind` on `conn`.
pub(crate) async fn step(kind: Kind, pool: &Pool, conn: &mut Conn) -> Result<(), String> {
    let base = &pool.base;
    match kind {
        Kind::Healthz => body_2xx(conn.client.get(format!("{base}/healthz")).send().await)
            .await
            .map(drop),
        Kind::MeJwt => me_jwt(pool, conn, "/api/auth/me").await,
        Kind::Entitlements => me_jwt(pool, conn, "/api/auth/me/entitlements").await,
        Kind::MeApiKey => {
            let key = &pool.api_keys[conn.pick(pool.api_keys.len())];
            let res = conn
                .client
                .get(format!("{base}/api/auth/me"))
                .header("x-api-key", key)
                .send()
                .await;
            body_2xx(res).await.map(drop)
        }
        Kind::Login => {
            let email = &pool.emails[conn.pick(pool.emails.len())];
            login(&conn.client, base, email).await.map(drop)
        }
        Kind::Register => {
            conn.registered += 1;
            let email = format!(
                "reg-{}-{}-{}@bench.example.com",
                pool.run_id, conn.id, conn.registered
            );
            register(&conn.client, base, &email).await
        }
        Kind::Refresh | Kind::RefreshPeriodic => refresh(pool, conn).await,
        Kind::Mixed => match conn.next_u64() % 100 {
            0..=89 => me_jwt(pool, conn, "/api/auth/me").await,
            90..=97 => refresh(pool, conn).await,
            _ => {
                let email = &pool.emails[conn.pick(pool.emails.len())];
                login(&conn.client, base, email).await.map(drop)
            }
        },
        Kind::Argon2Raw => Err("argon2-raw is not an HTTP scenario".into()),
    }
}

async fn me_jwt(pool: &Pool, conn: &mut Conn, path: &str) -> Result<(), String> {
    let token = &pool.jwts[conn.pick(pool.jwts.len())];
    let res = conn
        .client
        .get(format!("{}{path}", pool.base))
        .bearer_auth(token)
        .send()
        .await;
    body_2xx(res).await.map(drop)
}

async fn refresh(pool: &Pool, conn: &mut Conn) -> Result<(), String> {
    let Some(chain) = conn.chain.as_mut() else {
        conn.chain_broken = true;
        return Err("no refresh chain".into());
    };
    let res = conn
        .client
        .post(format!("{}/api/auth/refresh", pool.base))
        .json(&json!({"refresh_token": chain.refresh}))
        .send()
        .await;
    let next = match body_2xx(res).await {
        Ok(body) => tokens_of(body.as_ref(), &chain.email),
        Err(e) => Err(e),
    };
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
