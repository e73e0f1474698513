//! Micro-benchmarks of the hot paths (criterion): token signing, verification (full and through
//! the verified-token cache), the snapshot codec, argon2id at the configured parameters, API-key
//! hashing and lookup, one actor hop, refresh attempts against a long-lived session, and the
//! server's side of one password login against one passkey login.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a short run, or a filter such as
//! `-- tokens/`). Figures are per operation, on this machine, with whatever else it is doing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Arbiter, Context, Handler, Message};
use bp_auth::actors::messages::GetApiKey;
use bp_auth::actors::{Directory, DirectoryConfig, PasskeySettings};
use bp_auth::api::verifier::Verifier;
use bp_auth::config::{Config, DeliveryConfig, DeliveryKind, StorageConfig};
use bp_auth::domain::apikey::{self, ApiKey};
use bp_auth::domain::backoff::AttemptRules;
use bp_auth::domain::codes::CodePolicy;
use bp_auth::domain::credentials::Email;
use bp_auth::domain::events::Origin;
use bp_auth::domain::ids::{SessionId, TenantId, UserId};
use bp_auth::domain::password::Hasher;
use bp_auth::domain::secrets::{random_32, DataKey, RefreshToken, ServerKey};
use bp_auth::domain::sessions::{LoginMethod, SessionPolicy};
use bp_auth::domain::time::Timestamp;
use bp_auth::domain::tokens::{KeyPair, Keyring, TYP_ACCESS};
use bp_auth::domain::user::{NewUser, UserState};
use bp_auth::store::sled::SledStore;
use bp_auth::store::{codec, IndexChange, Store};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_util::future::join_all;

fn config() -> Config {
    Config::default_with_plans()
}

fn hasher(config: &Config) -> Hasher {
    let p = &config.password;
    Hasher::new(
        p.argon2_memory_kib,
        p.argon2_iterations,
        p.argon2_parallelism,
    )
    .expect("configured argon2 parameters")
}

fn keyring(config: &Config) -> Keyring {
    let t = &config.tokens;
    Keyring::new(
        KeyPair::from_seed(&random_32()),
        vec![],
        t.issuer.clone(),
        t.audience.clone(),
        t.leeway_seconds,
    )
}

/// A typical desktop browser's request.
fn browser() -> Origin {
    Origin::new(
        "203.0.113.7".parse().ok(),
        Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        None,
    )
}

fn session_policy(config: &Config) -> SessionPolicy {
    SessionPolicy {
        refresh_ttl: config.tokens.refresh_ttl_seconds,
        session_max: config.tokens.session_max_seconds,
        rotation_enabled: config.refresh.rotation_enabled,
        reuse_grace: config.refresh.reuse_grace_seconds,
        max_sessions: config.tokens.max_sessions_per_user,
    }
}

/// A user as a busy account looks: a name, a phone, three live sessions (laptop, phone,
/// tablet), an API key that has been used, and a real argon2id PHC string.
fn realistic_user(config: &Config, now: Timestamp) -> UserState {
    let h = hasher(config);
    let phc = h
        .hash(b"correct horse battery staple", &mut h.scratch())
        .expect("hash");
    let mut user = UserState::register(
        NewUser {
            email: Email::parse("Ada.Lovelace@example.com").expect("email"),
            full_name: Some("Ada Lovelace".into()),
            phone: Some("+447700900123".into()),
            password_hash: phc,
        },
        now,
    );
    let policy = session_policy(config);
    let key = ServerKey::from_bytes(random_32());
    // Logins from a browser, as the sessions list and the history record them.
    let origin = browser();
    for _ in 0..3 {
        user.open_session(&key, &policy, (LoginMethod::Password, &origin), now)
            .expect("session");
    }
    let mut key = ApiKey::generate(now).record;
    key.last_used_at = Some(now);
    user.api_key = Some(key);
    user.phone_verified = true;
    user.revision = 42;
    user
}

