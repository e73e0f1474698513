//! Seeding accounts straight through the store, before a server opens the data dir: thousands
//! of accounts in a second, where registering them over HTTP would cost one argon2id hash each.

use std::time::{Duration, Instant};

use bp_auth::config::Config;
use bp_auth::domain::apikey::ApiKey;
use bp_auth::domain::credentials::Email;
use bp_auth::domain::ids::UserId;
use bp_auth::domain::user::{NewUser, UserState};
use bp_auth::store::{Created, IndexChange};

use crate::progress::counter_bar;
use crate::Res;

/// Accounts written straight to the store.
pub(crate) struct Seeded {
    pub(crate) emails: Vec<String>,
    pub(crate) ids: Vec<UserId>,
    pub(crate) api_keys: Vec<String>,
}

/// Seeds `n` accounts under `<data_dir>/db` with the one PHC string, optionally each with an
/// API key (the key is in the snapshot and in the key index, as `GET /api-key` would leave it).
pub(crate) fn seed(
    config: &Config,
    phc: &str,
    prefix: &str,
    n: usize,
    with_keys: bool,
) -> Res<(Seeded, Duration)> {
    let start = Instant::now();
    let store = bp_auth::store::open(&config.server.data_dir, &config.storage)?;
    let pb = counter_bar(n as u64, format!("seeding {prefix} accounts"));
    let now = bp_auth::clock::now();
    let mut seeded = Seeded {
        emails: Vec::with_capacity(n),
        ids: Vec::with_capacity(n),
        api_keys: Vec::new(),
    };
    for i in 0..n {
        let email = format!("{prefix}-{i}@bench.example.com");
        let mut user = UserState::register(
            NewUser {
                email: Email::parse(&email).map_err(|e| format!("{email}: {e:?}"))?,
                full_name: None,
                phone: None,
                password_hash: phc.to_string(),
            },
            now,
        );
        let key = with_keys.then(|| ApiKey::generate(now));
        if let Some(k) = &key {
            user.api_key = Some(k.record.clone());
        }
        match store.create_user(&user)? {
            Created::Yes(_) => {}
            Created::EmailTaken | Created::IdentityTaken => {
                return Err(format!("{email} seeded twice").into())
            }
        }
        if let Some(k) = key {
            store.save_user(&user, &[IndexChange::ApiKeyPut(k.record.digest)])?;
            seeded.api_keys.push(k.secret);
        }
        seeded.emails.push(email);
        seeded.ids.push(user.id);
        if i % 256 == 0 {
            pb.set_position(i as u64);
        }
    }
    pb.finish_and_clear();
    // Flushes, and (once dropped) releases the data dir for the server.
    store.close();
    drop(store);
    Ok((seeded, start.elapsed()))
}
