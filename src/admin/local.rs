//! Commands on a stopped server's data dir: the CLI opens the database itself (sled's lock
//! refuses it while a server holds it) and runs the same functions the server's socket runs.

use super::accounts::Stored;
use super::commands::{self, Invocation};
use super::export::{self, ExportLines, Importer, KeyPolicy};
use super::outfile::OutFile;
use super::{open, AdminError};
use crate::config::{Config, Durability, StorageConfig};
use crate::keys;
use crate::store::StoreError;

pub(super) async fn run(config: &Config, invocation: &Invocation) -> Result<String, AdminError> {
    // Local files first: a typo in a path should not cost a database open.
    let file = match invocation {
        Invocation::Import { input } => Some(
            tokio::fs::File::open(input)
                .await
                .map_err(|e| AdminError::Invalid(format!("{}: {e}", input.display())))?,
        ),
        _ => None,
    };
    let store = match invocation {
        // Nothing of an import counts until all of it is on disk, so an fsync per user (what
        // "flush" durability would cost) buys nothing: one final flush, checked below, does.
        Invocation::Import { .. } => open(&Config {
            storage: StorageConfig {
                durability: Durability::Periodic,
                ..config.storage.clone()
            },
            ..config.clone()
        })?,
        _ => open(config)?,
    };
    let key_files = crate::store::key_files(store.as_ref(), &config.server.data_dir);
    let dir = key_files.as_ref();
    let outcome = async {
        match invocation {
            Invocation::Account(command) => {
                let text = commands::account(&Stored(store.as_ref()), config, command).await?;
                Ok(commands::Outcome::Text(text))
            }
            Invocation::Export {
                out, include_keys, ..
            } => {
                let keys = include_keys
                    .then(|| keys::read_key_material(dir))
                    .transpose()?;
                let mut file = OutFile::create(out)?;
                let mut lines = ExportLines::new(store.clone(), keys)?;
                for line in &mut lines {
                    file.line(&line?)?;
                }
                export::settle(store.as_ref()).await?;
                file.finish()?;
                Ok(lines.outcome())
            }
            Invocation::Import { .. } => {
                let mut importer = Importer::new(store.as_ref(), KeyPolicy::Install(dir))?;
                let Some(file) = file else {
                    return Err(AdminError::Invalid("no file to import".into()));
                };
                let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, file);
                export::feed(&mut reader, &mut importer).await?;
                importer.finish().await
            }
        }
    }
    .await;
    store.close();
    if store.commit().failed() {
        return Err(AdminError::Store(StoreError::Io(
            "the database could not be flushed to disk; what was written may be lost".into(),
        )));
    }
    if matches!(invocation, Invocation::Import { .. }) {
        // A bulk write: let the server's first start on it read a snapshot, not replay it all.
        drop(store);
        if let Err(e) = crate::store::checkpoint(&config.server.data_dir, &config.storage) {
            tracing::warn!(error = %e, "store not checkpointed; the first start replays its log");
        }
    }
    commands::report(invocation, outcome?)
}
