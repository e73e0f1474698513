//! The HTTP side shared by setup, scenarios and the memory probes: the keep-alive client, the
//! login and register calls, and a bounded fan-out for the many requests of a setup phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Client;
use serde_json::json;

use crate::progress::counter_bar;
use crate::scenarios::Chain;
use crate::{Res, PASSWORD};

/// A keep-alive client: one per connection, so one TCP connection each.
pub(crate) fn client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// Waits for `/readyz` (a server opens its store and keys before it answers), up to a minute.
pub(crate) async fn wait_ready(base: &str) -> Res<()> {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = c.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{base} did not become ready").into())
}

/// The body of a 2xx answer, or why there was none.
pub(crate) async fn body_2xx(
    res: reqwest::Result<reqwest::Response>,
) -> Result<impl AsRef<[u8]> + Send, String> {
    let res = res.map_err(|e| format!("transport: {e}"))?;
    let status = res.status();
    let body = res.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
        Err(format!("HTTP {}: {text}", status.as_u16()))
    }
}

pub(crate) async fn login(client: &Client, base: &str, email: &str) -> Result<Chain, String> {
    let res = client
        .post(format!("{base}/api/auth/token"))
        .form(&[("username", email), ("password", PASSWORD)])
        .send()
        .await;
    let body = body_2xx(res).await?;
    Chain::of(body.as_ref(), email)
}

pub(crate) async fn register(client: &Client, base: &str, email: &str) -> Result<(), String> {
    let res = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await;
    body_2xx(res).await.map(drop)
}

/// Runs `f` over `items` with `concurrency` in flight, one client per slot, with a progress bar.
pub(crate) async fn fan_out<T, R, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    msg: &str,
    f: F,
) -> Vec<Result<R, String>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Client, T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, String>> + Send + 'static,
{
    let pb = counter_bar(items.len() as u64, msg);
    let clients: Vec<Client> = (0..concurrency.max(1)).map(|_| client()).collect();
    let f = Arc::new(f);
    let results = futures_util::stream::iter(items.into_iter().enumerate())
        .map(|(i, item)| {
            let c = clients[i % clients.len()].clone();
            let f = f.clone();
            let pb = pb.clone();
            async move {
                let r = tokio::spawn(f(c, item))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                pb.inc(1);
                r
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    pb.finish_and_clear();
    results
}
