//! The development outbox: one JSON object a line, appended to `<data_dir>/outbox.jsonl`.
//!
//! Each message is serialised first and written with a single `write_all` on a file opened
//! for appending, under a process-wide lock, then synced: a reader never sees half a line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DeliveryError, Message, SendFuture, Sender};

pub struct Outbox {
    path: Arc<PathBuf>,
    lock: Arc<Mutex<()>>,
}

impl Outbox {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path: Arc::new(path),
            lock: Arc::new(Mutex::new(())),
        }
    }
}

fn append(path: &Path, lock: &Mutex<()>, message: &Message) -> Result<(), DeliveryError> {
    let mut line = serde_json::to_vec(message).map_err(|e| DeliveryError(e.to_string()))?;
    line.push(b'\n');
    let _guard = lock
        .lock()
        .map_err(|_| DeliveryError("outbox lock poisoned".into()))?;
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| DeliveryError(e.to_string()))?;
    file.write_all(&line)
        .map_err(|e| DeliveryError(e.to_string()))?;
    file.sync_data().map_err(|e| DeliveryError(e.to_string()))
}

impl Sender for Outbox {
    fn send(&self, message: Message) -> SendFuture {
        let path = self.path.clone();
        let lock = self.lock.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || append(&path, &lock, &message))
                .await
                .map_err(|e| DeliveryError(e.to_string()))?
        })
    }

    fn name(&self) -> &'static str {
        "outbox"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Channel, Purpose};
    use crate::domain::ids::UserId;
    use crate::domain::time::Timestamp;

    #[tokio::test]
    async fn appends_whole_lines_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::new(dir.path().join("outbox.jsonl")));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let o = outbox.clone();
            tasks.push(tokio::spawn(async move {
                let m = Message::new(
                    Channel::Email,
                    "a@example.com",
                    Purpose::Reactivate,
                    &format!("{i:06}"),
                    UserId::generate(),
                    Timestamp(0),
                );
                o.send(m).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("outbox.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 20);
        assert!(lines
            .iter()
            .all(|l| l["channel"] == "email" && l["purpose"] == "reactivate"));
    }
}
