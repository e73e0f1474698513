//! The export format (versioned JSON lines) and the two ends of it: [`ExportLines`], which
//! reads every user from a store, and [`Importer`], which writes them into an empty one.
//! Exports, backups and imports use them the same way whether the server runs or not.
//!
//! Format `bp-auth-export`: a header line, then for each user its tenant, its index entries
//! and its snapshot. Version 2 adds one `keys` line right after the header (a backup made with
//! `--include-keys`); a file without keys is written as version 1, so older releases still
//! import it, and version 1 files import here.
//!
//! Consistency: each user's snapshot is read whole, in one read of the store, and its tenant
//! and index lines are derived from that same snapshot; so every user is exported as it was at
//! one point of its history, with sessions, keys and indexes that agree. Users are read one
//! after the other, so two users may be caught at different moments, and a user registered
//! after the export began may be missing. Before an export is reported done, everything it
//! read has been made durable, so a restore never holds a change the server did not keep.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufRead;

use super::commands::Outcome;
use super::wire::{self, MAX_RECORD};
use super::AdminError;
use crate::clock;
use crate::domain::ids::UserId;
use crate::domain::sessions::Session;
use crate::domain::user::{Tenant, UserState};
use crate::keys::{self, KeyFiles, KeyMaterial};
use crate::store::{Created, IndexChange, Store, Ticket};

pub const EXPORT_FORMAT: &str = "bp-auth-export";
/// The newest version written: 2 when the file holds keys, else 1.
pub const EXPORT_VERSION: u32 = 2;
const VERSION_WITHOUT_KEYS: u32 = 1;

/// How long an import waits for its next line.
pub const IMPORT_IDLE: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header {
        format: String,
        version: u32,
        exported_at: String,
    },
    /// Every key file of the data dir (version 2, right after the header).
    Keys {
        keys: KeyMaterial,
    },
    User {
        user: Box<UserState>,
    },
    Tenant {
        tenant: Tenant,
    },
    EmailIndex {
        email: String,
        user_id: UserId,
    },
    ApiKeyIndex {
        digest: String,
        user_id: UserId,
    },
}

