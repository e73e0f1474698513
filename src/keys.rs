//! Key material: Ed25519 signing keys (one file each, named by `kid`) and the server and data
//! keys, in the data dir's `keys/` or, for nodes sharing a database, in the database
//! ([`KeyFiles`]). Generated on first start, readable by the owner only, loaded on later starts so
//! that tokens issued before a restart still verify.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::domain::secrets::{random_32, DataKey, ServerKey};
use crate::domain::time::Timestamp;
use crate::domain::tokens::KeyPair;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("key material in the backup: {0}")]
    Invalid(String),
}

fn file_err(path: &Path, e: impl ToString) -> KeyError {
    KeyError::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Signing keys are `keys/ed25519-<kid>.json`; the other files there (`server.key`,
/// `data.key`) are not signing keys.
const SIGNING_PREFIX: &str = "ed25519-";

/// A signing key as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    kid: String,
    created_at: i64,
    /// base64url of the 32-byte Ed25519 seed.
    seed: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// The key pair, checked against its `kid`.
    fn pair(&self) -> Result<KeyPair, String> {
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&self.seed)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or("seed is not 32 bytes of base64url")?;
        let pair = KeyPair::from_seed(&seed);
        if pair.kid != self.kid {
            return Err("kid does not match the key".into());
        }
        Ok(pair)
    }

    fn file_name(&self) -> String {
        format!("{SIGNING_PREFIX}{}.json", self.kid)
    }
}

/// The signing keys found in the data dir, newest first, with their creation times.
pub struct SigningKeys {
    pub keys: Vec<(KeyPair, Timestamp)>,
}

/// Where a signing key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens.
    Active,
    /// Superseded; still published and verifying until its last tokens have expired.
    Retiring { until: Timestamp },
    /// Every token it signed has expired; no longer published.
    Retired,
}

impl KeyState {
    pub fn label(self) -> String {
        match self {
            Self::Active => "active".into(),
            Self::Retiring { until } => format!("retiring until {}", until.rfc3339()),
            Self::Retired => "retired".into(),
        }
    }
}

impl SigningKeys {
    /// The key new tokens are signed with: the newest.
    pub fn active(&self) -> Option<&KeyPair> {
        self.keys.first().map(|(k, _)| k)
    }

    /// Each key with its creation time and state. A key is superseded when the next newer key
    /// was created; tokens it signed live at most `max_token_life` seconds after that.
    pub fn states(
        &self,
        max_token_life: u64,
        now: Timestamp,
    ) -> Vec<(&KeyPair, Timestamp, KeyState)> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, (k, created))| {
                let state = match i.checked_sub(1).map(|newer| self.keys[newer].1) {
                    None => KeyState::Active,
                    Some(superseded) => {
                        let until = superseded.plus(max_token_life);
                        if now < until {
                            KeyState::Retiring { until }
                        } else {
                            KeyState::Retired
                        }
                    }
                };
                (k, *created, state)
            })
            .collect()
    }

    /// The keys the JWKS publishes and verifiers accept: all but the retired.
    pub fn published(&self, max_token_life: u64, now: Timestamp) -> Vec<KeyPair> {
        self.states(max_token_life, now)
            .into_iter()
            .filter(|(_, _, s)| *s != KeyState::Retired)
            .map(|(k, _, _)| k.clone())
            .collect()
    }
}

const SERVER_KEY: &str = "server.key";
const DATA_KEY: &str = "data.key";

/// Where the key files live: the data dir's `keys/` (a `Path`: the data dir), or, when several
/// nodes share a database, the database itself (sealed under the master key; see
/// `store::postgres`). Files are never changed once written: a rotation adds a signing key.
pub trait KeyFiles: Send + Sync {
    /// Every key file: its name and contents.
    fn read_all(&self) -> Result<Vec<(String, Vec<u8>)>, KeyError>;
    /// Writes the new file `name`, durably; `Ok(false)`, writing nothing, if it exists.
    fn create(&self, name: &str, contents: &[u8]) -> Result<bool, KeyError>;
}

impl KeyFiles for Path {
    fn read_all(&self) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
        let dir = self.join("keys");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| file_err(&dir, e))? {
            let path = entry.map_err(|e| file_err(&dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !path.is_file() {
                continue;
            }
            let name = name.to_string();
            let bytes = fs::read(&path).map_err(|e| file_err(&path, e))?;
            files.push((name, bytes));
        }
        Ok(files)
    }

    fn create(&self, name: &str, contents: &[u8]) -> Result<bool, KeyError> {
        let path = keys_dir(self)?.join(name);
        if path.exists() {
            return Ok(false);
        }
        write_private(&path, contents)?;
        Ok(true)
    }
}

impl KeyFiles for PathBuf {
    fn read_all(&self) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
        self.as_path().read_all()
    }

    fn create(&self, name: &str, contents: &[u8]) -> Result<bool, KeyError> {
        self.as_path().create(name, contents)
    }
}