fn tokens(c: &mut Criterion) {
    let config = config();
    let ring = Verifier::new(keyring(&config));
    let now = Timestamp(1_800_000_000);
    let claims = ring.claims(
        UserId::generate(),
        TenantId::generate(),
        Some(SessionId::generate()),
        "owner",
        now,
        config.tokens.access_ttl_seconds,
    );
    let token = ring.sign(&claims, TYP_ACCESS);
    let mut g = c.benchmark_group("tokens");
    g.bench_function("sign", |b| {
        b.iter(|| ring.sign(black_box(&claims), TYP_ACCESS))
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            ring.verify(black_box(&token), TYP_ACCESS, now)
                .expect("valid")
        })
    });
    // The verified-token cache's hit path: the token was verified once before timing.
    ring.verify_access_cached(&token, now).expect("valid");
    g.bench_function("verify_cached", |b| {
        b.iter(|| {
            ring.verify_access_cached(black_box(&token), now)
                .expect("valid")
        })
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let config = config();
    let user = realistic_user(&config, Timestamp(1_800_000_000));
    let bytes = codec::encode(&user).expect("encode");
    let mut g = c.benchmark_group("snapshot");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| codec::encode(black_box(&user)).expect("encode"))
    });
    g.bench_function("decode", |b| {
        b.iter(|| codec::decode_user(black_box(&bytes)).expect("decode"))
    });
    g.finish();
}

fn argon2(c: &mut Criterion) {
    let config = config();
    let h = hasher(&config);
    let mut scratch = h.scratch();
    let phc = h
        .hash(b"correct horse battery staple", &mut scratch)
        .unwrap();
    let mut g = c.benchmark_group("argon2id");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    // Register: a fresh salt and a hash, in a reused scratch block (as the hashing pool does).
    g.bench_function("hash_default_params", |b| {
        b.iter(|| h.hash(black_box(b"correct horse battery staple"), &mut scratch))
    });
    // Login: the same cost, plus parsing the PHC string.
    g.bench_function("verify_default_params", |b| {
        b.iter(|| {
            h.verify(
                black_box(b"correct horse battery staple"),
                &phc,
                &mut scratch,
            )
        })
    });
    g.finish();
}

fn temp_store() -> (tempfile::TempDir, Arc<SledStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(&dir.path().join("db"), &StorageConfig::default()).expect("store");
    (dir, Arc::new(store))
}

fn api_keys(c: &mut Criterion) {
    let key = ApiKey::generate(Timestamp(1_800_000_000)).secret;
    let mut g = c.benchmark_group("apikey");
    g.bench_function("well_formed", |b| {
        b.iter(|| apikey::well_formed(black_box(&key)))
    });
    g.bench_function("digest", |b| b.iter(|| apikey::digest(black_box(&key))));
    g.bench_function("generate", |b| {
        b.iter(|| ApiKey::generate(black_box(Timestamp(1_800_000_000))))
    });

    // The store's index (the directory's cache miss): 10,000 keys in the tree.
    let (_dir, store) = temp_store();
    let config = config();
    let owner = realistic_user(&config, Timestamp(1_800_000_000));
    let digests: Vec<[u8; 32]> = (0..10_000)
        .map(|_| apikey::digest(&ApiKey::generate(Timestamp(0)).secret))
        .collect();
    for chunk in digests.chunks(1_000) {
        let index: Vec<IndexChange> = chunk.iter().map(|d| IndexChange::ApiKeyPut(*d)).collect();
        store.save_user(&owner, &index).expect("save");
    }
    let mut i = 0usize;
    g.bench_function("store_lookup_10k", |b| {
        b.iter(|| {
            i = (i + 7_919) % digests.len();
            store.user_by_api_key(&digests[i]).expect("lookup")
        })
    });
    g.finish();
}

/// The smallest actor: answers a number with the next one. The baseline for one hop.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

struct Ping(u64);

impl Message for Ping {
    type Result = u64;
}

impl Handler<Ping> for Echo {
    type Result = u64;

    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
        msg.0 + 1
    }
}

