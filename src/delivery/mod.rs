//! Getting verification codes and notifications to people: SMS and email through one
//! [`Sender`] trait, each channel with the delivery `delivery.sms` / `delivery.email` (else
//! `delivery.kind`) chooses, joined by a [`Router`].
//!
//! - [`outbox::Outbox`] (the default, for development and tests) appends one JSON line per
//!   message to `<data_dir>/outbox.jsonl`: the outbox *is* the delivery, so it holds the code.
//! - [`webhook::Webhook`] POSTs the same JSON to a configured URL, signed with HMAC-SHA256, with
//!   a timeout and bounded retries; production gateways (SMS, SMTP relays) sit behind it.
//! - [`smtp::Smtp`] (email only) sends the message rendered by [`templates`] to an SMTP relay.
//! - [`log::LogSender`] writes the message to the log, for local experiments only.

pub mod log;
pub mod outbox;
pub mod smtp;
pub mod templates;
pub mod webhook;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{DeliveryConfig, DeliveryKind};
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    VerifyPhone,
    Reactivate,
    VerifyEmail,
    PasswordReset,
    ChangeEmail,
    /// A notification (no code): the password was changed or reset.
    PasswordChanged,
    /// A notification (no code) to the old address: the account's email was changed.
    EmailChanged,
}

impl Purpose {
    /// As the outbox writes it; also what a code's hash is bound to, so a code issued for one
    /// purpose never confirms another.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyPhone => "verify_phone",
            Self::Reactivate => "reactivate",
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
            Self::ChangeEmail => "change_email",
            Self::PasswordChanged => "password_changed",
            Self::EmailChanged => "email_changed",
        }
    }
}

