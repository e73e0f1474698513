//! A throwaway PostgreSQL cluster for the tests: started once per test binary run with the
//! machine's own `initdb` and `postgres` (Debian's `/usr/lib/postgresql/<version>/bin`), on a
//! free port of 127.0.0.1 with trust authentication, in a temporary directory; each test takes
//! a database of its own ([`database`]).
//!
//! `initdb` refuses to run as root, and CI runs as root: then the cluster runs as the `postgres`
//! system user (which the `postgresql` package creates; created here if missing) through
//! `runuser`. The server runs under a small shell that reads its standard input, a pipe from
//! this process: when the test binary exits, however it exits, the pipe closes and the shell
//! stops the server and removes the directory, so no cluster outlives its tests.
//!
//! No PostgreSQL binaries at all is a failure with a message, never a silent pass: `.ci/run`
//! installs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The user the cluster runs as when the tests run as root.
const PG_USER: &str = "postgres";

pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    /// The shell that owns the server; its stdin is the pipe that stops it.
    _guard: Mutex<Child>,
    /// `runuser -u postgres --` when root, else nothing.
    as_user: Vec<String>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The shared cluster, started on first use; panics with the reason it cannot be.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(why) => panic!("PostgreSQL tests cannot run: {why}"),
    }
}

/// A fresh, empty database on the shared cluster; returns its URL.
pub fn database() -> String {
    let c = cluster();
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let out = c
        .command("createdb")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg(&name)
        .output()
        .expect("run createdb");
    assert!(
        out.status.success(),
        "createdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("postgres://postgres@127.0.0.1:{}/{name}", c.port)
}

impl Cluster {
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match self.as_user.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(exe);
                cmd
            }
            None => Command::new(exe),
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn find_bin() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|_| {
            "no /usr/lib/postgresql: install the `postgresql` package (.ci/run does)".to_string()
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".into())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The uid and gid of `user`, creating it as a system user if it does not exist.
fn system_user(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", user])
            .status()
            .map_err(|e| format!("useradd: {e}"))?;
        if !status.success() {
            return Err(format!("could not create the system user {user}"));
        }
    }
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(format!("no uid for {user}")),
    }
}

fn start() -> Result<Cluster, String> {
    let bin = find_bin()?;
    // As root, in /tmp itself: the cluster's user must reach the directory, and root's own
    // TMPDIR may be private to root.
    let parent = if is_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("bp-auth-pg-")
        .tempdir_in(parent)
        .map_err(|e| e.to_string())?
        // Removed by the guard shell when this process exits (see the module docs).
        .keep();
    let as_user = if is_root() {
        let (uid, gid) = system_user(PG_USER)?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        vec!["runuser".into(), "-u".into(), PG_USER.into(), "--".into()]
    } else {
        Vec::new()
    };
    let port = free_port();
    let cluster_cmd = |tool: &str| {
        let exe = bin.join(tool);
        match as_user.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(exe);
                cmd
            }
            None => Command::new(exe),
        }
    };
    let data = dir.join("data");
    let out = cluster_cmd("initdb")
        .args(["-D"])
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // `exec`-less on purpose: the shell stays, waiting on its stdin, then stops the server
    // ("fast" shutdown) and removes the cluster's directory.
    let script = r#"bin="$1"; data="$2"; port="$3"; dir="$4"
"$bin/postgres" -D "$data" -p "$port" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$dir" -c fsync=off -c max_connections=200 \
  >"$dir/postgres.log" 2>&1 &
pid=$!
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;
    let mut guard = match as_user.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest);
            cmd.arg("sh");
            cmd
        }
        None => Command::new("sh"),
    };
    let child = guard
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&bin)
        .arg(&data)
        .arg(port.to_string())
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start postgres: {e}"))?;
    let cluster = Cluster {
        port,
        bin,
        _guard: Mutex::new(child),
        as_user,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = cluster
            .command("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            return Ok(cluster);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(format!("postgres did not become ready: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    crate::helpers::free_port()
}
