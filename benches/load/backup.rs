//! How long `bp-auth admin backup` takes on `--backup-users` seeded accounts (issue 13): once
//! against a running server (the real binary, see `child.rs`), through its admin socket, and
//! once on the same data dir stopped, where the CLI opens the database itself; then how long
//! `admin import` takes to restore the backup into an empty data dir. The CLI is the real
//! binary too, timed from its start to its exit.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bp_auth::config::Durability;
use serde_json::{json, Value};

use crate::child::ChildServer;
use crate::seed::{seed, Profile};
use crate::server::server_config;
use crate::{Res, Settings};

/// One timed run of the CLI.
pub(crate) struct Timed {
    pub(crate) seconds: f64,
    pub(crate) bytes: u64,
}

pub(crate) struct Backup {
    pub(crate) users: usize,
    pub(crate) running: Timed,
    pub(crate) stopped: Timed,
    pub(crate) restore: Timed,
}

/// `bp-auth admin ARGS --data-dir DIR` to completion; fails unless it succeeds.
fn admin(data_dir: &Path, args: &[&str]) -> Res<f64> {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bp-auth"))
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(data_dir)
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "bp-auth admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(seconds)
}

fn backup(data_dir: &Path, out: &Path) -> Res<Timed> {
    let path = out.to_str().ok_or("a UTF-8 path")?;
    let seconds = admin(data_dir, &["backup", "--out", path])?;
    Ok(Timed {
        seconds,
        bytes: std::fs::metadata(out)?.len(),
    })
}

pub(crate) async fn measure_backup(dir: &Path, phc: &str, s: &Settings) -> Res<Backup> {
    let data_dir = dir.join("backup");
    let config = server_config(&data_dir, Durability::Flush);
    let (seeded, took) = seed(
        &config,
        phc,
        "backup",
        s.backup_users,
        Profile {
            api_key: true,
            lived_in: false,
            session: false,
        },
    )?;
    eprintln!(
        "backup: seeded {} accounts (each with an API key) in {:.1} s",
        seeded.ids.len(),
        took.as_secs_f64()
    );
    let server = ChildServer::start(&data_dir, &[]).await?;
    eprintln!("backup: against the running server");
    let running = backup(&data_dir, &dir.join("backup-running.jsonl"))?;
    server.terminate()?;
    eprintln!("backup: on the stopped data dir");
    let stopped = backup(&data_dir, &dir.join("backup-stopped.jsonl"))?;
    eprintln!("backup: restoring into an empty data dir");
    let restored = dir.join("restored");
    std::fs::create_dir_all(&restored)?;
    let input = dir.join("backup-running.jsonl");
    let seconds = admin(
        &restored,
        &["import", "--in", input.to_str().ok_or("UTF-8")?],
    )?;
    Ok(Backup {
        users: s.backup_users,
        restore: Timed {
            seconds,
            bytes: running.bytes,
        },
        running,
        stopped,
    })
}

impl Backup {
    fn rate(&self, t: &Timed) -> f64 {
        self.users as f64 / t.seconds.max(1e-9)
    }

    pub(crate) fn render(&self) -> String {
        let line = |what: &str, t: &Timed| {
            format!(
                "  {what:<34} {:>7.2} s  {:>8.1} MiB  {:>9.0} users/s",
                t.seconds,
                t.bytes as f64 / (1024.0 * 1024.0),
                self.rate(t)
            )
        };
        format!(
            "\nbackup of {} users (the CLI's wall time, start to exit):\n{}\n{}\n{}",
            self.users,
            line("admin backup, server running", &self.running),
            line("admin backup, server stopped", &self.stopped),
            line("admin import into an empty dir", &self.restore),
        )
    }

    pub(crate) fn json(&self) -> Value {
        let one = |t: &Timed| {
            json!({
                "seconds": (t.seconds * 1000.0).round() / 1000.0,
                "bytes": t.bytes,
                "users_per_second": self.rate(t).round(),
            })
        };
        json!({
            "users": self.users,
            "running": one(&self.running),
            "stopped": one(&self.stopped),
            "restore": one(&self.restore),
            "method": "seeded accounts with an API key each; the real bp-auth binary for the server and the CLI, timed from start to exit",
        })
    }
}