/// One message, in the outbox line's shape.
#[derive(Clone, Serialize)]
pub struct Message {
    pub channel: Channel,
    pub to: String,
    pub purpose: Purpose,
    /// `None` for notifications, which carry no code (`"code": null` in the outbox).
    pub code: Option<String>,
    pub user_id: String,
    pub sent_at: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("purpose", &self.purpose)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Message {
    pub fn new(
        channel: Channel,
        to: &str,
        purpose: Purpose,
        code: &str,
        user: UserId,
        now: Timestamp,
    ) -> Self {
        Self {
            code: Some(code.to_string()),
            ..Self::notification(channel, to, purpose, user, now)
        }
    }

    /// A message without a code, telling the account's owner that something changed.
    pub fn notification(
        channel: Channel,
        to: &str,
        purpose: Purpose,
        user: UserId,
        now: Timestamp,
    ) -> Self {
        Self {
            channel,
            to: to.to_string(),
            purpose,
            code: None,
            user_id: user.to_string(),
            sent_at: now.rfc3339(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("delivery failed: {0}")]
pub struct DeliveryError(pub String);

pub type SendFuture = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'static>>;

/// A way of delivering messages. `send` owns what it needs, so the future can outlive `self`.
pub trait Sender: Send + Sync + 'static {
    fn send(&self, message: Message) -> SendFuture;
    fn name(&self) -> &'static str;
}

/// The sender the configuration chooses: one per channel, behind a [`Router`] when they
/// differ. A kind both channels use is built once, so they share its state (the outbox's lock).
pub fn from_config(
    config: &DeliveryConfig,
    data_dir: &Path,
) -> Result<Arc<dyn Sender>, DeliveryError> {
    let build = |kind| -> Result<Arc<dyn Sender>, DeliveryError> {
        Ok(match kind {
            DeliveryKind::Outbox => Arc::new(outbox::Outbox::new(data_dir.join("outbox.jsonl"))),
            DeliveryKind::Log => Arc::new(log::LogSender),
            DeliveryKind::Webhook => Arc::new(webhook::Webhook::new(config)?),
            DeliveryKind::Smtp => Arc::new(smtp::Smtp::new(config)?),
        })
    };
    let (sms, email) = (config.sms_kind(), config.email_kind());
    if sms == DeliveryKind::Smtp {
        return Err(DeliveryError(
            "SMTP sends email only: set delivery.sms to outbox, webhook or log".into(),
        ));
    }
    tracing::info!(sms = sms.as_str(), email = email.as_str(), "code delivery");
    if sms == email {
        return build(sms);
    }
    Ok(Arc::new(Router {
        sms: build(sms)?,
        email: build(email)?,
    }))
}

/// Sends each message through its channel's sender, so that the actors hold one sender
/// whatever the configuration.
pub struct Router {
    pub sms: Arc<dyn Sender>,
    pub email: Arc<dyn Sender>,
}

impl Sender for Router {
    fn send(&self, message: Message) -> SendFuture {
        match message.channel {
            Channel::Sms => self.sms.send(message),
            Channel::Email => self.email.send(message),
        }
    }

    fn name(&self) -> &'static str {
        "router"
    }
}

/// `+447700900123` → `+44*******123`: the first and last three characters kept.
pub fn mask(destination: &str) -> String {
    let chars: Vec<char> = destination.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let n = chars.len();
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < 3 || i >= n - 3 { *c } else { '*' })
        .collect()
}

/// `ada@example.com` → `a***@example.com`: the first character and the domain kept.
pub fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => mask(address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_like_the_contract() {
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
        assert_eq!(mask_email("x@y.org"), "x***@y.org");
    }

    #[test]
    fn masks_like_the_contract() {
        assert_eq!(mask("+447700900123"), "+44*******123");
        assert_eq!(mask("+1234"), "*****");
    }

    /// Counts what it is handed, by purpose.
    struct Recorder(&'static str, std::sync::Mutex<Vec<Purpose>>);

    impl Sender for Recorder {
        fn send(&self, message: Message) -> SendFuture {
            if let Ok(mut seen) = self.1.lock() {
                seen.push(message.purpose);
            }
            Box::pin(async { Ok(()) })
        }

        fn name(&self) -> &'static str {
            self.0
        }
    }

    #[tokio::test]
    async fn the_router_sends_each_channel_to_its_sender() {
        let sms = Arc::new(Recorder("sms", Default::default()));
        let email = Arc::new(Recorder("email", Default::default()));
        let router = Router {
            sms: sms.clone(),
            email: email.clone(),
        };
        let user = UserId::generate();
        router
            .send(Message::new(
                Channel::Sms,
                "+447700900123",
                Purpose::VerifyPhone,
                "123456",
                user,
                Timestamp(0),
            ))
            .await
            .unwrap();
        router
            .send(Message::notification(
                Channel::Email,
                "a@example.com",
                Purpose::PasswordChanged,
                user,
                Timestamp(0),
            ))
            .await
            .unwrap();
        assert_eq!(*sms.1.lock().unwrap(), [Purpose::VerifyPhone]);
        assert_eq!(*email.1.lock().unwrap(), [Purpose::PasswordChanged]);
    }

    #[test]
    fn one_sender_when_both_channels_agree_else_a_router() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = DeliveryConfig::default();
        assert_eq!(from_config(&c, dir.path()).unwrap().name(), "outbox");
        c.email = Some(DeliveryKind::Log);
        assert_eq!(from_config(&c, dir.path()).unwrap().name(), "router");
        c.sms = Some(DeliveryKind::Log);
        assert_eq!(from_config(&c, dir.path()).unwrap().name(), "log");
        c.sms = Some(DeliveryKind::Smtp);
        assert!(from_config(&c, dir.path()).is_err());
    }

    #[test]
    fn debug_hides_the_code() {
        let m = Message::new(
            Channel::Sms,
            "+447700900123",
            Purpose::VerifyPhone,
            "123456",
            UserId::generate(),
            Timestamp(0),
        );
        assert!(!format!("{m:?}").contains("123456"));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["channel"], "sms");
        assert_eq!(json["purpose"], "verify_phone");
    }
}