/// A directory like the server's (a sled store, one arbiter per core), with one user that has
/// an API key, so that `GetApiKey` is a read that changes nothing and writes nothing.
fn directory_with_user(store: Arc<SledStore>, config: &Config) -> (Directory, UserId, [u8; 32]) {
    let user = realistic_user(config, bp_auth::clock::now());
    let digest = user.api_key.as_ref().expect("key").digest;
    store.create_user(&user).expect("create");
    store
        .save_user(&user, &[IndexChange::ApiKeyPut(digest)])
        .expect("save");
    (directory_over(store, config), user.id, digest)
}

/// A directory like the server's over `store`: one arbiter per core, the configured limits and
/// relying party.
fn directory_over(store: Arc<SledStore>, config: &Config) -> Directory {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let codes = |ttl| CodePolicy {
        ttl,
        resend: 60,
        per_hour: 5,
        max_attempts: 5,
    };
    let delivery = bp_auth::delivery::from_config(
        &DeliveryConfig {
            kind: DeliveryKind::Log,
            ..DeliveryConfig::default()
        },
        std::path::Path::new("."),
    )
    .expect("delivery");
    Directory::new(
        store as Arc<dyn Store>,
        (
            ServerKey::from_bytes(random_32()),
            DataKey::from_bytes(random_32()),
        ),
        delivery,
        DirectoryConfig {
            policy: session_policy(config),
            idle: Duration::from_secs(600),
            phone_codes: codes(600),
            reactivate_codes: codes(900),
            email_codes: codes(900),
            reset_codes: codes(900),
            attempts: AttemptRules::new(true, 10, 10, 900, 2),
            passkeys: PasskeySettings {
                webauthn: Arc::new(config.relying_party().expect("relying party")),
                challenge_ttl: config.webauthn.challenge_ttl_seconds,
                login_slots: config.rate_limit.max_tracked_addresses,
            },
            oidc_max_pending: config.oidc.max_pending,
        },
        cores,
    )
}

/// Messages kept in flight by the `_pipelined` actor benches.
const IN_FLIGHT: u64 = 64;

fn actors(c: &mut Criterion) {
    let config = config();
    let system = actix::System::new();
    let mut g = c.benchmark_group("actor");

    // Baseline: a message to an actor on another arbiter (thread) and its answer, one at a
    // time. Each message finds the arbiter's thread asleep, so on a VM with idle cores this is
    // mostly the cost of waking a thread (tens of µs when its vCPU is halted, a few µs when the
    // machine is busy); the `_pipelined` variants keep 64 messages in flight, as a server under
    // load does, and give the cost per message when the receiving thread stays awake.
    let arbiter = Arbiter::new();
    let echo = system.block_on(async { Echo::start_in_arbiter(&arbiter.handle(), |_| Echo) });
    g.bench_function("hop_minimal_actor", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for n in 0..iters {
                    black_box(echo.send(Ping(n)).await.expect("answer"));
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("hop_minimal_actor_pipelined", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(IN_FLIGHT);
                    let sends = (0..batch).map(|n| echo.send(Ping(n)));
                    for r in join_all(sends).await {
                        black_box(r.expect("answer"));
                    }
                    left -= batch;
                }
                start.elapsed()
            })
        })
    });

    // The real thing: Directory::call to a resident user actor with a message that reads
    // (clones the state, compares, answers) and commits nothing.
    let (_dir, store) = temp_store();
    let (directory, user, digest) = system.block_on(async { directory_with_user(store, &config) });
    system.block_on(async {
        directory.view(user).expect("load").expect("user");
    });
    g.bench_function("directory_call_read", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let r = directory.call(user, GetApiKey).await.expect("call");
                    black_box(r.expect("key"));
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("directory_call_read_pipelined", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(IN_FLIGHT);
                    let calls = (0..batch).map(|_| directory.call(user, GetApiKey));
                    for r in join_all(calls).await {
                        black_box(r.expect("call").expect("key"));
                    }
                    left -= batch;
                }
                start.elapsed()
            })
        })
    });

    // What a reader does instead of a hop: the published view.
    g.bench_function("directory_view", |b| {
        b.iter(|| directory.view(black_box(user)).expect("view"))
    });
    // The API-key path of a request: the digest cache, then the view.
    directory.user_by_api_key(&digest).expect("warm");
    g.bench_function("directory_api_key_lookup_cached", |b| {
        b.iter(|| {
            directory
                .user_by_api_key(black_box(&digest))
                .expect("lookup")
        })
    });
    g.finish();
    arbiter.stop();
}

