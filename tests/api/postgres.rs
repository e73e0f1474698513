//! `storage.engine = "postgres"` on one node: the `Store` contract on both engines, version
//! conflicts between two stores on one database, and the real server on PostgreSQL through a
//! restart. The cluster is `pg_cluster`'s (real PostgreSQL, no mock).

use std::sync::Arc;

use bp_auth::config::{Durability, Engine, StorageConfig};
use bp_auth::domain::credentials::Email;
use bp_auth::domain::events::Origin;
use bp_auth::domain::identities::{index_key, ProviderClaims};
use bp_auth::domain::time::Timestamp;
use bp_auth::domain::user::{NewUser, UserState};
use bp_auth::store::{self, Created, IndexChange, Store, StoreError};
use serde_json::json;

use crate::helpers::*;
use crate::pg_cluster;

fn user(email: &str) -> UserState {
    UserState::register(
        NewUser {
            email: Email::parse(email).unwrap(),
            full_name: None,
            phone: None,
            password_hash: "$argon2id$x".into(),
        },
        Timestamp(1_800_000_000),
    )
}

fn pg_config(url: &str) -> StorageConfig {
    StorageConfig {
        engine: Engine::Postgres,
        postgres_url: url.into(),
        ..StorageConfig::default()
    }
}

fn open_pg(url: &str) -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap();
    store::open(dir.path(), &pg_config(url)).unwrap()
}

/// The next revision of `u`, as the user actor writes it.
fn bumped(u: &UserState) -> UserState {
    let mut next = u.clone();
    next.revision = u.revision.wrapping_add(1);
    next
}

