//! Several bp-auth processes on one PostgreSQL database, each request of a client sent to the
//! next node in turn ([`Nodes`] is a `Server` whose address moves on with every request): the
//! contract's rules hold across nodes. The database is `pg_cluster`'s (real PostgreSQL).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::*;
use crate::pg_cluster;

/// Nodes on one database. Requests through the `Server` methods go round-robin.
pub struct Nodes {
    pub nodes: Vec<ServerProcess>,
    next: AtomicUsize,
    pub url: String,
    /// Each node's data dir (its outbox and admin socket; the users and keys are in the
    /// database), and the master key file they share.
    dirs: Vec<TempDir>,
    shared: TempDir,
}

impl Server for Nodes {
    fn address(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        &self.nodes[i].address
    }

    fn client(&self) -> Client {
        Client::new()
    }
}

impl Nodes {
    /// `n` nodes on a fresh database, with `extra` environment for each.
    pub async fn start(n: usize, extra: &[(&str, &str)]) -> Self {
        let url = pg_cluster::database();
        Self::start_on(n, url, tempfile::tempdir().unwrap(), extra).await
    }

    async fn start_on(n: usize, url: String, shared: TempDir, extra: &[(&str, &str)]) -> Self {
        let master = master_key_of(&shared);
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().unwrap();
            nodes.push(ServerProcess::start(dir.path(), &Self::env(&url, &master, extra)).await);
            dirs.push(dir);
        }
        Self {
            nodes,
            next: AtomicUsize::new(0),
            url,
            dirs,
            shared,
        }
    }

    fn env<'a>(
        url: &'a str,
        master: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("BP_AUTH__STORAGE__ENGINE", "postgres"),
            ("BP_AUTH__STORAGE__POSTGRES_URL", url),
            ("BP_AUTH__STORAGE__MASTER_KEY_FILE", master),
        ];
        env.extend_from_slice(extra);
        env
    }

    /// Node `i` alone, as a `Server`.
    pub fn node(&self, i: usize) -> &ServerProcess {
        &self.nodes[i]
    }

    pub fn master_key(&self) -> String {
        master_key_of(&self.shared)
    }

    /// Starts one more node (a killed one coming back) on a fresh data dir.
    pub async fn add(&mut self, extra: &[(&str, &str)]) {
        let dir = tempfile::tempdir().unwrap();
        let master = master_key_of(&self.shared);
        let env = Self::env(&self.url, &master, extra);
        self.nodes
            .push(ServerProcess::start(dir.path(), &env).await);
        self.dirs.push(dir);
    }
}

/// The master key file the nodes of `shared` use.
fn master_key_of(shared: &TempDir) -> String {
    shared.path().join("master.key").display().to_string()
}

/// Polls `check` every 20 ms until it is true; the time it took, or `None` after `limit`.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `/me` with `token` on every node: the statuses.
async fn me_everywhere(nodes: &Nodes, token: &str) -> Vec<u16> {
    let mut statuses = Vec::new();
    for n in &nodes.nodes {
        statuses.push(n.me(token).await.status().as_u16());
    }
    statuses
}

#[actix_web::test]
async fn refresh_rotation_and_reuse_detection_hold_across_three_nodes() {
    let nodes = Nodes::start(3, &[]).await;
    let (email, first) = nodes.new_user().await;

    // Rotation: each refresh on the next node; each new token works on the node after.
    let mut current = first.clone();
    for _ in 0..6 {
        let res = nodes.refresh_raw(&current.refresh).await;
        assert_eq!(res.status(), 200, "a rotation on the next node");
        current = Tokens::from_json(&json_of(res).await);
        assert_eq!(me_everywhere(&nodes, &current.access).await, vec![200; 3]);
    }

    // The first token, replayed on any node, is reuse: the family is revoked on every node.
    expect_refresh_error(&nodes, &first.refresh, "refresh_token_reused").await;
    expect_refresh_error(&nodes, &current.refresh, "invalid_refresh_token").await;
    expect_refresh_error(&nodes, &current.refresh, "invalid_refresh_token").await;
    let statuses = me_everywhere(&nodes, &current.access).await;
    assert_eq!(statuses, vec![401; 3], "the revoked session's access token");
    // The account itself is fine.
    let again = nodes.login(&email).await;
    assert_eq!(me_everywhere(&nodes, &again.access).await, vec![200; 3]);
}

