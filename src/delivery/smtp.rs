//! Email by SMTP (`delivery.email = "smtp"`): each message rendered by [`super::templates`] as
//! `multipart/alternative` (plain text and HTML) from `delivery.smtp_from`, handed to the relay
//! of `delivery.smtp_url` with lettre.
//!
//! `smtp://` means STARTTLS, required: unlike lettre's own reading of such a URL (plaintext
//! unless `?tls=required`), a relay that does not offer STARTTLS, or an attacker stripping it,
//! makes the send fail instead of going out in clear. `smtps://` is TLS from the first byte.
//! Plaintext has to be asked for (`?tls=none`), and never with a password.
//!
//! Every message opens its own connection. Codes are few, so a pool buys little, and without
//! one no pooled connection goes stale across a relay restart, none created on one actix
//! arbiter's runtime is driven from another's, and the transport can be built outside a
//! runtime.
//!
//! Nothing here logs a code, a body or the URL (which may hold the relay's password); the
//! relay's host and the message's purpose at most.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use url::Url;

use super::{templates, DeliveryError, Message, SendFuture, Sender};
use crate::config::DeliveryConfig;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: plaintext greeting, then STARTTLS, which the relay must offer.
    StartTls,
    /// `smtps://`: TLS from the start.
    ImplicitTls,
    /// `smtp://…?tls=none`: no TLS at all, for a relay on the same host or in tests.
    Plaintext,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartTls => "starttls",
            Self::ImplicitTls => "tls",
            Self::Plaintext => "none",
        }
    }
}

/// The checked SMTP settings. No `Debug` of the transport builder: it holds the credentials.
pub struct Settings {
    builder: AsyncSmtpTransportBuilder,
    pub host: String,
    pub security: Security,
    pub from: Mailbox,
    pub timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("security", &self.security)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Checks `delivery.smtp_*`; the error names the key and never repeats the URL.
    pub fn from_config(config: &DeliveryConfig) -> Result<Self, String> {
        if config.smtp_url.is_empty() {
            return Err("delivery.email = \"smtp\" needs delivery.smtp_url \
                        (smtp://user:password@host:587 or smtps://user:password@host:465)"
                .into());
        }
        if config.smtp_from.trim().is_empty() {
            return Err("delivery.email = \"smtp\" needs delivery.smtp_from \
                        (a mailbox such as \"BlitzPulse <no-reply@example.com>\")"
                .into());
        }
        let from: Mailbox = config.smtp_from.trim().parse().map_err(|e| {
            format!(
                "delivery.smtp_from is not a mailbox such as \
                 \"BlitzPulse <no-reply@example.com>\": {e}"
            )
        })?;
        if config.smtp_timeout_ms == 0 {
            return Err("delivery.smtp_timeout_ms must be at least 1".into());
        }
        let timeout = Duration::from_millis(config.smtp_timeout_ms);
        let (url, host, security) = lettre_url(&config.smtp_url)?;
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|e| format!("delivery.smtp_url: {e}"))?
            // Per read and write; the whole exchange is bounded by `timeout` too, in `send`.
            .timeout(Some(timeout));
        Ok(Self {
            builder,
            host,
            security,
            from,
            timeout,
        })
    }
}

