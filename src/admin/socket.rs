//! The running server's admin socket: `<data_dir>/admin.sock`, a Unix socket only the
//! server's own user may use (mode 0600, and each peer's uid checked), never a network port.
//!
//! Everything a client controls is bounded: the request line ([`wire::MAX_REQUEST`]), each
//! import line ([`wire::MAX_RECORD`]), the connections served at once ([`MAX_CONNECTIONS`];
//! more are refused with a message), and the time a client may leave the server waiting
//! ([`REQUEST_TIMEOUT`] for the request, [`export::IMPORT_IDLE`] per import line,
//! [`WRITE_TIMEOUT`] per answer written), so an idle client cannot hold a slot forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};
use tokio::task::JoinSet;

use super::accounts::Running;
use super::commands::{self, Command, Outcome};
use super::export::{self, ExportLines, Importer, KeyPolicy};
use super::wire::{self, Frame, MAX_REQUEST};
use super::AdminError;
use crate::actors::Directory;
use crate::config::Config;
use crate::keys;
use crate::store::Store;

pub const SOCKET_NAME: &str = "admin.sock";
/// Commands served at once; a few suffice for operators, and each may stream a whole export.
pub const MAX_CONNECTIONS: usize = 4;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server lets admin commands in flight finish.
const DRAIN: Duration = Duration::from_secs(10);
/// The longest path a Unix socket can be bound to (`sun_path` holds 108 bytes with its NUL).
const MAX_PATH: usize = 107;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// What the socket's commands run against: the running server's own pieces.
pub struct Live {
    directory: Directory,
    store: Arc<dyn Store>,
    config: Arc<Config>,
    /// One import at a time: two would both find the data dir empty.
    importing: Mutex<()>,
}

impl Live {
    pub fn new(directory: Directory, store: Arc<dyn Store>, config: Arc<Config>) -> Self {
        Self {
            directory,
            store,
            config,
            importing: Mutex::new(()),
        }
    }
}