/// An error about the key file `name` of `files`.
fn named_err(name: &str, e: impl ToString) -> KeyError {
    KeyError::File {
        path: PathBuf::from("keys").join(name),
        msg: e.to_string(),
    }
}

fn keys_dir(data_dir: &Path) -> Result<PathBuf, KeyError> {
    let dir = data_dir.join("keys");
    if !dir.exists() {
        fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        restrict(&dir, 0o700)?;
    }
    Ok(dir)
}
#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| file_err(path, e))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<(), KeyError> {
    Ok(())
}

/// Writes `contents` to a new owner-only file, durably, failing if it exists.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| file_err(path, e))?;
    f.write_all(contents).map_err(|e| file_err(path, e))?;
    f.sync_all().map_err(|e| file_err(path, e))
}

/// Creates a new signing key and returns it.
pub fn generate_signing_key<K: KeyFiles + ?Sized>(
    files: &K,
    now: Timestamp,
) -> Result<KeyPair, KeyError> {
    // Creation times order the keys (the newest signs), in whole seconds: a key made in the
    // same second as the newest existing one is dated one second later, so it still sorts first.
    let newest = read_signing_keys(files)?.into_iter().map(|(_, t)| t).max();
    let now = match newest {
        Some(t) if t >= now => Timestamp(t.0 + 1),
        _ => now,
    };
    let seed = random_32();
    let pair = KeyPair::from_seed(&seed);
    let stored = StoredKey {
        kid: pair.kid.clone(),
        created_at: now.0,
        seed: URL_SAFE_NO_PAD.encode(seed),
    };
    let name = stored.file_name();
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| named_err(&name, e))?;
    if !files.create(&name, &json)? {
        return Err(named_err(&name, "exists already"));
    }
    Ok(pair)
}

/// Every signing key, newest first; generates the first one if there is none.
pub fn load_or_create_signing_keys<K: KeyFiles + ?Sized>(
    files: &K,
    now: Timestamp,
) -> Result<SigningKeys, KeyError> {
    let mut keys = read_signing_keys(files)?;
    if keys.is_empty() {
        generate_signing_key(files, now)?;
        // Another node may have made the first key at the same moment: read what stands.
        keys = read_signing_keys(files)?;
    }
    keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.kid.cmp(&b.0.kid)));
    Ok(SigningKeys { keys })
}

/// The signing keys, unordered.
fn read_signing_keys<K: KeyFiles + ?Sized>(
    files: &K,
) -> Result<Vec<(KeyPair, Timestamp)>, KeyError> {
    read_stored_keys(files)?
        .into_iter()
        .map(|(name, stored)| {
            let pair = stored.pair().map_err(|e| named_err(&name, e))?;
            Ok((pair, Timestamp(stored.created_at)))
        })
        .collect()
}

/// The signing key files as stored, unordered, each with its name.
fn read_stored_keys<K: KeyFiles + ?Sized>(files: &K) -> Result<Vec<(String, StoredKey)>, KeyError> {
    signing_files(&files.read_all()?)
}

/// The signing keys among `all` (every key file, as read).
fn signing_files(all: &[(String, Vec<u8>)]) -> Result<Vec<(String, StoredKey)>, KeyError> {
    let mut keys = Vec::new();
    for (name, bytes) in all {
        if !(name.starts_with(SIGNING_PREFIX) && name.ends_with(".json")) {
            continue;
        }
        let stored: StoredKey = serde_json::from_slice(bytes).map_err(|e| named_err(name, e))?;
        keys.push((name.clone(), stored));
    }
    Ok(keys)
}

/// The server key (`keys/server.key`), generated on first start.
pub fn load_or_create_server_key<K: KeyFiles + ?Sized>(files: &K) -> Result<ServerKey, KeyError> {
    load_or_create_secret(files, SERVER_KEY).map(ServerKey::from_bytes)
}

/// The data key (`keys/data.key`) that encrypts TOTP secrets, generated on first start.
pub fn load_or_create_data_key<K: KeyFiles + ?Sized>(files: &K) -> Result<DataKey, KeyError> {
    load_or_create_secret(files, DATA_KEY).map(DataKey::from_bytes)
}

fn read_file<K: KeyFiles + ?Sized>(files: &K, name: &str) -> Result<Option<Vec<u8>>, KeyError> {
    Ok(files
        .read_all()?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b))
}

