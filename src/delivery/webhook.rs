//! Delivery through an HTTP webhook: the outbox line's JSON POSTed to `delivery.webhook_url`,
//! with `X-BP-Timestamp: <unix seconds>` and `X-BP-Signature: sha256=<hex HMAC-SHA256 of
//! "<timestamp>.<body>" under delivery.webhook_secret>` (the timestamp is signed so that a
//! receiver can refuse a captured delivery replayed later), a timeout per attempt and
//! `delivery.webhook_retries` retries on failure or a non-2xx answer.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{DeliveryError, Message, SendFuture, Sender};
use crate::config::DeliveryConfig;

pub const SIGNATURE_HEADER: &str = "x-bp-signature";
pub const TIMESTAMP_HEADER: &str = "x-bp-timestamp";

pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    retries: u32,
}

impl Webhook {
    pub fn new(config: &DeliveryConfig) -> Result<Self, DeliveryError> {
        if config.webhook_url.is_empty() || config.webhook_secret.is_empty() {
            return Err(DeliveryError(
                "delivery.kind = \"webhook\" needs delivery.webhook_url and delivery.webhook_secret".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.webhook_timeout_ms.max(1)))
            .build()
            .map_err(|e| DeliveryError(e.to_string()))?;
        Ok(Self {
            client,
            url: config.webhook_url.clone(),
            secret: config.webhook_secret.as_bytes().to_vec(),
            retries: config.webhook_retries,
        })
    }
}

/// `sha256=<hex>` of `"<timestamp>.<body>"` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hmac_hex(secret, &[format!("{timestamp}.").as_bytes(), body])
}

/// `sha256=<hex>` of the concatenated `parts` under `secret`.
fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    for part in parts {
        mac.update(part);
    }
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

impl Sender for Webhook {
    fn send(&self, message: Message) -> SendFuture {
        let client = self.client.clone();
        let url = self.url.clone();
        let secret = self.secret.clone();
        let retries = self.retries;
        Box::pin(async move {
            let body = serde_json::to_vec(&message).map_err(|e| DeliveryError(e.to_string()))?;
            let mut last = String::new();
            for attempt in 0..=retries {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                // Each attempt is stamped when it leaves, so a retry is not refused as stale.
                let timestamp = crate::clock::now().0;
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(SIGNATURE_HEADER, signature(&secret, timestamp, &body))
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => last = format!("webhook answered {}", r.status()),
                    Err(e) => last = format!("webhook unreachable: {}", e.without_url()),
                }
            }
            Err(DeliveryError(last))
        })
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", &[b"what do ya want for nothing?"]),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature(b"Jefe", 0, b"what do ya want for nothing?"),
            hmac_hex(b"Jefe", &[b"0.what do ya want for nothing?"])
        );
        assert_ne!(
            signature(b"Jefe", 1, b"{}"),
            signature(b"Jefe", 2, b"{}"),
            "the timestamp is signed"
        );
    }
}
