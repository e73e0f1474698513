//! The servers this harness starts in its own process: their configuration (no rate limit,
//! plain-HTTP cookies, warnings only) and an actix system on a thread of its own, so that the
//! server's runtime is not the client's.

use std::path::Path;

use bp_auth::config::{Config, Durability};
use bp_auth::domain::password::Hasher;
use bp_auth::startup::Application;

use crate::Res;

pub(crate) fn server_config(data_dir: &Path, durability: Durability) -> Config {
    let mut c = Config::default_with_plans();
    c.server.bind = "127.0.0.1:0".into();
    c.server.data_dir = data_dir.to_path_buf();
    c.rate_limit.enabled = false;
    c.log.level = "warn".into();
    c.cookie.secure = false;
    c.storage.durability = durability;
    c
}

/// The server's password hasher, so that seeded hashes and `argon2-raw` use the parameters the
/// server verifies with.
pub(crate) fn hasher(config: &Config) -> Res<Hasher> {
    let p = &config.password;
    Ok(Hasher::new(
        p.argon2_memory_kib,
        p.argon2_iterations,
        p.argon2_parallelism,
    )?)
}

/// bp-auth running on its own thread, in an actix system, as `main` runs it.
pub(crate) struct InProcess {
    pub(crate) base: String,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

pub(crate) fn start_in_process(config: Config) -> Res<InProcess> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("bp-auth-server".into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                match Application::build(config) {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.port(), app.handle())));
                        if let Err(e) = app.run_until_stopped().await {
                            eprintln!("bp-auth stopped with an error: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        })?;
    let (port, handle) = rx.recv()??;
    Ok(InProcess {
        base: format!("http://127.0.0.1:{port}"),
        handle,
        thread,
    })
}

impl InProcess {
    pub(crate) async fn stop(self) {
        self.handle.stop(false).await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}
