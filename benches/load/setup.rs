//! Setup per target, not measured: the logins that give the scenarios their access tokens and
//! refresh chains, API keys fetched from a running server, which optional routes it serves, and
//! the accounts registered on a server this harness did not seed.

use std::sync::Arc;
use std::time::Instant;

use bp_auth::domain::secrets::random_32;
use serde_json::Value;

use crate::http::{body_2xx, client, fan_out, login, register, wait_ready};
use crate::passkey;
use crate::scenarios::{Chain, Pool, Prebuilt, Slot};
use crate::wire::{Target, Wire};
use crate::{Res, Settings};

/// Logs in `count` accounts spread over `emails` (setup, not measured).
pub(crate) async fn setup_logins(
    base: &str,
    emails: &[String],
    count: usize,
    offset: usize,
    s: &Settings,
    msg: &str,
) -> Res<Vec<Chain>> {
    let n = emails.len();
    let picked: Vec<String> = (0..count)
        .map(|i| emails[(offset + i * n / count.max(1)) % n].clone())
        .collect();
    let base = base.to_string();
    let results = fan_out(picked, s.connections.min(16), msg, move |c, email| {
        let base = base.clone();
        async move { login(&c, &base, &email).await }
    })
    .await;
    let mut chains = Vec::with_capacity(results.len());
    for r in results {
        chains.push(r.map_err(|e| format!("setup login failed: {e}"))?);
    }
    Ok(chains)
}

/// Whether `path` is served (anything but 404 to a GET with `token`).
async fn route_served(base: &str, path: &str, token: &str) -> bool {
    match client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) => r.status() != reqwest::StatusCode::NOT_FOUND,
        Err(_) => false,
    }
}

/// Everything a target needs before its scenarios: accounts, tokens, keys, chains.
pub(crate) struct Prepared {
    pub(crate) pool: Arc<Pool>,
    /// One a connection: its refresh chain, its password-change account, its passkey.
    pub(crate) slots: Vec<Slot>,
    pub(crate) api_keys_served: bool,
    pub(crate) entitlements_served: bool,
    pub(crate) notes: Vec<String>,
}