/// The socket, bound but not yet serving.
pub struct AdminSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl AdminSocket {
    /// Binds `<data_dir>/admin.sock`. Call it once the store is open: sled's lock then proves
    /// that no other server owns the data dir, so a socket file already there was left by a
    /// crash and is replaced. Any failure is a warning, not a reason to stop serving: admin
    /// commands then need a stopped server.
    pub fn bind(data_dir: &Path) -> Option<Self> {
        let path = socket_path(data_dir);
        let warn = |reason: String| {
            tracing::warn!(
                path = %path.display(),
                "no admin socket ({reason}): admin commands need a stopped server"
            );
        };
        let len = path.as_os_str().len();
        if len > MAX_PATH {
            warn(format!(
                "its path is {len} bytes, longer than the {MAX_PATH} a Unix socket allows; \
                 use a shorter data directory"
            ));
            return None;
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn(format!("cannot remove the old socket file: {e}"));
                return None;
            }
            _ => {}
        }
        let bound = std::os::unix::net::UnixListener::bind(&path).and_then(|l| {
            use std::os::unix::fs::PermissionsExt;
            // The data dir is owner-only already; the socket says so itself too.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            l.set_nonblocking(true)?;
            Ok(l)
        });
        match bound {
            Ok(listener) => {
                tracing::info!(path = %path.display(), "admin socket listening");
                Some(Self { path, listener })
            }
            Err(e) => {
                warn(e.to_string());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Serves on the current (actix) runtime until [`Serving::stop`].
    pub fn serve(self, live: Live) -> Serving {
        let (stop, stopped) = oneshot::channel();
        let task = match UnixListener::from_std(self.listener) {
            Ok(listener) => Some(tokio::spawn(accept(listener, Arc::new(live), stopped))),
            Err(e) => {
                tracing::warn!(error = %e, "admin socket not served: admin commands need a stopped server");
                None
            }
        };
        Serving {
            path: self.path,
            stop,
            task,
        }
    }
}

/// The socket being served.
pub struct Serving {
    path: PathBuf,
    stop: oneshot::Sender<()>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Stops accepting, lets commands in flight finish (a little while), removes the socket.
    pub async fn stop(self) {
        // First the name, so that a client from now on finds no server rather than a dying one.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.stop.send(());
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

async fn accept(listener: UnixListener, live: Arc<Live>, mut stop: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let uid = rustix::process::geteuid().as_raw();
    let mut tasks = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let live = live.clone();
                tasks.spawn(async move {
                    connection(stream, &live, uid).await;
                    drop(slot);
                });
            }
            Err(_) => {
                tasks.spawn(refuse(
                    stream,
                    format!(
                        "the server is busy with {MAX_CONNECTIONS} admin commands; try again shortly"
                    ),
                ));
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("admin commands still running at shutdown were stopped");
    }
}

/// Answers an error and hangs up, without reading anything.
async fn refuse(stream: UnixStream, message: String) {
    let mut w = BufWriter::new(stream);
    let _ = send(&mut w, &Frame::Error(message)).await;
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, wire::write_frame(w, frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the client went away: {e}")),
        Err(_) => Err("the client stopped reading".into()),
    }
}

async fn connection(stream: UnixStream, live: &Live, uid: u32) {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == uid => {}
        other => {
            let peer = other
                .map(|c| c.uid().to_string())
                .unwrap_or_else(|e| e.to_string());
            tracing::warn!(peer = %peer, "admin socket: a connection from another user was refused");
            return refuse(
                stream,
                format!("refused: this admin socket serves only uid {uid}"),
            )
            .await;
        }
    }
    let (r, w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut writer = BufWriter::with_capacity(256 * 1024, w);
    if let Err(message) = serve(&mut reader, &mut writer, live).await {
        let _ = send(&mut writer, &Frame::Error(message)).await;
    }
}

async fn serve<R, W>(reader: &mut R, writer: &mut W, live: &Live) -> Result<(), String>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        wire::read_line(reader, &mut line, MAX_REQUEST),
    );
    match read.await {
        Err(_) => {
            return Err(format!(
                "no request within {} seconds",
                REQUEST_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) => return Err(format!("request refused: {e}")),
        Ok(Ok(false)) => return Ok(()),
        Ok(Ok(true)) => {}
    }
    let command = wire::parse_request(&line)?;
    let text = |e: AdminError| e.to_string();
    let outcome = match &command {
        Command::Show { .. } | Command::Change { .. } => {
            let accounts = Running(&live.directory);
            Outcome::Text(
                commands::account(&accounts, &live.config, &command)
                    .await
                    .map_err(text)?,
            )
        }
        Command::Export { include_keys } => {
            export(writer, live, *include_keys).await.map_err(text)?
        }
        Command::Import { bytes } => import(reader, writer, live, *bytes).await.map_err(text)?,
    };
    send(writer, &Frame::Done(outcome)).await
}

/// Streams the export lines, read from the store on a blocking thread (sled reads may wait
/// for the disk) and written here as the client takes them.
async fn export<W: AsyncWrite + Unpin>(
    writer: &mut W,
    live: &Live,
    include_keys: bool,
) -> Result<Outcome, AdminError> {
    let keys = include_keys
        .then(|| {
            let files = crate::store::key_files(live.store.as_ref(), &live.config.server.data_dir);
            keys::read_key_material(files.as_ref())
        })
        .transpose()?;
    let lines = ExportLines::new(live.store.clone(), keys)?;
    let (tx, mut rx) = mpsc::channel(256);
    let producer = tokio::task::spawn_blocking(move || {
        let mut lines = lines;
        for line in &mut lines {
            let failed = line.is_err();
            // A closed channel: the client went away, and the writer below says so.
            if tx.blocking_send(line).is_err() || failed {
                return None;
            }
        }
        Some(lines.outcome())
    });
    while let Some(line) = rx.recv().await {
        send(writer, &Frame::Line(line?))
            .await
            .map_err(AdminError::Socket)?;
    }
    let outcome = producer
        .await
        .map_err(|e| AdminError::Invalid(format!("export failed: {e}")))?
        .ok_or_else(|| AdminError::Invalid("export failed".into()))?;
    export::settle(live.store.as_ref()).await?;
    audit("export", &outcome);
    Ok(outcome)
}

/// Reads the `bytes` bytes of export lines the client streams after `ready`.
async fn import<R, W>(
    reader: &mut R,
    writer: &mut W,
    live: &Live,
    bytes: u64,
) -> Result<Outcome, AdminError>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _one = live
        .importing
        .try_lock()
        .map_err(|_| AdminError::Invalid("another import is running on this server".into()))?;
    let files = crate::store::key_files(live.store.as_ref(), &live.config.server.data_dir);
    let mut importer = Importer::new(live.store.as_ref(), KeyPolicy::MustMatch(files.as_ref()))?;
    send(writer, &Frame::Ready)
        .await
        .map_err(AdminError::Socket)?;
    let mut stream = reader.take(bytes);
    export::feed(&mut stream, &mut importer).await?;
    if stream.limit() > 0 {
        return Err(importer.stopped(format!(
            "the client's stream ended after {} of {bytes} bytes",
            bytes - stream.limit()
        )));
    }
    let outcome = importer.finish().await?;
    audit("import", &outcome);
    Ok(outcome)
}

/// An export or import through the socket, on the audit log (no user: it is about them all).
fn audit(what: &str, outcome: &Outcome) {
    let keys = matches!(
        outcome,
        Outcome::Exported { keys: true, .. } | Outcome::Imported { keys: true, .. }
    );
    crate::audit::note(
        None,
        None,
        "admin",
        &format!("{what}{}", if keys { "_with_keys" } else { "" }),
    );
}