#[actix_web::test]
async fn twenty_parallel_refreshes_of_one_token_over_two_nodes_let_exactly_one_through() {
    let nodes = Nodes::start(2, &[]).await;
    let (_, t) = nodes.new_user().await;
    // Warm both nodes' actors of the user, so that each decides on its own copy.
    assert_eq!(me_everywhere(&nodes, &t.access).await, vec![200; 2]);

    let attempts = (0..20).map(|i| {
        let node = &nodes.nodes[i % 2];
        let refresh = t.refresh.clone();
        async move { node.refresh_raw(&refresh).await.status().as_u16() }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 1, "exactly one rotation: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "the others are refused, never a 5xx: {statuses:?}"
    );
}

/// Logs `t`'s session out on `a`; `b` must answer its access token 401 within one second.
async fn logout_on_a_is_honoured_by_b(
    a: &ServerProcess,
    b: &ServerProcess,
    t: &Tokens,
    what: &str,
) {
    let res = a
        .logout_bearer(Some(&t.access), &json!({"refresh_token": t.refresh}))
        .await;
    assert_eq!(res.status(), 204);
    let took = within(Duration::from_secs(3), || async {
        b.me(&t.access).await.status() == 401
    })
    .await
    .unwrap_or_else(|| panic!("node B honours {what}"));
    assert!(took < Duration::from_secs(1), "within one second: {took:?}");
}

#[actix_web::test]
async fn a_logout_on_one_node_is_honoured_by_another_within_a_second() {
    let nodes = Nodes::start(2, &[]).await;
    let (a, b) = (nodes.node(0), nodes.node(1));
    let (_, t) = nodes.new_user().await;
    // Node B holds the user's view (it answered with it).
    assert_eq!(b.me(&t.access).await.status(), 200);

    logout_on_a_is_honoured_by_b(a, b, &t, "node A's logout").await;
    expect_refresh_error(b, &t.refresh, "invalid_refresh_token").await;
    let metrics = b.get("/metrics").await.text().await.unwrap();
    let told = metrics
        .lines()
        .find(|l| l.starts_with("bp_cluster_invalidations_total{kind=\"user\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(told >= 1, "node B counts what it was told: {metrics}");
}

/// `SELECT {what}` over every node's listening connection, as the database sees them.
async fn over_listeners(url: &str, what: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let sql = format!(
        "SELECT {what} FROM pg_stat_activity
         WHERE application_name = $1 AND datname = current_database()"
    );
    client
        .query(&sql, &[&bp_auth::store::postgres::LISTENER_NAME])
        .await
        .unwrap()
}

/// The server processes of every node's listening connection.
async fn listener_backends(url: &str) -> Vec<i32> {
    over_listeners(url, "pid")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn signal(pids: &[i32], sig: &str) -> bool {
    pids.iter().all(|pid| {
        Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Server processes stopped (SIGSTOP) until this is dropped, whatever the test does meanwhile.
struct Held(Vec<i32>);

impl Held {
    fn stop(pids: Vec<i32>) -> Self {
        let held = Self(pids);
        assert!(signal(&held.0, "STOP"), "kill -STOP {:?}", held.0);
        held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        signal(&self.0, "CONT");
    }
}

#[actix_web::test]
async fn a_login_on_one_node_is_honoured_by_another_before_its_notice_arrives() {
    let nodes = Nodes::start(2, &[]).await;
    let (a, b) = (nodes.node(0), nodes.node(1));
    let (email, first) = nodes.new_user().await;
    // Node B holds the user's view from before the login.
    assert_eq!(b.me(&first.access).await.status(), 200);

    // Every node's listening backend held still: A's notice of the new session cannot reach B
    // (for less than the listener's 2 s ping, after which B would drop its views anyway). A
    // client's next request after its login may go to B all the same.
    let listeners = listener_backends(&nodes.url).await;
    assert_eq!(listeners.len(), 2, "both nodes listen");
    let held = Held::stop(listeners);
    let t = a.login(&email).await;
    let me = b.me(&t.access).await.status().as_u16();
    let shown = b
        .get_bearer("/api/auth/api-key", &t.access)
        .await
        .status()
        .as_u16();
    // The API key B just created, rotated on A and used on B at once.
    let res = a
        .post_bearer("/api/auth/api-key/rotate", &t.access, None)
        .await;
    assert_eq!(res.status(), 200, "rotated on A");
    let key = json_of(res).await["key"].as_str().unwrap().to_string();
    let by_key = b
        .get_with_api_key("/api/auth/me", &key)
        .await
        .status()
        .as_u16();
    drop(held);
    assert_eq!(
        (me, shown, by_key),
        (200, 200, 200),
        "B honours the session A opened and the key A rotated"
    );

    // And a session ended on A is still refused by B once told, young token or not.
    logout_on_a_is_honoured_by_b(a, b, &t, "the logout of a session it looked up").await;
}

#[actix_web::test]
async fn everywhere_deactivation_and_api_key_rotation_hold_across_nodes() {
    let nodes = Nodes::start(3, &[]).await;
    let (email, one) = nodes.new_user().await;
    let two = nodes.login(&email).await;
    for t in [&one, &two] {
        assert_eq!(me_everywhere(&nodes, &t.access).await, vec![200; 3]);
    }

    // Logout everywhere, on one node: both sessions end on every node.
    let res = nodes
        .node(0)
        .logout_bearer(Some(&one.access), &json!({"everywhere": true}))
        .await;
    assert_eq!(res.status(), 204);
    for t in [&one, &two] {
        within(Duration::from_secs(1), || async {
            me_everywhere(&nodes, &t.access).await == vec![401; 3]
        })
        .await
        .expect("every node ends both sessions");
        expect_refresh_error(&nodes, &t.refresh, "invalid_refresh_token").await;
    }

    // API key: issued on one node, rotated on another; the old key fails everywhere at once.
    let t = nodes.login(&email).await;
    let old_key = nodes.new_api_key(&t.access).await;
    for n in &nodes.nodes {
        let res = n.get_with_api_key("/api/auth/me", &old_key).await;
        assert_eq!(res.status(), 200, "the key works on every node");
    }
    let res = nodes
        .node(1)
        .post_bearer("/api/auth/api-key/rotate", &t.access, None)
        .await;
    assert_eq!(res.status(), 200);
    let new_key = json_of(res).await["key"].as_str().unwrap().to_string();
    for n in &nodes.nodes {
        within(Duration::from_secs(1), || async {
            n.get_with_api_key("/api/auth/me", &old_key).await.status() == 401
        })
        .await
        .expect("the old key is refused on every node");
        let res = n.get_with_api_key("/api/auth/me", &new_key).await;
        assert_eq!(res.status(), 200, "the new key works on every node");
    }

    // Deactivation on one node: the session and the key stop on all, and login is refused.
    let res = nodes
        .node(2)
        .post_bearer(
            "/api/auth/deactivate",
            &t.access,
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(res.status(), 204, "deactivated");
    for n in &nodes.nodes {
        within(Duration::from_secs(1), || async {
            n.me(&t.access).await.status() != 200
                && n.get_with_api_key("/api/auth/me", &new_key).await.status() != 200
        })
        .await
        .expect("every node refuses the deactivated account");
        let res = n.login_raw(&email, PASSWORD).await;
        assert_eq!(res.status(), 403, "login refused on every node");
    }
}

#[actix_web::test]
async fn mfa_set_up_and_answered_across_nodes_with_wrong_codes_counted_on_all() {
    let nodes = Nodes::start(3, &[]).await;
    let (email, t) = nodes.new_user().await;
    // Set-up on one node, confirmation on the next.
    let res = nodes
        .post_bearer("/api/auth/mfa/totp/setup", &t.access, None)
        .await;
    assert_eq!(res.status(), 200, "set-up");
    let secret = json_of(res).await["secret"].as_str().unwrap().to_string();
    let mut app = Authenticator::new(&secret);
    let code = app.fresh_code().await;
    let res = nodes
        .post_bearer(
            "/api/auth/mfa/totp/verify",
            &t.access,
            Some(&json!({"code": code})),
        )
        .await;
    assert_eq!(res.status(), 200, "confirmed on another node");

    // A login on any node now asks for the second factor, answered on another node.
    let res = nodes.login_raw(&email, PASSWORD).await;
    assert_eq!(res.status(), 200);
    let pending = json_of(res).await;
    assert_eq!(pending["token_type"], "mfa_pending", "{pending}");
    let mfa_token = pending["access_token"].as_str().unwrap().to_string();
    let code = app.fresh_code().await;
    let res = nodes
        .post_bearer(
            "/api/auth/mfa/challenge",
            &mfa_token,
            Some(&json!({"code": code})),
        )
        .await;
    assert_eq!(res.status(), 200, "the second factor on the next node");
    assert_token_response(&json_of(res).await, 900);

    // Wrong codes spread over the nodes and over two pending tokens count together: ten in
    // all (five per token at most), then even the right code is refused, on every node.
    let pending = |nodes: &Nodes| {
        let email = email.clone();
        let node = nodes.address().to_string();
        async move {
            let res = Client::new()
                .post(format!("{node}/api/auth/token"))
                .form(&[("username", email.as_str()), ("password", PASSWORD)])
                .send()
                .await
                .unwrap();
            json_of(res).await["access_token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    for round in 0..2 {
        let (a, b) = (pending(&nodes).await, pending(&nodes).await);
        for i in 0..5 {
            let token = if i % 2 == 0 { &a } else { &b };
            let wrong = json!({"code": app.wrong_code(round * 10 + i)});
            let res = nodes
                .post_bearer("/api/auth/mfa/challenge", token, Some(&wrong))
                .await;
            assert_eq!(res.status(), 401, "round {round} wrong answer {i}");
        }
    }
    let fresh = pending(&nodes).await;
    let code = json!({"code": app.fresh_code().await});
    for n in &nodes.nodes {
        let res = n
            .post_bearer("/api/auth/mfa/challenge", &fresh, Some(&code))
            .await;
        assert_eq!(res.status(), 429, "the right code waits, on every node");
    }
}

#[actix_web::test]
async fn password_throttling_counts_across_nodes_even_in_parallel() {
    let nodes = Nodes::start(3, &[]).await;
    let (email, _) = nodes.new_user().await;

    // Thirty wrong passwords at once, spread over the three nodes: at most the account's limit
    // (10) are checked and answered 401; the rest are refused 429.
    let guesses = (0..30).map(|i| {
        let node = &nodes.nodes[i % 3];
        let email = email.clone();
        async move {
            node.login_raw(&email, &format!("wrong password {i}"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 10,
        "at most the limit across nodes: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // Sequential ones until the window is full, then the right password is refused on all.
    for i in 0..10 {
        let res = nodes.login_raw(&email, &format!("still wrong {i}")).await;
        if res.status() == 429 {
            break;
        }
    }
    for n in &nodes.nodes {
        let res = n.login_raw(&email, PASSWORD).await;
        assert_eq!(res.status(), 429, "the account waits on every node");
    }
}

#[actix_web::test]
async fn a_key_rotated_through_one_node_is_served_and_honoured_by_all() {
    let nodes = Nodes::start(2, &[]).await;
    let (email, before) = nodes.new_user().await;
    let kids = |jwks: Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let first = kids(nodes.node(0).jwks().await);
    assert_eq!(first, kids(nodes.node(1).jwks().await), "one key set");

    let out = Command::new(env!("CARGO_BIN_EXE_bp-auth"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .env("BP_AUTH__STORAGE__ENGINE", "postgres")
        .env("BP_AUTH__STORAGE__POSTGRES_URL", &nodes.url)
        .env("BP_AUTH__STORAGE__MASTER_KEY_FILE", nodes.master_key())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &nodes.nodes {
        within(Duration::from_secs(2), || async {
            kids(n.jwks().await).len() == 2
        })
        .await
        .expect("every node publishes the new key");
    }
    // New tokens are signed with the new key on every node, and every node verifies them; the
    // tokens of before still verify.
    let t = nodes.node(1).login(&email).await;
    assert!(!first.contains(&jwt_header(&t.access)["kid"].as_str().unwrap().to_string()));
    assert_eq!(me_everywhere(&nodes, &t.access).await, vec![200; 2]);
    assert_eq!(me_everywhere(&nodes, &before.access).await, vec![200; 2]);

    // A node with another master key cannot open the shared keys, and says so.
    let stranger = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bp-auth"))
        .args(["keys", "list", "--data-dir"])
        .arg(stranger.path())
        .env("BP_AUTH__STORAGE__ENGINE", "postgres")
        .env("BP_AUTH__STORAGE__POSTGRES_URL", &nodes.url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("master_key_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix_web::test]
async fn a_node_killed_under_load_loses_nothing_acknowledged_and_the_other_keeps_serving() {
    // A rotation the killed node committed but never answered leaves its client with the
    // token before it: the idempotent-retry window lets that client go on (without it, its
    // retry is rightly reuse). Clients that need this set `refresh.reuse_grace_seconds`.
    let nodes = Nodes::start(2, &[("BP_AUTH__REFRESH__REUSE_GRACE_SECONDS", "30")]).await;
    let mut users = Vec::new();
    for _ in 0..6 {
        users.push(nodes.new_user().await.1);
    }
    // Each user refreshes in a loop, alternating nodes; the last acknowledged token is kept.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addresses: Vec<String> = nodes.nodes.iter().map(|n| n.address.clone()).collect();
    let mut loops = Vec::new();
    for t in users {
        let (stop, addresses) = (stop.clone(), addresses.clone());
        loops.push(tokio::spawn(async move {
            let client = Client::new();
            let mut acknowledged = t.refresh.clone();
            let (mut i, mut on_b) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let address = &addresses[i % 2];
                i += 1;
                let res = client
                    .post(format!("{address}/api/auth/refresh"))
                    .json(&json!({"refresh_token": acknowledged}))
                    .send()
                    .await;
                let Ok(res) = res else { continue };
                let status = res.status().as_u16();
                // Node A is killed mid-flight: its unanswered or failed requests acknowledge
                // nothing. Everything node B answers must be an answer.
                if address == &addresses[1] {
                    assert!(status == 200, "node B keeps serving: {status}");
                    on_b += 1;
                }
                if status == 200 {
                    let v: Value = res.json().await.unwrap();
                    acknowledged = v["refresh_token"].as_str().unwrap().to_string();
                }
            }
            (acknowledged, on_b)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut nodes = nodes;
    nodes.nodes.remove(0).kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let b = nodes.node(0);
    for l in loops {
        let (acknowledged, on_b) = l.await.unwrap();
        assert!(on_b > 0, "node B answered throughout");
        // The last acknowledged rotation is durable: its token is the live one.
        let res = b.refresh_raw(&acknowledged).await;
        assert_eq!(res.status(), 200, "the last acknowledged token is current");
    }
    // The killed node comes back on the same database and serves the same users.
    nodes
        .add(&[("BP_AUTH__REFRESH__REUSE_GRACE_SECONDS", "30")])
        .await;
    let (_, t) = nodes.new_user().await;
    assert_eq!(me_everywhere(&nodes, &t.access).await, vec![200; 2]);
}

#[actix_web::test]
async fn a_sled_data_dir_moves_into_postgresql_with_every_credential_working() {
    // A single sled node with a user, an API key and a session.
    let dir = tempfile::tempdir().unwrap();
    let sled = ServerProcess::start(dir.path(), &[]).await;
    let (email, t) = sled.new_user().await;
    let key = sled.new_api_key(&t.access).await;
    let res = sled.refresh_raw(&t.refresh).await;
    let t = Tokens::from_json(&json_of(res).await);
    let others: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(sled.new_user().await.0);
        }
        v
    };
    assert!(sled.terminate().success());

    let url = pg_cluster::database();
    let shared = tempfile::tempdir().unwrap();
    let master = shared.path().join("master.key");
    let out = Command::new(env!("CARGO_BIN_EXE_bp-auth"))
        .args(["admin", "migrate-to-postgres", "--data-dir"])
        .arg(dir.path())
        .args(["--postgres-url", &url])
        .env("BP_AUTH__STORAGE__MASTER_KEY_FILE", &master)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 users"), "{stdout}");
    assert!(
        !stdout.contains(&url),
        "the URL (it may hold a password) is not printed"
    );

    // Two nodes on the database: the old access token, refresh token and API key all work.
    let nodes = Nodes::start_on(2, url, shared, &[]).await;
    assert_eq!(me_everywhere(&nodes, &t.access).await, vec![200; 2]);
    for n in &nodes.nodes {
        let res = n.get_with_api_key("/api/auth/me", &key).await;
        assert_eq!(res.status(), 200, "the API key");
    }
    let res = nodes.refresh_raw(&t.refresh).await;
    assert_eq!(res.status(), 200, "the refresh token");
    for e in others.iter().chain([&email]) {
        let res = nodes.login_raw(e, PASSWORD).await;
        assert_eq!(res.status(), 200, "{e} logs in");
    }
    let res = nodes
        .register_raw(&json!({"email": email, "password": PASSWORD}))
        .await;
    expect_error(res, 409, "email_taken").await;

    // Run again: the database has the users already, and nothing is written twice.
    let out = Command::new(env!("CARGO_BIN_EXE_bp-auth"))
        .args(["admin", "migrate-to-postgres", "--data-dir"])
        .arg(dir.path())
        .args(["--postgres-url", &nodes.url])
        .env("BP_AUTH__STORAGE__MASTER_KEY_FILE", nodes.master_key())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a second migration into a used database is refused"
    );
}

#[actix_web::test]
async fn a_node_that_lost_its_listener_drops_what_it_may_have_missed() {
    let nodes = Nodes::start(2, &[]).await;
    let (a, b) = (nodes.node(0), nodes.node(1));
    let (_, t) = nodes.new_user().await;

    // Cut every node's listening connection from the database's side.
    let cut = over_listeners(&nodes.url, "pg_terminate_backend(pid)").await;
    assert_eq!(cut.len(), 2, "both nodes were listening");

    // While B is not listening, it caches the user again and A logs the session out: the
    // notification of that commit never reaches B.
    assert_eq!(b.me(&t.access).await.status(), 200);
    // Once B listens again it drops every cached user, so it honours the logout all the same.
    logout_on_a_is_honoured_by_b(a, b, &t, "the logout it was not told of").await;
}