/// The generation of the session `refresh` attacks: a login refreshed every 15 minutes for
/// about seven months. The chained derivation this replaced walked up to 20,000 HMACs to
/// recognise (or refuse) a token claiming generation 0 of it.
const LONG_SESSION_GENERATION: u32 = 20_000;

/// What the user actor does with a presented refresh token (`UserState::refresh`), against a
/// user whose one session is at generation 20,000. A forged token costs the same whatever
/// generation it claims; only the genuine current one rotates (and so writes).
fn refresh(c: &mut Criterion) {
    let config = config();
    let policy = session_policy(&config);
    let key = ServerKey::from_bytes(random_32());
    let now = Timestamp(1_800_000_000);
    let mut user = UserState::register(
        NewUser {
            email: Email::parse("ada@example.com").expect("email"),
            full_name: None,
            phone: None,
            password_hash: "$argon2id$...".into(),
        },
        now,
    );
    let origin = browser();
    let (_, mut current, _) = user
        .open_session(&key, &policy, (LoginMethod::Password, &origin), now)
        .expect("session");
    for _ in 0..LONG_SESSION_GENERATION {
        current = user
            .refresh(&current, &key, &policy, &origin, now)
            .expect("rotation")
            .token;
    }
    let forged = |generation| RefreshToken {
        generation,
        secret: random_32(),
        ..current.clone()
    };
    let unknown_session = RefreshToken {
        session: SessionId::generate(),
        ..forged(0)
    };
    let mut g = c.benchmark_group("refresh");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(3));
    for (name, token) in [
        ("unknown_session", unknown_session),
        ("forged_gen_0", forged(0)),
        ("forged_gen_19999", forged(LONG_SESSION_GENERATION - 1)),
    ] {
        let mut u = user.clone();
        g.bench_function(name, |b| {
            b.iter(|| {
                u.refresh(black_box(&token), &key, &policy, &origin, now)
                    .expect_err("refused")
            })
        });
        assert_eq!(u, user, "a refused token changed nothing");
    }
    g.bench_function("current_rotates", |b| {
        b.iter_batched_ref(
            || user.clone(),
            |u| {
                u.refresh(black_box(&current), &key, &policy, &origin, now)
                    .expect("rotation")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The server's side of one login, as the handlers do it (without HTTP parsing): a password
/// login (the email lookup, the account's attempt reserved in its actor, argon2id on the
/// hashing pool, the attempt settled, a session opened, an access token signed), against a
/// passkey login (`login/start`: the email lookup, the ceremony opened in the user's actor, the
/// options written as JSON; then `login/finish`: the credential read from JSON, the ceremony
/// taken, the assertion verified by webauthn-rs (ECDSA P-256), a session opened, an access token
/// signed), named by email or usernameless. The software authenticator's signature between the
/// two steps is the browser's work and is not timed. Snapshots are written with
/// `storage.durability = "periodic"`, so that the figures are the work of the login, not an
/// fsync (which `"flush"` adds to both alike).
fn logins(c: &mut Criterion) {
    use bp_auth::actors::messages::{OpenSession, ReservePassword, SettlePassword};
    use bp_auth::actors::passkeys::{FinishPasskeyRegistration, StartPasskeyRegistration};
    use bp_auth::domain::backoff::Settled;
    use bp_auth::domain::ids::ChallengeId;
    use webauthn_authenticator_rs::prelude::{Url, WebauthnAuthenticator};
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_rs_proto::PublicKeyCredential;

    let config = config();
    let system = actix::System::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = StorageConfig {
        durability: bp_auth::config::Durability::Periodic,
        ..StorageConfig::default()
    };
    let store = Arc::new(SledStore::open(&dir.path().join("db"), &storage).expect("store"));
    let user = realistic_user(&config, bp_auth::clock::now());
    let (id, email_key, phc) = (user.id, user.email_key.clone(), user.password_hash.clone());
    store.create_user(&user).expect("create");
    let directory = system.block_on(async { directory_over(store, &config) });
    let ring = keyring(&config);
    let hashes = bp_auth::hashing::HashPool::start(
        hasher(&config),
        0,
        config.password.max_queue,
        Default::default(),
    )
    .unwrap();
    let origin = Url::parse("http://localhost:8080").unwrap();
    let mut soft = SoftPasskey::new(true);
    system.block_on(async {
        let challenge = ChallengeId::generate();
        let options = directory
            .call(id, StartPasskeyRegistration { challenge })
            .await
            .unwrap()
            .unwrap();
        let credential = soft.do_registration(origin.clone(), options).unwrap();
        let msg = FinishPasskeyRegistration {
            challenge,
            name: "Laptop".into(),
            credential: Box::new(credential),
            origin: browser(),
        };
        directory.call(id, msg).await.unwrap().unwrap();
    });
    let sign = |subject: &bp_auth::actors::messages::Subject, sid, now| {
        let claims = ring.claims(id, subject.tenant, Some(sid), subject.role, now, 900);
        black_box(ring.sign(&claims, TYP_ACCESS))
    };

    let mut g = c.benchmark_group("login");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("password", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let user = directory.user_by_email(&email_key).unwrap().unwrap();
                    let view = directory.view(user).unwrap().unwrap();
                    directory
                        .call(user, ReservePassword)
                        .await
                        .unwrap()
                        .unwrap();
                    let phc: Arc<str> = Arc::from(view.password_hash.as_str());
                    let ok = hashes
                        .verify("correct horse battery staple", Some(phc))
                        .await
                        .unwrap();
                    assert!(ok);
                    directory.tell(user, SettlePassword(Settled::Succeeded));
                    let opened = directory
                        .call(
                            user,
                            OpenSession {
                                method: LoginMethod::Password,
                                origin: browser(),
                            },
                        )
                        .await
                        .unwrap()
                        .unwrap();
                    sign(&opened.subject, opened.session, opened.issued_at);
                }
                start.elapsed()
            })
        })
    });
    let _ = phc;
    for (name, email) in [
        ("passkey_email", Some(email_key.as_str())),
        ("passkey_usernameless", None),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let (challenge, options) =
                            directory.start_passkey_login(email).await.unwrap();
                        let served = serde_json::to_string(&options.public_key).unwrap();
                        timed += start.elapsed();
                        // The browser and the authenticator (untimed).
                        let mut options = options;
                        if options.public_key.allow_credentials.is_empty() {
                            let listed = serde_json::json!([{"type": "public-key",
                                "id": soft_credential_id(&directory, id)}]);
                            options.public_key.allow_credentials =
                                serde_json::from_value(listed).unwrap();
                        }
                        black_box(served);
                        let mut answer = soft.do_authentication(origin.clone(), options).unwrap();
                        answer.response.user_handle = Some(id.as_bytes().to_vec());
                        let posted = serde_json::to_string(&answer).unwrap();
                        let start = Instant::now();
                        let credential: PublicKeyCredential =
                            serde_json::from_str(&posted).unwrap();
                        let (_, opened) = directory
                            .finish_passkey_login(challenge, Some(credential), browser())
                            .await
                            .unwrap();
                        let opened = opened.unwrap();
                        sign(&opened.subject, opened.session, opened.issued_at);
                        timed += start.elapsed();
                    }
                    timed
                })
            })
        });
    }
    g.finish();
    drop(directory);
}

/// The credential id of the user's first passkey, base64url, as the browser's account chooser
/// would pick it for a usernameless login.
fn soft_credential_id(directory: &Directory, id: UserId) -> String {
    use base64::Engine;
    let view = directory.view(id).unwrap().unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&view.passkeys[0].credential_id)
}

criterion_group!(benches, tokens, snapshot, argon2, api_keys, actors, refresh, logins);
criterion_main!(benches);