/// What every engine must do, on an empty store.
async fn conformance(store: &dyn Store) {
    // Create claims the email once (case folded by `email_key`).
    let a = user("Ada@example.com");
    let Created::Yes(t) = store.create_user(&a).unwrap() else {
        panic!("first claim must win")
    };
    store.commit().durable(t).await.unwrap();
    assert!(matches!(
        store.create_user(&user("ada@EXAMPLE.com")).unwrap(),
        Created::EmailTaken
    ));
    assert_eq!(store.user_by_email("ada@example.com").unwrap(), Some(a.id));
    assert_eq!(store.user_by_email("nobody@example.com").unwrap(), None);
    assert_eq!(store.load_user(a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.load_user(user("x@example.com").id).unwrap(), None);

    // A save with the API-key index, then its removal.
    let mut a1 = bumped(&a);
    a1.full_name = Some("Ada".into());
    let t = store
        .save_user(&a1, &[IndexChange::ApiKeyPut([1; 32]), IndexChange::Tenant])
        .unwrap();
    store.commit().durable(t).await.unwrap();
    assert_eq!(store.user_by_api_key(&[1; 32]).unwrap(), Some(a.id));
    assert_eq!(store.user_by_api_key(&[2; 32]).unwrap(), None);
    assert_eq!(store.load_user(a.id).unwrap(), Some(a1.clone()));
    let a2 = bumped(&a1);
    store
        .save_user(
            &a2,
            &[
                IndexChange::ApiKeyDelete([1; 32]),
                IndexChange::ApiKeyPut([2; 32]),
            ],
        )
        .unwrap();
    assert_eq!(store.user_by_api_key(&[1; 32]).unwrap(), None);
    assert_eq!(store.user_by_api_key(&[2; 32]).unwrap(), Some(a.id));

    // An email move onto another user's address changes nothing; onto a free one, both
    // entries move.
    let b = user("bob@example.com");
    store.create_user(&b).unwrap();
    let mut a3 = bumped(&a2);
    a3.email_key = "bob@example.com".into();
    let to_b = IndexChange::EmailMove {
        from: "ada@example.com".into(),
        to: "bob@example.com".into(),
    };
    assert!(matches!(
        store.save_user(&a3, &[to_b]),
        Err(StoreError::EmailTaken)
    ));
    assert_eq!(
        store.load_user(a.id).unwrap(),
        Some(a2.clone()),
        "unchanged"
    );
    assert_eq!(store.user_by_email("bob@example.com").unwrap(), Some(b.id));
    a3.email_key = "ada@example.org".into();
    let to_free = IndexChange::EmailMove {
        from: "ada@example.com".into(),
        to: "ada@example.org".into(),
    };
    store.save_user(&a3, &[to_free]).unwrap();
    assert_eq!(store.user_by_email("ada@example.org").unwrap(), Some(a.id));
    assert_eq!(store.user_by_email("ada@example.com").unwrap(), None);
    assert_eq!(store.load_user(a.id).unwrap(), Some(a3.clone()));

    // A passkey's credential id belongs to one user: another's claim changes nothing, and a
    // released id can be claimed again.
    let a4 = bumped(&a3);
    store
        .save_user(&a4, &[IndexChange::PasskeyPut(vec![7; 16])])
        .unwrap();
    assert_eq!(store.user_by_passkey(&[7; 16]).unwrap(), Some(a.id));
    assert_eq!(store.user_by_passkey(&[8; 16]).unwrap(), None);
    let b1 = bumped(&b);
    assert!(matches!(
        store.save_user(&b1, &[IndexChange::PasskeyPut(vec![7; 16])]),
        Err(StoreError::PasskeyTaken)
    ));
    assert_eq!(store.load_user(b.id).unwrap(), Some(b.clone()), "unchanged");
    let a5 = bumped(&a4);
    store
        .save_user(&a5, &[IndexChange::PasskeyDelete(vec![7; 16])])
        .unwrap();
    assert_eq!(store.user_by_passkey(&[7; 16]).unwrap(), None);
    store
        .save_user(&b1, &[IndexChange::PasskeyPut(vec![7; 16])])
        .unwrap();
    assert_eq!(store.user_by_passkey(&[7; 16]).unwrap(), Some(b.id));
    let a3 = a5;

    // The very same snapshot written again: a shared engine refuses it (two nodes that made
    // the same decision, say rotating one refresh token, must not both answer); sled, which
    // only its own node writes, takes it.
    if store.shared() {
        assert!(matches!(
            store.save_user(&a3, &[]),
            Err(StoreError::Conflict)
        ));
    } else {
        store.save_user(&a3, &[]).unwrap();
    }

    // A provider identity belongs to one user, claimed like a passkey: at creation (with the
    // email, all or nothing) and by a later save; another's claim changes nothing.
    let claims = |sub: &str, email: &str| ProviderClaims {
        provider: "google".into(),
        subject: sub.into(),
        email: Some(email.into()),
        email_verified: true,
        name: None,
    };
    let new = |sub: &str, email: &str| {
        UserState::from_identity(
            &claims(sub, email),
            Email::parse(email).unwrap(),
            &Origin::default(),
            Timestamp(1_800_000_000),
        )
    };
    let c = new("c-1", "carol@example.com");
    let Created::Yes(_) = store.create_user(&c).unwrap() else {
        panic!("a fresh email and identity")
    };
    let key = index_key("google", "c-1");
    assert_eq!(store.user_by_identity(&key).unwrap(), Some(c.id));
    assert_eq!(
        store.user_by_identity(&index_key("google", "c-2")).unwrap(),
        None
    );
    let rival = new("c-1", "carla@example.com");
    assert!(matches!(
        store.create_user(&rival).unwrap(),
        Created::IdentityTaken
    ));
    assert_eq!(
        store.user_by_email("carla@example.com").unwrap(),
        None,
        "the refused creation claimed no email"
    );
    assert_eq!(store.load_user(rival.id).unwrap(), None);
    let b2 = bumped(&b1);
    assert!(matches!(
        store.save_user(&b2, &[IndexChange::IdentityPut(key.clone())]),
        Err(StoreError::IdentityTaken)
    ));
    assert_eq!(
        store.load_user(b.id).unwrap(),
        Some(b1.clone()),
        "unchanged"
    );
    // Another user's delete does not release it; the owner's does.
    store
        .save_user(&b2, &[IndexChange::IdentityDelete(key.clone())])
        .unwrap();
    assert_eq!(store.user_by_identity(&key).unwrap(), Some(c.id));
    let c1 = bumped(&c);
    store
        .save_user(&c1, &[IndexChange::IdentityDelete(key.clone())])
        .unwrap();
    assert_eq!(store.user_by_identity(&key).unwrap(), None);
    let b3 = bumped(&b2);
    store
        .save_user(&b3, &[IndexChange::IdentityPut(key.clone())])
        .unwrap();
    assert_eq!(store.user_by_identity(&key).unwrap(), Some(b.id));

    // Pending entries: taken once, gone when expired, bounded (expired ones make room).
    let t0 = Timestamp(1_800_000_000);
    assert!(store
        .put_pending(&[1; 32], b"one", t0.plus(60), t0, 2)
        .unwrap());
    assert!(store
        .put_pending(&[2; 32], b"two", t0.plus(5), t0, 2)
        .unwrap());
    assert!(
        !store
            .put_pending(&[3; 32], b"three", t0.plus(60), t0, 2)
            .unwrap(),
        "full"
    );
    assert_eq!(
        store.take_pending(&[1; 32], t0.plus(1)).unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        store.take_pending(&[1; 32], t0.plus(1)).unwrap(),
        None,
        "used once"
    );
    assert_eq!(store.take_pending(&[9; 32], t0).unwrap(), None);
    // At t0 + 10 the second has expired: room for two more.
    let later = t0.plus(10);
    assert!(store
        .put_pending(&[3; 32], b"three", later.plus(60), later, 2)
        .unwrap());
    assert!(store
        .put_pending(&[4; 32], b"four", later.plus(60), later, 2)
        .unwrap());
    assert!(!store
        .put_pending(&[5; 32], b"five", later.plus(60), later, 2)
        .unwrap());
    assert_eq!(
        store.take_pending(&[2; 32], later).unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.take_pending(&[4; 32], later.plus(60)).unwrap(),
        None,
        "expired at its expiry"
    );
    assert!(store.take_pending(&[3; 32], later).unwrap().is_some());

    let mut ids = store.user_ids().unwrap();
    ids.sort();
    let mut want = vec![a.id, b.id, c.id];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn the_store_contract_holds_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(dir.path(), &StorageConfig::default()).unwrap();
    conformance(store.as_ref()).await;
    store.close();
}

#[tokio::test]
async fn the_store_contract_holds_on_postgres() {
    let url = pg_cluster::database();
    let store = open_pg(&url);
    conformance(store.as_ref()).await;
    store.close();
    // Reopened (migrations already applied), everything is there.
    let store = open_pg(&url);
    assert_eq!(store.user_ids().unwrap().len(), 3);
    assert!(store.user_by_email("ada@example.org").unwrap().is_some());
    assert!(store
        .user_by_identity(&index_key("google", "c-1"))
        .unwrap()
        .is_some());
    store.close();
}

#[tokio::test]
async fn periodic_durability_works_on_postgres() {
    let url = pg_cluster::database();
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        durability: Durability::Periodic,
        ..pg_config(&url)
    };
    let store = store::open(dir.path(), &cfg).unwrap();
    let a = user("ada@example.com");
    let Created::Yes(t) = store.create_user(&a).unwrap() else {
        panic!("created")
    };
    store.commit().durable(t).await.unwrap();
    assert_eq!(store.load_user(a.id).unwrap(), Some(a));
}