fn encode(line: &Line) -> Result<String, AdminError> {
    serde_json::to_string(line).map_err(|e| AdminError::Invalid(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lines of an export, one at a time, so that neither end holds the whole database.
/// Secrets appear only as stored (password and key hashes, sealed TOTP secrets), except in the
/// `keys` line, present only when keys were asked for.
pub struct ExportLines {
    store: Arc<dyn Store>,
    ids: std::vec::IntoIter<UserId>,
    pending: VecDeque<String>,
    users: usize,
    keys: bool,
}

impl ExportLines {
    pub fn new(store: Arc<dyn Store>, keys: Option<KeyMaterial>) -> Result<Self, AdminError> {
        let version = if keys.is_some() {
            EXPORT_VERSION
        } else {
            VERSION_WITHOUT_KEYS
        };
        let mut pending = VecDeque::from([encode(&Line::Header {
            format: EXPORT_FORMAT.into(),
            version,
            exported_at: clock::now().rfc3339(),
        })?]);
        let with_keys = keys.is_some();
        if let Some(keys) = keys {
            pending.push_back(encode(&Line::Keys { keys })?);
        }
        let ids = store.user_ids()?.into_iter();
        Ok(Self {
            store,
            ids,
            pending,
            users: 0,
            keys: with_keys,
        })
    }

    /// Users written so far (all of them once the lines are exhausted).
    pub fn users(&self) -> usize {
        self.users
    }

    pub fn outcome(&self) -> Outcome {
        Outcome::Exported {
            users: self.users,
            keys: self.keys,
        }
    }

    /// Queues the lines of the next user; `false` once there is none.
    fn next_user(&mut self) -> Result<bool, AdminError> {
        for id in self.ids.by_ref() {
            let Some(user) = self.store.load_user(id)? else {
                continue;
            };
            self.pending.push_back(encode(&Line::Tenant {
                tenant: user.tenant.clone(),
            })?);
            self.pending.push_back(encode(&Line::EmailIndex {
                email: user.email_key.clone(),
                user_id: user.id,
            })?);
            if let Some(k) = &user.api_key {
                self.pending.push_back(encode(&Line::ApiKeyIndex {
                    digest: hex(&k.digest),
                    user_id: user.id,
                })?);
            }
            self.pending.push_back(encode(&Line::User {
                user: Box::new(user),
            })?);
            self.users += 1;
            return Ok(true);
        }
        Ok(false)
    }
}

impl Iterator for ExportLines {
    type Item = Result<String, AdminError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending.is_empty() {
            match self.next_user() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        self.pending.pop_front().map(Ok)
    }
}

/// Waits until everything written to `store` so far, and so every snapshot an export read, is
/// as durable as the store's mode promises.
pub async fn settle(store: &dyn Store) -> Result<(), AdminError> {
    let commit = store.commit();
    Ok(commit.durable(commit.written()).await?)
}

/// What an import may do with a backup's keys.
#[derive(Clone, Copy)]
pub enum KeyPolicy<'a> {
    /// A stopped server's key files: write the keys it lacks; refuse if it has others.
    Install(&'a dyn KeyFiles),
    /// A running server, which cannot swap the keys it runs with: accept only its own.
    MustMatch(&'a dyn KeyFiles),
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Header,
    /// The header was read; the keys line may come (version 2).
    KeysOrRecords,
    Records,
}

/// Writes export lines, one at a time, into an empty store: the snapshots through
/// `create_user`, which claims each email, and the API-key index beside them, so that the
/// indexes are rebuilt from the snapshots; the exported index lines are only counted and
/// checked.
pub struct Importer<'a> {
    store: &'a dyn Store,
    keys: KeyPolicy<'a>,
    expect: Expect,
    version: u32,
    line: usize,
    users: usize,
    emails: usize,
    had_keys: bool,
    last: Option<Ticket>,
}

impl<'a> Importer<'a> {
    /// Refuses a store that already has users: an import restores, it never merges.
    pub fn new(store: &'a dyn Store, keys: KeyPolicy<'a>) -> Result<Self, AdminError> {
        if !store.user_ids()?.is_empty() {
            return Err(AdminError::Invalid(
                "import needs an empty data directory".into(),
            ));
        }
        Ok(Self {
            store,
            keys,
            expect: Expect::Header,
            version: 0,
            line: 0,
            users: 0,
            emails: 0,
            had_keys: false,
            last: None,
        })
    }

    /// Takes the next line of the file.
    pub fn line(&mut self, text: &str) -> Result<(), AdminError> {
        self.line += 1;
        if text.trim().is_empty() {
            return Ok(());
        }
        self.take(text).map_err(|e| self.stopped(e))
    }

    /// `e`, saying where the import stopped and what it had written by then.
    pub fn stopped(&self, e: impl std::fmt::Display) -> AdminError {
        let written = if self.users == 0 {
            String::new()
        } else {
            format!(
                " ({} users were written before it; the data directory is no longer empty)",
                self.users
            )
        };
        AdminError::Invalid(format!(
            "import stopped at line {}: {e}{written}",
            self.line
        ))
    }

    fn take(&mut self, text: &str) -> Result<(), AdminError> {
        if self.expect == Expect::Header {
            return self.header(text);
        }
        let parsed: Line =
            serde_json::from_str(text).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let first_record = self.expect == Expect::KeysOrRecords;
        self.expect = Expect::Records;
        match parsed {
            Line::Keys { keys } if first_record && self.version >= 2 => self.install_keys(&keys),
            Line::Keys { .. } => Err(AdminError::Invalid(
                "keys may only follow a version 2 header".into(),
            )),
            Line::User { mut user } => {
                user.sessions
                    .iter_mut()
                    .for_each(Session::complete_from_before_format_3);
                self.user(&user)
            }
            Line::EmailIndex { .. } => {
                self.emails += 1;
                Ok(())
            }
            Line::Header { .. } => Err(AdminError::Invalid("a second header".into())),
            Line::Tenant { .. } | Line::ApiKeyIndex { .. } => Ok(()),
        }
    }

    fn header(&mut self, text: &str) -> Result<(), AdminError> {
        match serde_json::from_str::<Line>(text) {
            Ok(Line::Header {
                format, version, ..
            }) if format == EXPORT_FORMAT && (1..=EXPORT_VERSION).contains(&version) => {
                self.version = version;
                self.expect = Expect::KeysOrRecords;
                Ok(())
            }
            _ => Err(AdminError::Invalid(format!(
                "not a {EXPORT_FORMAT} file of version 1 to {EXPORT_VERSION}"
            ))),
        }
    }

    fn install_keys(&mut self, wanted: &KeyMaterial) -> Result<(), AdminError> {
        let (dir, install) = match self.keys {
            KeyPolicy::Install(dir) => (dir, true),
            KeyPolicy::MustMatch(dir) => (dir, false),
        };
        let d = keys::key_differences(dir, wanted)?;
        let identical = d.conflicting.is_empty() && d.missing.is_empty();
        if !install && !identical {
            let mut differ = d.conflicting;
            differ.extend(d.missing);
            return Err(AdminError::Invalid(format!(
                "the backup's keys differ from this running server's ({}), and a running server \
                 cannot change its keys: stop it and import into its data directory, or import \
                 a backup made without --include-keys",
                differ.join(", ")
            )));
        }
        if !d.conflicting.is_empty() {
            return Err(AdminError::Invalid(format!(
                "the data directory has keys of its own that differ from the backup's ({}); \
                 import into a data directory without keys/, or remove it first if it holds \
                 nothing worth keeping",
                d.conflicting.join(", ")
            )));
        }
        if install {
            keys::write_missing_keys(dir, wanted)?;
        }
        self.had_keys = true;
        Ok(())
    }

    fn user(&mut self, user: &UserState) -> Result<(), AdminError> {
        let index: Vec<IndexChange> = user
            .api_key
            .iter()
            .map(|k| IndexChange::ApiKeyPut(k.digest))
            .chain(
                user.passkeys
                    .iter()
                    .map(|p| IndexChange::PasskeyPut(p.credential_id.clone())),
            )
            .collect();
        // With index entries to claim, the user is created one revision back and then written
        // at its own with them, so the second write is an ordinary change over the first (a
        // shared engine accepts a write only over the revision before it).
        let first = if index.is_empty() {
            std::borrow::Cow::Borrowed(user)
        } else {
            let mut earlier = user.clone();
            earlier.revision = user.revision.wrapping_sub(1);
            std::borrow::Cow::Owned(earlier)
        };
        match self.store.create_user(&first)? {
            Created::EmailTaken => {
                return Err(AdminError::Invalid(format!(
                    "duplicate email {}",
                    user.email_key
                )))
            }
            Created::IdentityTaken => {
                return Err(AdminError::Invalid(format!(
                    "an identity of {} is linked to another user",
                    user.email_key
                )))
            }
            Created::Yes(t) => self.last = Some(t),
        }
        // The same snapshot again, with its API key's and passkeys' index entries: an actor
        // started in between (a running server) loaded the same state, so nothing diverges.
        if !index.is_empty() {
            self.last = Some(self.store.save_user(user, &index)?);
        }
        self.users += 1;
        Ok(())
    }

    /// Checks that the file was whole and waits until every user written is durable.
    pub async fn finish(self) -> Result<Outcome, AdminError> {
        if self.expect == Expect::Header {
            return Err(AdminError::Invalid("empty export file".into()));
        }
        if self.emails != self.users {
            return Err(self.stopped(format!(
                "{} users but {} email index entries",
                self.users, self.emails
            )));
        }
        if let Some(t) = self.last {
            self.store.commit().durable(t).await?;
        }
        Ok(Outcome::Imported {
            users: self.users,
            keys: self.had_keys,
        })
    }
}

/// Feeds every line of `reader` to `importer`, each within [`IMPORT_IDLE`] and at most
/// [`MAX_RECORD`] bytes long, up to the end of the input.
pub async fn feed<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    importer: &mut Importer<'_>,
) -> Result<(), AdminError> {
    let mut line = String::new();
    loop {
        let read =
            tokio::time::timeout(IMPORT_IDLE, wire::read_line(reader, &mut line, MAX_RECORD));
        match read.await {
            Err(_) => {
                importer.line += 1;
                return Err(importer.stopped(format!(
                    "no next line within {} seconds",
                    IMPORT_IDLE.as_secs()
                )));
            }
            Ok(Err(e)) => {
                importer.line += 1;
                return Err(importer.stopped(e));
            }
            Ok(Ok(false)) => return Ok(()),
            Ok(Ok(true)) => importer.line(&line)?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::domain::time::Timestamp;
    use crate::domain::user::fixtures::user;
    use std::path::Path;

    fn store(dir: &Path) -> Arc<dyn Store> {
        crate::store::open(dir, &StorageConfig::default()).unwrap()
    }

    /// Imports `lines` into a fresh store of its own (a store just dropped may hold its lock a
    /// moment longer).
    async fn import(dir: &Path, lines: &[String]) -> Result<Outcome, AdminError> {
        let fresh = tempfile::tempdir_in(dir).unwrap();
        let target = store(fresh.path());
        let keys = fresh.path().to_path_buf();
        let mut importer = Importer::new(target.as_ref(), KeyPolicy::Install(&keys))?;
        for l in lines {
            importer.line(l)?;
        }
        importer.finish().await
    }

    #[tokio::test]
    async fn an_export_without_keys_is_version_1_and_imports_with_its_api_key_index() {
        let dir = tempfile::tempdir().unwrap();
        let source = store(&dir.path().join("source"));
        let mut a = user();
        source.create_user(&a).unwrap();
        a.api_key = Some(crate::domain::apikey::ApiKey::generate(Timestamp(1)).record);
        let digest = a.api_key.as_ref().unwrap().digest;
        source
            .save_user(&a, &[IndexChange::ApiKeyPut(digest)])
            .unwrap();
        let lines: Vec<String> = ExportLines::new(source.clone(), None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(header["version"], 1);
        assert!(lines.iter().all(|l| !l.contains("\"keys\"")));

        let target = store(&dir.path().join("target"));
        let keys = dir.path().to_path_buf();
        let mut importer = Importer::new(target.as_ref(), KeyPolicy::Install(&keys)).unwrap();
        for l in &lines {
            importer.line(l).unwrap();
        }
        let outcome = importer.finish().await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Imported {
                users: 1,
                keys: false
            }
        );
        assert_eq!(target.user_by_api_key(&digest).unwrap(), Some(a.id));
        assert_eq!(target.load_user(a.id).unwrap().unwrap().api_key, a.api_key);
        assert!(
            Importer::new(target.as_ref(), KeyPolicy::Install(&keys)).is_err(),
            "only into an empty store"
        );
    }

    #[tokio::test]
    async fn an_import_claims_the_identities_and_refuses_one_taken_twice() {
        use crate::domain::credentials::Email;
        use crate::domain::identities::{index_key, ProviderClaims};
        let dir = tempfile::tempdir().unwrap();
        let source = store(&dir.path().join("source"));
        let claims = |email: &str| ProviderClaims {
            provider: "google".into(),
            subject: "g-1".into(),
            email: Some(email.into()),
            email_verified: true,
            name: None,
        };
        let made = |email: &str| {
            UserState::from_identity(
                &claims(email),
                Email::parse(email).unwrap(),
                &crate::domain::events::Origin::default(),
                Timestamp(1_800_000_000),
            )
        };
        let a = made("ada@example.com");
        source.create_user(&a).unwrap();
        let lines: Vec<String> = ExportLines::new(source.clone(), None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let fresh = tempfile::tempdir_in(dir.path()).unwrap();
        let target = store(fresh.path());
        let keys = fresh.path().to_path_buf();
        let mut importer = Importer::new(target.as_ref(), KeyPolicy::Install(&keys)).unwrap();
        for l in &lines {
            importer.line(l).unwrap();
        }
        importer.finish().await.unwrap();
        assert_eq!(
            target
                .user_by_identity(&index_key("google", "g-1"))
                .unwrap(),
            Some(a.id)
        );
        assert_eq!(
            target.load_user(a.id).unwrap().unwrap().identities,
            a.identities
        );
        // A file whose two users claim one identity is refused.
        let b = made("bob@example.com");
        let b_line = lines
            .iter()
            .find(|l| l.contains("\"user\""))
            .unwrap()
            .replace(&a.id.to_string(), &b.id.to_string())
            .replace("ada@example.com", "bob@example.com");
        let mut twice = lines.clone();
        twice.insert(2, b_line);
        let err = import(dir.path(), &twice).await.unwrap_err().to_string();
        assert!(err.contains("linked to another user"), "{err}");
    }

    #[tokio::test]
    async fn malformed_files_are_refused_saying_where() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"type":"header","format":"bp-auth-export","version":1,"exported_at":"x"}"#;
        let v3 = v1.replace("\"version\":1", "\"version\":3");
        let keys = r#"{"type":"keys","keys":{"signing":[],"server_key":null,"data_key":null}}"#;
        let cases: [(&[&str], &str); 5] = [
            (&[], "empty export file"),
            (&["{\"hello\":1}"], "line 1: not a bp-auth-export file"),
            (
                &[&v3],
                "line 1: not a bp-auth-export file of version 1 to 2",
            ),
            (
                &[v1, keys],
                "line 2: keys may only follow a version 2 header",
            ),
            (&[v1, v1], "line 2: a second header"),
        ];
        for (lines, expected) in cases {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let err = import(dir.path(), &lines).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{lines:?}: {err}");
        }
    }
}
