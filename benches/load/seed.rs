//! Seeding accounts straight through the store, before a server opens the data dir: thousands
//! of accounts a second (one thread per core), where registering them over HTTP would cost one
//! argon2id hash each.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bp_auth::config::Config;
use bp_auth::domain::apikey::ApiKey;
use bp_auth::domain::credentials::Email;
use bp_auth::domain::events::{EventKind, Origin, KEPT};
use bp_auth::domain::ids::{SessionId, TenantId, UserId};
use bp_auth::domain::secrets::{random_32, ServerKey};
use bp_auth::domain::sessions::{LoginMethod, SessionPolicy};
use bp_auth::domain::time::Timestamp;
use bp_auth::domain::user::{NewUser, UserState};
use bp_auth::store::{Created, IndexChange, Store};

use crate::progress::counter_bar;
use crate::Res;

/// Accounts written straight to the store.
pub(crate) struct Seeded {
    pub(crate) emails: Vec<String>,
    pub(crate) ids: Vec<UserId>,
    pub(crate) api_keys: Vec<String>,
    /// With [`Profile::session`]: each account's tenant and session, in the order of `ids`.
    pub(crate) sessions: Vec<(TenantId, SessionId)>,
}

/// What a seeded account holds besides its profile and password.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Profile {
    /// An API key (in the snapshot and the key index, as `GET /api-key` would leave it).
    pub(crate) api_key: bool,
    /// The state of an account in use for a while: a full security history ([`KEPT`] events,
    /// half of them failures, each with an address and a browser's user agent) and a few
    /// sessions on other devices. Every write of such a user's snapshot carries all of it,
    /// which is what a refresh of a real account costs.
    pub(crate) lived_in: bool,
    /// One session opened with the data dir's own server key, so that its first refresh token
    /// (generation 0) can be derived again later without a login (see `scale.rs`).
    pub(crate) session: bool,
}

/// The email of seeded account `i` of `prefix`: fixed, so that a cached data dir's accounts
/// are known without a list.
pub(crate) fn email(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}@bench.example.com")
}

/// A browser's user agent, as long as real ones are.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36";

/// Fills `user` as [`Profile::lived_in`] says, `now` being the last event.
fn live_in(user: &mut UserState, key: &ServerKey, now: Timestamp) {
    let policy = SessionPolicy {
        refresh_ttl: 30 * 86_400,
        session_max: 90 * 86_400,
        rotation_enabled: true,
        reuse_grace: 0,
        max_sessions: 100,
    };
    let origin = |i: usize| {
        let ip = format!("198.51.100.{}", i % 250 + 1).parse().ok();
        Origin::new(ip, Some(&format!("{USER_AGENT} ({i})")), None)
    };
    // Sessions on three other devices (their tokens are never presented).
    for i in 0..3 {
        let _ = user.open_session(key, &policy, (LoginMethod::Password, &origin(i)), now);
    }
    while user.history.len() < KEPT {
        let i = user.history.len();
        let kind = if i.is_multiple_of(2) {
            EventKind::LoginFailed
        } else {
            EventKind::Logout
        };
        user.record(kind, &origin(i), None, now);
    }
}

/// Seeds `n` accounts of `prefix` under `<data_dir>/db` with the one PHC string.
pub(crate) fn seed(
    config: &Config,
    phc: &str,
    prefix: &str,
    n: usize,
    profile: Profile,
) -> Res<(Seeded, Duration)> {
    let start = Instant::now();
    let store = bp_auth::store::open(&config.server.data_dir, &config.storage)?;
    let pb = counter_bar(n as u64, format!("seeding {prefix} accounts"));
    let now = bp_auth::clock::now();
    let key = if profile.session {
        bp_auth::keys::load_or_create_server_key(&config.server.data_dir)?
    } else {
        ServerKey::from_bytes(random_32())
    };
    // One thread a core, each writing its own stripe of the accounts; the store serialises
    // what it must.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stripes: Vec<Mutex<Vec<(usize, Made)>>> =
        (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for (t, stripe) in stripes.iter().enumerate() {
            let (store, pb, key, failed) = (&store, &pb, &key, &failed);
            scope.spawn(move || {
                let mut out = Vec::with_capacity(n / threads + 1);
                for (k, i) in (t..n).step_by(threads).enumerate() {
                    match seed_one(store.as_ref(), phc, &email(prefix, i), profile, key, now) {
                        Ok(made) => out.push((i, made)),
                        Err(e) => {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                    if k % 256 == 255 {
                        pb.inc(256);
                    }
                }
                *stripe.lock().unwrap_or_else(|p| p.into_inner()) = out;
            });
        }
    });
    pb.finish_and_clear();
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    let mut all: Vec<(usize, Made)> = stripes
        .into_iter()
        .flat_map(|s| s.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    let mut seeded = Seeded {
        emails: Vec::with_capacity(n),
        ids: Vec::with_capacity(n),
        api_keys: Vec::new(),
        sessions: Vec::new(),
    };
    for (i, made) in all {
        seeded.emails.push(email(prefix, i));
        seeded.ids.push(made.id);
        seeded.api_keys.extend(made.api_key);
        seeded.sessions.extend(made.session);
    }
    // Flushes, and (once dropped) releases the data dir for the server; then lets its first
    // start read a snapshot, as after `admin import`, rather than replay the whole bulk load.
    store.close();
    drop(store);
    bp_auth::store::checkpoint(&config.server.data_dir, &config.storage)?;
    Ok((seeded, start.elapsed()))
}

/// What seeding one account made.
struct Made {
    id: UserId,
    api_key: Option<String>,
    session: Option<(TenantId, SessionId)>,
}

/// One account: created (claiming its email), then given its key.
fn seed_one(
    store: &dyn Store,
    phc: &str,
    email: &str,
    profile: Profile,
    key: &ServerKey,
    now: Timestamp,
) -> Result<Made, String> {
    let mut user = UserState::register(
        NewUser {
            email: Email::parse(email).map_err(|e| format!("{email}: {e:?}"))?,
            full_name: None,
            phone: None,
            password_hash: phc.to_string(),
        },
        now,
    );
    if profile.lived_in {
        live_in(&mut user, key, now);
    }
    let session = if profile.session {
        let policy = SessionPolicy {
            refresh_ttl: 30 * 86_400,
            session_max: 30 * 86_400,
            rotation_enabled: true,
            reuse_grace: 0,
            max_sessions: 100,
        };
        let login = (LoginMethod::Password, &Origin::default());
        let (sid, _, _) = user
            .open_session(key, &policy, login, now)
            .map_err(|e| format!("{email}: {e:?}"))?;
        Some((user.tenant.id, sid))
    } else {
        None
    };
    let api_key = profile.api_key.then(|| ApiKey::generate(now));
    if let Some(k) = &api_key {
        user.api_key = Some(k.record.clone());
    }
    match store.create_user(&user).map_err(|e| e.to_string())? {
        Created::Yes(_) => {}
        Created::EmailTaken | Created::IdentityTaken => {
            return Err(format!("{email} seeded twice"))
        }
    }
    if let Some(k) = &api_key {
        store
            .save_user(&user, &[IndexChange::ApiKeyPut(k.record.digest)])
            .map_err(|e| e.to_string())?;
    }
    Ok(Made {
        id: user.id,
        api_key: api_key.map(|k| k.secret),
        session,
    })
}