#[tokio::test]
async fn a_stale_version_is_refused_and_nothing_of_it_lands() {
    let url = pg_cluster::database();
    // Two nodes' stores on one database.
    let (one, two) = (open_pg(&url), open_pg(&url));
    let a = user("ada@example.com");
    one.create_user(&a).unwrap();

    // Both read revision 0; the first write wins.
    let mut first = bumped(&a);
    first.full_name = Some("First".into());
    one.save_user(&first, &[IndexChange::ApiKeyPut([1; 32])])
        .unwrap();
    let mut second = bumped(&two.load_user(a.id).unwrap().unwrap());
    second.full_name = Some("Second".into());
    // `two` read before `one` wrote: the same base revision.
    let mut stale = bumped(&a);
    stale.full_name = Some("Stale".into());
    let moved = IndexChange::EmailMove {
        from: "ada@example.com".into(),
        to: "ada@example.org".into(),
    };
    assert!(matches!(
        two.save_user(&stale, &[moved, IndexChange::ApiKeyDelete([1; 32])]),
        Err(StoreError::Conflict)
    ));
    assert_eq!(two.load_user(a.id).unwrap(), Some(first.clone()));
    assert_eq!(two.user_by_email("ada@example.org").unwrap(), None);
    assert_eq!(two.user_by_api_key(&[1; 32]).unwrap(), Some(a.id));
    // A write derived from what `two` reads now lands.
    second.full_name = Some("Second".into());
    assert_eq!(second.revision, first.revision + 1);
    two.save_user(&second, &[]).unwrap();
    assert_eq!(one.load_user(a.id).unwrap(), Some(second));

    // Racing writers from one base: exactly one wins.
    let base = one.load_user(a.id).unwrap().unwrap();
    let mut tasks = Vec::new();
    for (i, s) in [one.clone(), two.clone(), one.clone(), two.clone()]
        .into_iter()
        .enumerate()
    {
        let mut next = bumped(&base);
        next.full_name = Some(format!("racer {i}"));
        tasks.push(std::thread::spawn(move || s.save_user(&next, &[]).is_ok()));
    }
    let wins = tasks
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
    one.close();
    two.close();
}

