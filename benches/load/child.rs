//! The real `bp-auth` binary as a child process on a data dir of its own, for the figures that
//! read the server's memory: a separate process holds nothing but the server, so neither this
//! process's client nor memory freed by earlier phases blurs its VmRSS.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::http::wait_ready;
use crate::Res;

/// A running `bp-auth serve`, killed when dropped (also when a phase fails half-way).
pub(crate) struct ChildServer {
    child: Child,
    pub(crate) base: String,
}

impl ChildServer {
    /// Starts the binary on `data_dir` with `env` on top of the harness's own settings
    /// (plain-HTTP cookies, warnings only), and waits until it is ready.
    pub(crate) async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Res<Self> {
        let server = Self::spawn(data_dir, env)?;
        wait_ready(&server.base).await?;
        Ok(server)
    }

    /// Starts the binary as [`ChildServer::start`] does, without waiting for it (to time its
    /// start-up).
    pub(crate) fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Res<Self> {
        std::fs::create_dir_all(data_dir)?;
        let port = free_port()?;
        let child = Command::new(env!("CARGO_BIN_EXE_bp-auth"))
            .arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(data_dir)
            .env("BP_AUTH__COOKIE__SECURE", "false")
            .env("BP_AUTH__LOG__LEVEL", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// SIGTERM, then waits until the server has drained, flushed its store and exited.
    pub(crate) fn terminate(mut self) -> Res<()> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !sent.success() {
            return Err("cannot send SIGTERM to bp-auth".into());
        }
        let exit = self.child.wait()?;
        if !exit.success() {
            return Err(format!("bp-auth exited with {exit}").into());
        }
        Ok(())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn rss_kib(&self) -> Res<u64> {
        rss_kib(self.pid()).ok_or_else(|| "cannot read the server's VmRSS".into())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident set of process `pid`, from `/proc` (Linux only; `None` elsewhere or once gone).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