/// Logs in, fetches keys and registers passkeys on `bases[0]` (the nodes of one deployment
/// share their accounts and keys); the scenarios then spread their connections over `bases`.
pub(crate) async fn prepare(
    bases: &[String],
    emails: Vec<String>,
    api_keys: Vec<String>,
    s: &Settings,
) -> Res<Prepared> {
    let base = bases.first().ok_or("no target")?.as_str();
    let mut notes = Vec::new();
    // The last 2 x connections accounts are the connections' own, for the scenarios that
    // change them (their passwords, their passkeys, which make a password login ask for a
    // second factor); the rest log in with the password, as token holders and refresh chains.
    let per = s.connections;
    let own = if emails.len() > 2 * per { 2 * per } else { 0 };
    let mut emails = emails;
    let owned = emails.split_off(emails.len() - own);
    let (pw_emails, pk_emails) = owned.split_at(own / 2);
    let token_users = emails.len().min((4 * s.connections).max(64));
    let started = Instant::now();
    let tokens = setup_logins(base, &emails, token_users, 0, s, "logging in (tokens)").await?;
    // Each connection's own refresh chain, on accounts after the token holders.
    let chains = setup_logins(
        base,
        &emails,
        s.connections,
        token_users,
        s,
        "logging in (refresh chains)",
    )
    .await?;
    let (pw, pk) = if own > 0 {
        (
            setup_logins(base, pw_emails, per, 0, s, "logging in (password-change)").await?,
            setup_logins(base, pk_emails, per, 0, s, "logging in (passkey-login)").await?,
        )
    } else {
        notes.push(format!(
            "password-change and passkey-login need more than {} accounts: skipped",
            2 * per
        ));
        (Vec::new(), Vec::new())
    };
    let target = Target::resolve(base).await?;
    let mut registering = Vec::new();
    for c in pk {
        let target = target.clone();
        registering.push(tokio::spawn(async move {
            let mut wire = Wire::new(target);
            passkey::register(&mut wire, &c.access)
                .await
                .map(|a| (c.email, a))
        }));
    }
    let mut passkeys = Vec::new();
    for r in registering {
        match r.await? {
            Ok(p) => passkeys.push(Some(p)),
            Err(e) => {
                notes.push(format!("passkey registration failed: {e}"));
                passkeys.push(None);
            }
        }
    }
    notes.push(format!(
        "setup: {} logins for access tokens, {} each for refresh chains, password changes and \
         passkeys (registered with a software authenticator) in {:.1} s",
        tokens.len(),
        chains.len(),
        started.elapsed().as_secs_f64()
    ));

    let jwts: Vec<String> = tokens.iter().map(|c| c.access.clone()).collect();
    let mut api_keys = api_keys;
    if api_keys.is_empty() {
        // Against a running server: each token holder's key, as a client would obtain it.
        if route_served(base, "/api/auth/api-key", &jwts[0]).await {
            let b = base.to_string();
            let results = fan_out(
                jwts.clone(),
                s.connections.min(16),
                "fetching API keys",
                move |c, t| {
                    let b = b.clone();
                    async move {
                        let res = c
                            .get(format!("{b}/api/auth/api-key"))
                            .bearer_auth(&t)
                            .send()
                            .await;
                        let body = body_2xx(res).await?;
                        let v: Value =
                            serde_json::from_slice(body.as_ref()).map_err(|e| e.to_string())?;
                        v["key"].as_str().map(str::to_string).ok_or_else(|| {
                            "the key was issued before: no secret in the answer".to_string()
                        })
                    }
                },
            )
            .await;
            api_keys = results.into_iter().filter_map(Result::ok).collect();
        } else {
            notes.push("GET /api/auth/api-key answers 404: me-apikey skipped".into());
        }
    }
    let entitlements_served = route_served(base, "/api/auth/me/entitlements", &jwts[0]).await;
    let mut targets = Vec::new();
    for b in bases {
        targets.push(Target::resolve(b).await?);
    }
    let prebuilt = targets
        .iter()
        .map(|t| Prebuilt::new(t, &jwts, &api_keys))
        .collect();
    let mut pw = pw.into_iter();
    let mut passkeys = passkeys.into_iter();
    let slots = chains
        .into_iter()
        .map(|chain| Slot {
            chain: Some(chain),
            pw: pw.next().map(|c| (c, false)),
            passkey: passkeys.next().flatten(),
            queue: Vec::new(),
        })
        .collect();
    Ok(Prepared {
        pool: Arc::new(Pool {
            targets,
            prebuilt,
            emails,
            run_id: run_id(),
            connections: s.connections,
        }),
        slots,
        api_keys_served: !api_keys.is_empty(),
        entitlements_served,
        notes,
    })
}

/// Against a running server: `s.users` fresh accounts registered over HTTP, as clients would
/// make them (the store is not ours to seed).
pub(crate) async fn register_accounts(
    url: &str,
    s: &Settings,
    notes: &mut Vec<String>,
) -> Res<Vec<String>> {
    wait_ready(url).await?;
    let run_id = run_id();
    let emails: Vec<String> = (0..s.users)
        .map(|i| format!("user-{run_id}-{i}@bench.example.com"))
        .collect();
    let started = Instant::now();
    let b = url.to_string();
    let results = fan_out(
        emails.clone(),
        s.connections,
        "registering accounts",
        move |c, e| {
            let b = b.clone();
            async move { register(&c, &b, &e).await }
        },
    )
    .await;
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("registering the bench accounts failed: {e}").into());
    }
    notes.push(format!(
        "registered {} accounts over HTTP in {:.1} s",
        s.users,
        started.elapsed().as_secs_f64()
    ));
    Ok(emails)
}

/// Eight random hex digits, so that the accounts a run creates on a server never collide with
/// an earlier run's.
fn run_id() -> String {
    format!(
        "{:08x}",
        u32::from_le_bytes(random_32()[..4].try_into().expect("4 bytes"))
    )
}