#[tokio::test]
async fn a_bad_url_or_an_unreachable_server_is_an_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "",
        "not a url",
        "postgres://bp:hunter2-secret@127.0.0.1:1/bp",
    ] {
        let err = store::open(dir.path(), &pg_config(url)).err().unwrap();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }
    let cfg = format!("{:?}", pg_config("postgres://bp:hunter2@h/db"));
    assert!(!cfg.contains("hunter2"), "{cfg}");
}

/// The real server on PostgreSQL: the flows that write, then a restart that keeps them all.
#[actix_web::test]
async fn the_server_runs_on_postgres_and_keeps_everything_across_a_restart() {
    let url = pg_cluster::database();
    let env = [
        ("BP_AUTH__STORAGE__ENGINE", "postgres"),
        ("BP_AUTH__STORAGE__POSTGRES_URL", url.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &env).await;

    let e = email();
    let profile = server.register(&e).await;
    let res = server
        .register_raw(&json!({"email": e.to_uppercase(), "password": PASSWORD}))
        .await;
    expect_error(res, 409, "email_taken").await;
    let t = server.login(&e).await;
    let res = server.me(&t.access).await;
    assert_eq!(json_of(res).await["id"], profile["id"]);

    // Rotation, then reuse of the old token revokes the family.
    let res = server.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 200);
    let rotated = Tokens::from_json(&json_of(res).await);
    expect_refresh_error(&server, &t.refresh, "refresh_token_reused").await;
    expect_refresh_error(&server, &rotated.refresh, "invalid_refresh_token").await;

    // A second session: an API key, rotated.
    let t2 = server.login(&e).await;
    let old_key = server.new_api_key(&t2.access).await;
    let res = server
        .post_bearer("/api/auth/api-key/rotate", &t2.access, None)
        .await;
    assert_eq!(res.status(), 200);
    let key = json_of(res).await["key"].as_str().unwrap().to_string();
    expect_error(
        server.get_with_api_key("/api/auth/me", &old_key).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(
        server.get_with_api_key("/api/auth/me", &key).await.status(),
        200
    );

    // A third session, logged out.
    let t3 = server.login(&e).await;
    let res = server.logout_bearer(Some(&t3.access), &json!({})).await;
    assert_eq!(res.status(), 204);
    expect_error(server.me(&t3.access).await, 401, "session_revoked").await;

    // Another user, deactivated.
    let gone = email();
    server.register(&gone).await;
    let tg = server.login(&gone).await;
    let res = server
        .post_bearer(
            "/api/auth/deactivate",
            &tg.access,
            Some(&json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(res.status(), 204);

    // A clean stop and a new process on the same data dir (which holds only the keys now).
    assert!(server.terminate().success());
    let server = ServerProcess::start(dir.path(), &env).await;
    assert_eq!(server.me(&t2.access).await.status(), 200, "session kept");
    assert_eq!(
        server.get_with_api_key("/api/auth/me", &key).await.status(),
        200,
        "rotated key kept"
    );
    expect_error(
        server.get_with_api_key("/api/auth/me", &old_key).await,
        401,
        "invalid_token",
    )
    .await;
    expect_error(server.me(&t3.access).await, 401, "session_revoked").await;
    expect_refresh_error(&server, &rotated.refresh, "invalid_refresh_token").await;
    let res = server.login_raw(&gone, PASSWORD).await;
    assert_ne!(res.status(), 200, "the deactivated user stays deactivated");
    let again = server.login(&e).await;
    assert_eq!(
        json_of(server.me(&again.access).await).await["id"],
        profile["id"]
    );
    assert!(
        !dir.path().join("data").join("db").exists() && !dir.path().join("db").exists(),
        "no sled database was made"
    );
}

/// A change made elsewhere on the database (here an offline store, later another node) makes the
/// resident actor stale: its next write is refused on the version, and the directory reloads
/// the user and runs the request again, keeping both changes. The client never sees a conflict.
#[actix_web::test]
async fn a_stale_actor_reloads_and_decides_again() {
    let url = pg_cluster::database();
    let app = spawn_app_with(|c| c.storage = pg_config(&url)).await;
    let e = email();
    let profile = app.register(&e).await;
    let t = app.login(&e).await;
    assert_eq!(
        app.me(&t.access).await.status(),
        200,
        "the actor is resident"
    );

    let elsewhere = open_pg(&url);
    let id = profile["id"].as_str().unwrap().parse().unwrap();
    let mut changed = bumped(&elsewhere.load_user(id).unwrap().unwrap());
    changed.full_name = Some("Changed elsewhere".into());
    elsewhere.save_user(&changed, &[]).unwrap();

    // The login's new session is written over the fresh state, not over the stale one.
    let t2 = app.login(&e).await;
    let me = json_of(app.me(&t2.access).await).await;
    assert_eq!(me["full_name"], "Changed elsewhere", "{me}");
    let stored = elsewhere.load_user(id).unwrap().unwrap();
    assert_eq!(stored.full_name.as_deref(), Some("Changed elsewhere"));
    assert_eq!(stored.sessions.len(), 2, "both logins' sessions");
    assert_eq!(stored.revision, changed.revision + 1);
    assert_eq!(
        app.me(&t.access).await.status(),
        200,
        "the first session too"
    );
    elsewhere.close();
}

/// Until `admin migrate-to-postgres` exists: a sled data dir's export imports into PostgreSQL,
/// and the server on PostgreSQL serves its users (password, API key).
#[actix_web::test]
async fn a_sled_export_imports_into_postgres() {
    let src = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(src.path(), &[]).await;
    let e = email();
    server.register(&e).await;
    let t = server.login(&e).await;
    let key = server.new_api_key(&t.access).await;
    assert!(server.terminate().success());

    let files = tempfile::tempdir().unwrap();
    let export = files.path().join("export.jsonl");
    let export_s = export.to_str().unwrap();
    crate::operate::bp_auth_ok(src.path(), &["admin", "export", "--out", export_s]);

    let url = pg_cluster::database();
    let dest = tempfile::tempdir().unwrap();
    crate::operate::copy_keys(src.path(), dest.path());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bp-auth"));
    cmd.args(["admin", "import", "--in", export_s, "--data-dir"])
        .arg(dest.path())
        .current_dir(dest.path())
        .env("BP_AUTH__STORAGE__ENGINE", "postgres")
        .env("BP_AUTH__STORAGE__POSTGRES_URL", &url);
    let out = run_to_exit(cmd, std::time::Duration::from_secs(60));
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let env = [
        ("BP_AUTH__STORAGE__ENGINE", "postgres"),
        ("BP_AUTH__STORAGE__POSTGRES_URL", url.as_str()),
    ];
    let server = ServerProcess::start(dest.path(), &env).await;
    let t = server.login(&e).await;
    assert_eq!(server.me(&t.access).await.status(), 200);
    let res = server.get_with_api_key("/api/auth/me", &key).await;
    expect_status(res, 200, "the API key authenticates").await;
    assert!(
        !dest.path().join("db").exists(),
        "no sled database was made"
    );
}
