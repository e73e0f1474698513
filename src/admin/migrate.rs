//! `bp-auth admin migrate-to-postgres`: a stopped server's sled data dir into an empty
//! PostgreSQL database, through the very lines an export writes and an import reads, so that
//! every user, tenant and index (emails, API keys, passkeys) and the keys move exactly as a
//! backup restores them. The keys land in the database sealed under the master key
//! (`storage.master_key_file`, by default `<data_dir>/master.key`), which every node then needs.

use super::export::{ExportLines, Importer, KeyPolicy};
use super::{open, AdminError, Outcome};
use crate::config::{Config, Durability, Engine, StorageConfig};
use crate::keys;
use crate::store::{self, Store};

/// Moves the data dir of `config` into the database at `url`; returns what to print.
pub fn migrate_to_postgres(config: &Config, url: &str) -> Result<String, AdminError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(migrate(config, url))
}

async fn migrate(config: &Config, url: &str) -> Result<String, AdminError> {
    let data_dir = &config.server.data_dir;
    if !data_dir.join("db").exists() {
        return Err(AdminError::Invalid(format!(
            "{} holds no sled database to migrate",
            data_dir.display()
        )));
    }
    // Opening sled takes its lock: a running server refuses this (stop it first), and nothing
    // changes in the data dir while it is read.
    let sled = open(&Config {
        storage: StorageConfig {
            engine: Engine::Sled,
            ..config.storage.clone()
        },
        ..config.clone()
    })?;
    // Each user committed as the server would commit it (a crash mid-way loses nothing that
    // was reported, and running it again is refused rather than mixed).
    let target = StorageConfig {
        engine: Engine::Postgres,
        postgres_url: url.to_string(),
        durability: Durability::Flush,
        ..config.storage.clone()
    };
    let pg = store::open(data_dir, &target)?;
    let moved = copy(sled.clone(), pg.as_ref(), data_dir).await;
    sled.close();
    pg.close();
    let users = match moved? {
        Outcome::Imported { users, .. } => users,
        other => {
            return Err(AdminError::Invalid(format!(
                "unexpected outcome of the copy: {other:?}"
            )))
        }
    };
    let master = store::postgres::master_key_path(data_dir, &config.storage);
    Ok(format!(
        "moved {users} users and the keys into PostgreSQL. Start every node with \
         storage.engine = \"postgres\", this storage.postgres_url and a copy of the master key \
         {} as storage.master_key_file",
        master.display()
    ))
}

async fn copy(
    from: std::sync::Arc<dyn Store>,
    to: &dyn Store,
    data_dir: &std::path::Path,
) -> Result<Outcome, AdminError> {
    if !to.user_ids()?.is_empty() {
        return Err(AdminError::Invalid(
            "the database has users already: migrate into an empty database (a node started \
             on it, or an earlier migration, wrote them)"
                .into(),
        ));
    }
    let keys = keys::read_key_material(data_dir)?;
    let files = store::key_files(to, data_dir);
    let mut importer = Importer::new(to, KeyPolicy::Install(files.as_ref()))?;
    for line in ExportLines::new(from, Some(keys))? {
        importer.line(&line?)?;
    }
    importer.finish().await
}