/// Our reading of `smtp_url`, as the URL lettre reads the same way: the host (for logs), the
/// security, and the URL with `tls` set as lettre spells it.
fn lettre_url(raw: &str) -> Result<(String, String, Security), String> {
    let mut url = Url::parse(raw).map_err(|e| format!("delivery.smtp_url is not a URL: {e}"))?;
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "tls" if tls.is_none() => tls = Some(value.into_owned()),
            "tls" => return Err("delivery.smtp_url sets tls twice".into()),
            other => {
                return Err(format!(
                    "delivery.smtp_url: unknown parameter `{other}` (the only one is `tls`)"
                ))
            }
        }
    }
    let security = match (url.scheme(), tls.as_deref()) {
        ("smtp", None | Some("required")) => Security::StartTls,
        ("smtp", Some("none")) => Security::Plaintext,
        ("smtp", Some("opportunistic")) => {
            return Err(
                "delivery.smtp_url: tls=opportunistic would send in clear whenever \
                        STARTTLS is missing or stripped; use smtp:// (STARTTLS required), \
                        smtps://, or tls=none for a relay on the same host"
                    .into(),
            )
        }
        ("smtp", Some(other)) => {
            return Err(format!(
                "delivery.smtp_url: tls={other} is not `required` (the default) or `none`"
            ))
        }
        ("smtps", None) => Security::ImplicitTls,
        ("smtps", Some(_)) => {
            return Err("delivery.smtp_url: smtps:// is TLS from the start; drop `tls=`".into())
        }
        (other, _) => {
            return Err(format!(
                "delivery.smtp_url must start with smtp:// or smtps://, not {other}://"
            ))
        }
    };
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err("delivery.smtp_url names no host".into()),
    };
    match (url.username().is_empty(), url.password().is_some()) {
        (false, false) => {
            return Err("delivery.smtp_url has a user but no password (user:password@host)".into())
        }
        (_, true) if security == Security::Plaintext => {
            return Err(
                "delivery.smtp_url: tls=none would send the password in clear; \
                        use smtp:// (STARTTLS) or smtps://"
                    .into(),
            )
        }
        _ => {}
    }
    url.set_query(match security {
        Security::StartTls => Some("tls=required"),
        Security::ImplicitTls | Security::Plaintext => None,
    });
    url.set_fragment(None);
    Ok((url.to_string(), host, security))
}

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Arc<Mailbox>,
    host: Arc<str>,
    timeout: Duration,
}

impl Smtp {
    pub fn new(config: &DeliveryConfig) -> Result<Self, DeliveryError> {
        let settings = Settings::from_config(config).map_err(DeliveryError)?;
        tracing::info!(
            host = %settings.host,
            tls = settings.security.as_str(),
            "email goes out by SMTP"
        );
        if settings.security == Security::Plaintext {
            tracing::warn!(
                host = %settings.host,
                "delivery.smtp_url has tls=none: emails and their codes cross the network in clear"
            );
        }
        Ok(Self {
            transport: settings.builder.build(),
            from: Arc::new(settings.from),
            host: settings.host.into(),
            timeout: settings.timeout,
        })
    }
}

/// The email of `message`, from `from`.
pub fn compose(from: &Mailbox, message: &Message) -> Result<lettre::Message, DeliveryError> {
    let to: Mailbox = message
        .to
        .parse()
        .map_err(|e| DeliveryError(format!("the recipient is not an email address: {e}")))?;
    let rendered = templates::render(message.purpose, message.code.as_deref());
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(rendered.subject)
        // Under the sender's domain rather than this host's name, which says nothing to the
        // receiving side and may be internal.
        .message_id(Some(format!(
            "<{}@{}>",
            uuid::Uuid::now_v7().simple(),
            from.email.domain()
        )))
        .multipart(MultiPart::alternative_plain_html(
            rendered.text,
            rendered.html,
        ))
        .map_err(|e| DeliveryError(format!("the email could not be built: {e}")))
}

