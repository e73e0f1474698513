//! The CLI's end of the admin socket: sends the command, writes an export's lines to the
//! operator's file (owner-only), streams an import file's lines to the server, and puts the
//! outcome in the same words as a command run on the data dir itself.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

use super::commands::{self, Command, Invocation};
use super::outfile::OutFile;
use super::wire::{self, Frame, Request, MAX_RECORD, VERSION};
use super::AdminError;

/// The running server's socket, or `None` if no server answers there (no socket file, or one
/// left by a server that is gone).
pub(super) async fn connect(path: &Path) -> Result<Option<UnixStream>, AdminError> {
    use std::io::ErrorKind;
    match UnixStream::connect(path).await {
        Ok(stream) => Ok(Some(stream)),
        // A path too long to bind is one no server listens on either.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::InvalidInput
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(AdminError::Socket(format!(
            "{}: {e}: run bp-auth admin as the user the server runs as",
            path.display()
        ))),
        Err(e) => Err(AdminError::Socket(format!("{}: {e}", path.display()))),
    }
}

/// The server's frames, each at most a record (and its tag) long.
struct Frames(BufReader<OwnedReadHalf>);

impl Frames {
    async fn next(&mut self) -> Result<Frame, AdminError> {
        let mut line = String::new();
        match wire::read_line(&mut self.0, &mut line, MAX_RECORD + 16).await {
            Ok(true) => Frame::decode(&line).map_err(AdminError::Socket),
            Ok(false) => Err(AdminError::Socket(
                "the server hung up without an answer (see its log)".into(),
            )),
            Err(e) => Err(AdminError::Socket(e.to_string())),
        }
    }

    /// The final answer: the outcome, or the server's error.
    async fn outcome(&mut self) -> Result<commands::Outcome, AdminError> {
        match self.next().await? {
            Frame::Done(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(frame: Frame) -> AdminError {
    match frame {
        Frame::Error(message) => AdminError::Server(message),
        other => AdminError::Socket(format!("unexpected {} frame", other.tag())),
    }
}

fn io(e: std::io::Error) -> AdminError {
    AdminError::Socket(e.to_string())
}

pub(super) async fn run(stream: UnixStream, invocation: &Invocation) -> Result<String, AdminError> {
    // Local files first, so that a bad path costs the server nothing.
    let mut out = match invocation {
        Invocation::Export { out, .. } => Some(OutFile::create(out)?),
        _ => None,
    };
    let mut input = match invocation {
        Invocation::Import { input } => {
            let named =
                |e: std::io::Error| AdminError::Invalid(format!("{}: {e}", input.display()));
            let file = tokio::fs::File::open(input).await.map_err(named)?;
            let bytes = file.metadata().await.map_err(named)?.len();
            Some(file.take(bytes))
        }
        _ => None,
    };
    let command = match (invocation, &input) {
        (Invocation::Account(c), _) => c.clone(),
        (Invocation::Export { include_keys, .. }, _) => Command::Export {
            include_keys: *include_keys,
        },
        (Invocation::Import { .. }, file) => Command::Import {
            bytes: file.as_ref().map_or(0, |f| f.limit()),
        },
    };
    let (r, mut w) = stream.into_split();
    let mut frames = Frames(BufReader::with_capacity(256 * 1024, r));
    let request = Request {
        version: VERSION,
        command,
    };
    let mut line =
        serde_json::to_string(&request).map_err(|e| AdminError::Invalid(e.to_string()))?;
    line.push('\n');
    w.write_all(line.as_bytes()).await.map_err(io)?;

    let outcome = if let Some(file) = out.as_mut() {
        loop {
            match frames.next().await? {
                Frame::Line(l) => file.line(&l)?,
                Frame::Done(outcome) => break outcome,
                other => return Err(unexpected(other)),
            }
        }
    } else if let Some(file) = input.as_mut() {
        match frames.next().await? {
            Frame::Ready => {}
            other => return Err(unexpected(other)),
        }
        let sent = async {
            tokio::io::copy(file, &mut w).await?;
            w.shutdown().await
        };
        // A server that refused a line hangs up mid-stream: its answer says why.
        let sent = sent.await;
        match (frames.outcome().await, sent) {
            (Ok(outcome), _) => outcome,
            (Err(e @ AdminError::Server(_)), _) => return Err(e),
            (Err(_), Err(e)) => return Err(io(e)),
            (Err(e), Ok(())) => return Err(e),
        }
    } else {
        frames.outcome().await?
    };
    if let Some(file) = out {
        file.finish()?;
    }
    commands::report(invocation, outcome)
}