fn load_or_create_secret<K: KeyFiles + ?Sized>(
    files: &K,
    name: &str,
) -> Result<[u8; 32], KeyError> {
    let bytes = match read_file(files, name)? {
        Some(b) => b,
        None => {
            // Whoever creates it first wins (another node, at the same moment): read it back.
            files.create(name, URL_SAFE_NO_PAD.encode(random_32()).as_bytes())?;
            read_file(files, name)?.ok_or_else(|| named_err(name, "vanished after writing"))?
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| named_err(name, e))?;
    decode_secret(&text).map_err(|e| named_err(name, e))
}
fn decode_secret(text: &str) -> Result<[u8; 32], &'static str> {
    URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("not 32 bytes of base64url")
}

/// Every key file of a data dir, as a backup made with `--include-keys` carries them: the
/// signing keys (by `kid`) and the server and data keys (base64url). `Debug` shows no secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    signing: Vec<StoredKey>,
    server_key: Option<String>,
    data_key: Option<String>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("signing", &self.signing)
            .field("server_key", &self.server_key.is_some())
            .field("data_key", &self.data_key.is_some())
            .finish()
    }
}

/// How a backup's keys compare with a data dir's, by file name under `keys/`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyDifferences {
    /// In both, with different contents, or only in the data dir: the data dir has keys of its
    /// own, and mixing them with the backup's would break tokens or sealed secrets.
    pub conflicting: Vec<String>,
    /// Only in the backup.
    pub missing: Vec<String>,
}

