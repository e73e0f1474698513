//! Writes each message to the log on the `bp_auth::delivery` target. Like the outbox, the log
//! is then the delivery itself, so it must only be chosen (`delivery.kind = "log"`) where the
//! log is as private as the outbox: local experiments, never production.

use super::{Message, SendFuture, Sender};

pub struct LogSender;

impl Sender for LogSender {
    fn send(&self, message: Message) -> SendFuture {
        tracing::warn!(
            target: "bp_auth::delivery",
            channel = ?message.channel,
            to = %message.to,
            purpose = ?message.purpose,
            code = message.code.as_deref().unwrap_or("-"),
            user = %message.user_id,
            "development delivery (delivery.kind = \"log\")"
        );
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &'static str {
        "log"
    }
}