impl Sender for Smtp {
    fn send(&self, message: Message) -> SendFuture {
        let transport = self.transport.clone();
        let from = self.from.clone();
        let host = self.host.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let email = compose(&from, &message)?;
            let purpose = message.purpose.as_str();
            match tokio::time::timeout(timeout, transport.send(email)).await {
                Ok(Ok(_)) => {
                    tracing::debug!(host = %host, purpose, "email accepted by the SMTP relay");
                    Ok(())
                }
                Ok(Err(e)) => Err(DeliveryError(format!("SMTP relay {host}: {e}"))),
                Err(_) => Err(DeliveryError(format!(
                    "SMTP relay {host}: no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeliveryKind;
    use crate::delivery::{Channel, Purpose};
    use crate::domain::ids::UserId;
    use crate::domain::time::Timestamp;

    fn config(url: &str) -> DeliveryConfig {
        DeliveryConfig {
            email: Some(DeliveryKind::Smtp),
            smtp_url: url.into(),
            smtp_from: "BlitzPulse <no-reply@blitzpulse.example>".into(),
            ..DeliveryConfig::default()
        }
    }

    fn message(purpose: Purpose, code: Option<&str>) -> Message {
        let user = UserId::generate();
        match code {
            Some(c) => Message::new(
                Channel::Email,
                "ann@example.com",
                purpose,
                c,
                user,
                Timestamp(0),
            ),
            None => Message::notification(
                Channel::Email,
                "ann@example.com",
                purpose,
                user,
                Timestamp(0),
            ),
        }
    }

    #[test]
    fn smtp_urls_mean_starttls_tls_or_an_explicit_plaintext() {
        let (url, host, security) = lettre_url("smtp://u:p%40ss@mail.example:587").unwrap();
        assert_eq!(
            (host.as_str(), security),
            ("mail.example", Security::StartTls)
        );
        assert_eq!(url, "smtp://u:p%40ss@mail.example:587?tls=required");
        let (url, _, security) = lettre_url("smtp://mail.example?tls=required").unwrap();
        assert_eq!(security, Security::StartTls);
        assert_eq!(url, "smtp://mail.example?tls=required");
        let (url, _, security) = lettre_url("smtps://u:p@mail.example").unwrap();
        assert_eq!(security, Security::ImplicitTls);
        assert_eq!(url, "smtps://u:p@mail.example");
        let (url, host, security) = lettre_url("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(
            (host.as_str(), security),
            ("127.0.0.1", Security::Plaintext)
        );
        assert_eq!(url, "smtp://127.0.0.1:2525");
        // The EHLO name lettre reads from the path stays.
        let (url, _, _) = lettre_url("smtp://mail.example/auth.example").unwrap();
        assert_eq!(url, "smtp://mail.example/auth.example?tls=required");
    }

    #[test]
    fn doubtful_smtp_urls_are_refused_without_repeating_them() {
        for (url, says) in [
            ("smtp://[::1", "not a URL"),
            (
                "mail.example:587",
                "smtp:// or smtps://, not mail.example://",
            ),
            ("http://mail.example", "smtp:// or smtps://"),
            ("smtp://mail.example?tls=opportunistic", "opportunistic"),
            ("smtp://mail.example?tls=yes", "tls=yes"),
            ("smtp://mail.example?tls=none&tls=none", "twice"),
            (
                "smtp://mail.example?timeout=5",
                "unknown parameter `timeout`",
            ),
            ("smtps://mail.example?tls=none", "drop `tls=`"),
            (
                "smtp://user:hunter2@127.0.0.1:25?tls=none",
                "password in clear",
            ),
            ("smtp://user@mail.example", "no password"),
            ("smtp:///nohost", "no host"),
        ] {
            let err = Settings::from_config(&config(url)).unwrap_err();
            assert!(err.contains("delivery.smtp_url"), "{url}: {err}");
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn from_and_timeout_are_checked() {
        let mut c = config("smtp://mail.example");
        c.smtp_from = String::new();
        assert!(Settings::from_config(&c)
            .unwrap_err()
            .contains("needs delivery.smtp_from"));
        c.smtp_from = "not a mailbox".into();
        assert!(Settings::from_config(&c)
            .unwrap_err()
            .contains("delivery.smtp_from is not"));
        c.smtp_from = "no-reply@blitzpulse.example".into();
        c.smtp_timeout_ms = 0;
        assert!(Settings::from_config(&c)
            .unwrap_err()
            .contains("smtp_timeout_ms"));
        c.smtp_timeout_ms = 1;
        let s = Settings::from_config(&c).unwrap();
        assert_eq!(s.from.email.to_string(), "no-reply@blitzpulse.example");
        c.smtp_url = String::new();
        assert!(Settings::from_config(&c)
            .unwrap_err()
            .contains("needs delivery.smtp_url"));
    }

    #[test]
    fn settings_debug_hides_the_password() {
        let s = Settings::from_config(&config("smtps://u:hunter2@mail.example")).unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("mail.example"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_email_has_both_parts_and_the_code_only_in_the_bodies() {
        let from: Mailbox = "BlitzPulse <no-reply@blitzpulse.example>".parse().unwrap();
        let raw = compose(&from, &message(Purpose::Reactivate, Some("493817")))
            .unwrap()
            .formatted();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("From: BlitzPulse <no-reply@blitzpulse.example>\r\n"),
            "{head}"
        );
        assert!(head.contains("To: ann@example.com\r\n"), "{head}");
        assert!(head.contains(&format!(
            "Subject: {}\r\n",
            templates::subject(Purpose::Reactivate)
        )));
        assert!(
            head.contains("@blitzpulse.example>\r\n"),
            "Message-ID: {head}"
        );
        assert!(head.contains("Date: "), "{head}");
        assert!(head.contains("multipart/alternative"), "{head}");
        assert!(!head.contains("493817"));
        assert!(
            body.contains("Content-Type: text/plain; charset=utf-8"),
            "{body}"
        );
        assert!(
            body.contains("Content-Type: text/html; charset=utf-8"),
            "{body}"
        );
        assert_eq!(body.matches("493817").count(), 2, "{body}");
    }

    #[test]
    fn a_recipient_that_is_not_an_address_is_a_delivery_error() {
        let from: Mailbox = "no-reply@blitzpulse.example".parse().unwrap();
        let mut m = message(Purpose::PasswordChanged, None);
        m.to = "not an address".into();
        assert!(compose(&from, &m).is_err());
    }

    #[tokio::test]
    async fn nothing_listening_is_a_delivery_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let smtp = Smtp::new(&config(&format!("smtp://127.0.0.1:{port}?tls=none"))).unwrap();
        let err = smtp
            .send(message(Purpose::Reactivate, Some("493817")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
        assert!(!err.to_string().contains("493817"), "{err}");
    }

    #[tokio::test]
    async fn a_relay_that_never_greets_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                streams.push(s);
            }
        });
        let mut c = config(&format!("smtp://127.0.0.1:{port}?tls=none"));
        c.smtp_timeout_ms = 300;
        let smtp = Smtp::new(&c).unwrap();
        let started = std::time::Instant::now();
        let err = smtp
            .send(message(Purpose::PasswordChanged, None))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
        held.abort();
    }

    #[tokio::test]
    async fn starttls_is_required_of_a_relay_that_does_not_offer_it() {
        // A relay that greets and answers EHLO without STARTTLS: the send must fail rather
        // than go on in clear.
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 relay.test ESMTP\r\n").await.unwrap();
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line.clone());
                let answer: &[u8] = if line.starts_with("EHLO") {
                    b"250-relay.test\r\n250 8BITMIME\r\n"
                } else if line.starts_with("QUIT") {
                    b"221 bye\r\n"
                } else {
                    b"502 not here\r\n"
                };
                if write.write_all(answer).await.is_err() {
                    break;
                }
            }
            seen
        });
        let smtp = Smtp::new(&config(&format!("smtp://127.0.0.1:{port}"))).unwrap();
        assert!(smtp
            .send(message(Purpose::Reactivate, Some("493817")))
            .await
            .is_err());
        let seen = relay.await.unwrap();
        assert!(
            !seen
                .iter()
                .any(|l| l.starts_with("MAIL") || l.contains("493817")),
            "{seen:?}"
        );
    }
}