impl KeyMaterial {
    /// Checks that every key is well formed (a seed that gives its `kid`, 32-byte secrets).
    fn validate(&self) -> Result<(), KeyError> {
        for k in &self.signing {
            k.pair()
                .map_err(|e| KeyError::Invalid(format!("signing key {}: {e}", k.kid)))?;
        }
        for (name, secret) in [(SERVER_KEY, &self.server_key), (DATA_KEY, &self.data_key)] {
            if let Some(s) = secret {
                decode_secret(s).map_err(|e| KeyError::Invalid(format!("{name}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Each key file's name under `keys/` and its contents.
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
        let mut files = Vec::new();
        for k in &self.signing {
            let json = serde_json::to_vec_pretty(k)
                .map_err(|e| KeyError::Invalid(format!("signing key {}: {e}", k.kid)))?;
            files.push((k.file_name(), json));
        }
        for (name, secret) in [(SERVER_KEY, &self.server_key), (DATA_KEY, &self.data_key)] {
            if let Some(s) = secret {
                files.push((name.to_string(), s.as_bytes().to_vec()));
            }
        }
        Ok(files)
    }

    /// Names of the key files, for messages.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.signing.iter().map(StoredKey::file_name).collect();
        for (name, secret) in [(SERVER_KEY, &self.server_key), (DATA_KEY, &self.data_key)] {
            if secret.is_some() {
                names.push(name.to_string());
            }
        }
        names
    }
}

/// The keys as they are stored, creating nothing.
pub fn read_key_material<K: KeyFiles + ?Sized>(files: &K) -> Result<KeyMaterial, KeyError> {
    // One read: the files may be the database's.
    let all = files.read_all()?;
    let mut signing: Vec<StoredKey> = signing_files(&all)?.into_iter().map(|(_, k)| k).collect();
    signing.sort_by(|a, b| a.kid.cmp(&b.kid));
    let secret = |name: &str| -> Result<Option<String>, KeyError> {
        let Some((_, bytes)) = all.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(bytes).map_err(|e| named_err(name, e))?;
        let bytes = decode_secret(text).map_err(|e| named_err(name, e))?;
        Ok(Some(URL_SAFE_NO_PAD.encode(bytes)))
    };
    Ok(KeyMaterial {
        signing,
        server_key: secret(SERVER_KEY)?,
        data_key: secret(DATA_KEY)?,
    })
}

/// How `wanted` (a backup's keys, checked to be well formed) compares with the stored ones.
pub fn key_differences<K: KeyFiles + ?Sized>(
    files: &K,
    wanted: &KeyMaterial,
) -> Result<KeyDifferences, KeyError> {
    wanted.validate()?;
    let have = read_key_material(files)?;
    let theirs: std::collections::BTreeMap<String, Vec<u8>> = wanted.files()?.into_iter().collect();
    let ours: std::collections::BTreeMap<String, Vec<u8>> = have.files()?.into_iter().collect();
    let mut d = KeyDifferences::default();
    for (name, contents) in &ours {
        if theirs.get(name) != Some(contents) {
            d.conflicting.push(format!("keys/{name}"));
        }
    }
    for name in wanted.names() {
        if !ours.contains_key(&name) {
            d.missing.push(format!("keys/{name}"));
        }
    }
    Ok(d)
}

/// Writes the keys of `wanted` that are missing (owner-only, durably); returns how many.
/// The caller has checked with [`key_differences`] that nothing conflicts.
pub fn write_missing_keys<K: KeyFiles + ?Sized>(
    files: &K,
    wanted: &KeyMaterial,
) -> Result<usize, KeyError> {
    wanted.validate()?;
    let mut written = 0;
    for (name, contents) in wanted.files()? {
        if files.create(&name, &contents)? {
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_signing_keys(dir.path(), Timestamp(100)).unwrap();
        let again = load_or_create_signing_keys(dir.path(), Timestamp(200)).unwrap();
        assert_eq!(first.active().unwrap().kid, again.active().unwrap().kid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for entry in fs::read_dir(dir.path().join("keys")).unwrap() {
                let mode = entry.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "readable by the owner only");
            }
        }
        let k1 = load_or_create_server_key(dir.path()).unwrap();
        let k2 = load_or_create_server_key(dir.path()).unwrap();
        assert_eq!(
            format!("{:?}", k1.digest("t", b"x")),
            format!("{:?}", k2.digest("t", b"x"))
        );
    }

    #[test]
    fn superseded_keys_retire_once_their_tokens_have_expired() {
        let dir = tempfile::tempdir().unwrap();
        let old = load_or_create_signing_keys(dir.path(), Timestamp(100)).unwrap();
        let old_kid = old.active().unwrap().kid.clone();
        generate_signing_key(dir.path(), Timestamp(1_000)).unwrap();
        let keys = load_or_create_signing_keys(dir.path(), Timestamp(1_000)).unwrap();
        let states = keys.states(930, Timestamp(1_500));
        assert_eq!(states[0].2, KeyState::Active);
        assert_eq!(
            states[1].2,
            KeyState::Retiring {
                until: Timestamp(1_930)
            }
        );
        assert_eq!(keys.published(930, Timestamp(1_500)).len(), 2);
        let later = keys.published(930, Timestamp(1_930));
        assert_eq!(later.len(), 1);
        assert_ne!(later[0].kid, old_kid);
    }

    #[test]
    fn other_key_files_are_not_signing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_signing_keys(dir.path(), Timestamp(100)).unwrap();
        load_or_create_server_key(dir.path()).unwrap();
        load_or_create_data_key(dir.path()).unwrap();
        let again = load_or_create_signing_keys(dir.path(), Timestamp(200)).unwrap();
        assert_eq!(again.keys.len(), 1);
        assert_eq!(again.active().unwrap().kid, first.active().unwrap().kid);
    }

    #[test]
    fn a_key_made_in_the_same_second_is_still_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_signing_keys(dir.path(), Timestamp(100)).unwrap();
        for _ in 0..5 {
            let k = generate_signing_key(dir.path(), Timestamp(100)).unwrap();
            let all = load_or_create_signing_keys(dir.path(), Timestamp(100)).unwrap();
            assert_eq!(all.active().unwrap().kid, k.kid);
        }
    }

    #[test]
    fn key_material_round_trips_into_an_empty_data_dir_and_conflicts_are_named() {
        let src = tempfile::tempdir().unwrap();
        let kid = load_or_create_signing_keys(src.path(), Timestamp(100))
            .unwrap()
            .active()
            .unwrap()
            .kid
            .clone();
        let server = load_or_create_server_key(src.path()).unwrap();
        load_or_create_data_key(src.path()).unwrap();
        let material = read_key_material(src.path()).unwrap();
        assert!(!format!("{material:?}").contains(&material.signing[0].seed));

        let dest = tempfile::tempdir().unwrap();
        let d = key_differences(dest.path(), &material).unwrap();
        assert!(d.conflicting.is_empty());
        assert_eq!(d.missing.len(), 3, "{d:?}");
        assert_eq!(write_missing_keys(dest.path(), &material).unwrap(), 3);
        assert_eq!(read_key_material(dest.path()).unwrap(), material);
        let again = load_or_create_signing_keys(dest.path(), Timestamp(200)).unwrap();
        assert_eq!(again.active().unwrap().kid, kid);
        assert_eq!(
            format!(
                "{:?}",
                load_or_create_server_key(dest.path())
                    .unwrap()
                    .digest("t", b"x")
            ),
            format!("{:?}", server.digest("t", b"x"))
        );
        assert_eq!(
            key_differences(dest.path(), &material).unwrap(),
            KeyDifferences::default()
        );

        let other = tempfile::tempdir().unwrap();
        load_or_create_server_key(other.path()).unwrap();
        let d = key_differences(other.path(), &material).unwrap();
        assert_eq!(d.conflicting, vec!["keys/server.key".to_string()]);

        let mut forged = material.clone();
        forged.signing[0].kid = "not-the-kid".into();
        assert!(key_differences(dest.path(), &forged).is_err());
    }

    #[test]
    fn newest_key_is_active() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_signing_keys(dir.path(), Timestamp(100)).unwrap();
        let newer = generate_signing_key(dir.path(), Timestamp(200)).unwrap();
        let keys = load_or_create_signing_keys(dir.path(), Timestamp(300)).unwrap();
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(keys.active().unwrap().kid, newer.kid);
    }
}
