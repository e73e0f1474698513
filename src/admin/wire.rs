//! The admin socket's protocol, and the bounds on everything it reads.
//!
//! The client sends one request line (JSON, at most [`MAX_REQUEST`] bytes). For an import it
//! then waits for `ready` and streams the file: exactly as many bytes as the request said. The server answers in
//! frames, one per line, `<tag> <payload>`:
//!
//! - `line <export line>`: one line of an export, verbatim (itself JSON, without newlines);
//! - `ready {}`: the import may start streaming;
//! - `done <outcome JSON>`: the command succeeded;
//! - `error <message JSON string>`: it failed; the connection ends.
//!
//! Every read is bounded in size, so no client (nor a confused server) can make the other side
//! buffer without limit.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use super::commands::{Command, Outcome};

/// The protocol's version; a server refuses a request of another (a client and server from
/// different releases).
pub const VERSION: u32 = 1;

/// The longest request line.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The longest line of an export or import (one user's snapshot as JSON, which its caps on
/// sessions and codes keep to a few kilobytes), and so of a frame.
pub const MAX_RECORD: usize = 4 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: Command,
}

/// One frame from the server.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Line(String),
    Ready,
    Done(Outcome),
    Error(String),
}

impl Frame {
    /// The frame's tag, which names it (in messages, rather than its contents).
    pub fn tag(&self) -> &'static str {
        match self {
            Frame::Line(_) => "line",
            Frame::Ready => "ready",
            Frame::Done(_) => "done",
            Frame::Error(_) => "error",
        }
    }

    /// The frame as a line, newline included.
    pub fn encode(&self) -> String {
        let payload = match self {
            Frame::Line(l) => l.clone(),
            Frame::Ready => "{}".into(),
            Frame::Done(o) => json(o),
            Frame::Error(m) => json(m),
        };
        format!("{} {payload}\n", self.tag())
    }

    pub fn decode(line: &str) -> Result<Self, String> {
        let (tag, payload) = line
            .split_once(' ')
            .ok_or_else(|| format!("not a frame: {}", excerpt(line)))?;
        let bad = |e: serde_json::Error| format!("bad {tag} frame: {e}");
        match tag {
            "line" => Ok(Frame::Line(payload.to_string())),
            "ready" => Ok(Frame::Ready),
            "done" => serde_json::from_str(payload).map(Frame::Done).map_err(bad),
            "error" => serde_json::from_str(payload).map(Frame::Error).map_err(bad),
            _ => Err(format!("unknown frame {}", excerpt(tag))),
        }
    }
}

/// Writes `frame`. A `line` frame, the bulk of an export, goes into the writer's buffer
/// without a copy and without a flush (the buffer flushes as it fills); every other frame is
/// flushed, since the other side waits for it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    match frame {
        Frame::Line(line) => {
            w.write_all(b"line ").await?;
            w.write_all(line.as_bytes()).await?;
            w.write_all(b"\n").await
        }
        other => {
            w.write_all(other.encode().as_bytes()).await?;
            w.flush().await
        }
    }
}

fn json<T: Serialize>(v: &T) -> String {
    // Serialising plain data (strings, numbers) cannot fail; the fallback keeps the frame valid.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// The start of `s`, for a message about it (never a whole line that may hold a secret).
fn excerpt(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses a request line, refusing another protocol version with a message saying so.
pub fn parse_request(line: &str) -> Result<Command, String> {
    let version = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
    match version {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "this server speaks admin protocol version {VERSION}, not {v}: use the bp-auth \
                 binary of the running server"
            ))
        }
        None => return Err("not an admin request".into()),
    }
    serde_json::from_str::<Request>(line)
        .map(|r| r.command)
        .map_err(|e| format!("not an admin request: {e}"))
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("a line longer than {0} bytes")]
    TooLong(usize),
    #[error("a line that is not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads the next line (without its `\n` or `\r\n`) into `buf`, holding at most `max` bytes of
/// it: `Ok(false)` at the end of the input. A last line without a newline counts.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut String,
    max: usize,
) -> Result<bool, LineError> {
    let mut bytes = Vec::new();
    let more = read_bytes(reader, &mut bytes, max).await?;
    *buf = String::from_utf8(bytes).map_err(|_| LineError::NotUtf8)?;
    Ok(more)
}

async fn read_bytes<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    bytes: &mut Vec<u8>,
    max: usize,
) -> Result<bool, LineError> {
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            if bytes.len() > max {
                return Err(LineError::TooLong(max));
            }
            return Ok(!bytes.is_empty());
        }
        let (take, ends) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let content = take - usize::from(ends);
        // `max + 1` allows a `\r` before the newline of a line of exactly `max` bytes.
        if bytes.len() + content > max + 1 {
            return Err(LineError::TooLong(max));
        }
        bytes.extend_from_slice(&chunk[..content]);
        reader.consume(take);
        if ends {
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            if bytes.len() > max {
                return Err(LineError::TooLong(max));
            }
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::admin::Change;

    async fn lines(input: &[u8], max: usize) -> Vec<Result<String, String>> {
        // A tiny buffer, so lines span many chunks.
        let mut r = tokio::io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        let mut buf = String::new();
        loop {
            match read_line(&mut r, &mut buf, max).await {
                Ok(true) => out.push(Ok(buf.clone())),
                Ok(false) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn lines_up_to_the_bound_are_read_and_longer_ones_refused() {
        assert_eq!(
            lines(b"abcd\nef\r\n\ng", 4).await,
            vec![
                Ok("abcd".into()),
                Ok("ef".into()),
                Ok("".into()),
                Ok("g".into())
            ]
        );
        assert_eq!(lines(b"abcd\r\n", 4).await, vec![Ok("abcd".into())]);
        assert_eq!(
            lines(b"ab\nabcde\nz\n", 4).await,
            vec![Ok("ab".into()), Err("a line longer than 4 bytes".into())]
        );
        assert_eq!(
            lines(b"abcde", 4).await,
            vec![Err("a line longer than 4 bytes".into())],
            "also without a newline"
        );
        assert_eq!(
            lines(b"abcd\r", 4).await,
            vec![Err("a line longer than 4 bytes".into())],
            "a \\r not before a newline is content"
        );
        assert_eq!(lines(b"", 4).await, vec![]);
        assert_eq!(
            lines(b"\xff\n", 4).await,
            vec![Err("a line that is not UTF-8".into())]
        );
    }

    #[tokio::test]
    async fn a_huge_line_is_refused_without_being_held() {
        let big = vec![b'x'; MAX_REQUEST * 16];
        let mut r = tokio::io::BufReader::new(big.as_slice());
        let mut buf = String::new();
        let err = read_line(&mut r, &mut buf, MAX_REQUEST).await.unwrap_err();
        assert!(matches!(err, LineError::TooLong(MAX_REQUEST)));
        assert!(buf.is_empty());
    }

    #[test]
    fn requests_parse_and_other_versions_are_refused_clearly() {
        let req = Request {
            version: VERSION,
            command: Command::Change {
                email: "ada@example.com".into(),
                change: Change::SetPlan("pro".into()),
            },
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(parse_request(&line).unwrap(), req.command);
        let other = line.replace("\"version\":1", "\"version\":7");
        assert!(parse_request(&other)
            .unwrap_err()
            .contains("version 1, not 7"));
        assert_eq!(parse_request("hello").unwrap_err(), "not an admin request");
        assert!(parse_request("{\"version\":1,\"command\":\"rm -rf\"}")
            .unwrap_err()
            .starts_with("not an admin request: "));
    }

    #[tokio::test]
    async fn frames_round_trip() {
        for frame in [
            Frame::Line("{\"type\":\"user\"}".into()),
            Frame::Ready,
            Frame::Done(Outcome::Text("ada@example.com: {\n}".into())),
            Frame::Done(Outcome::Exported {
                users: 3,
                keys: true,
            }),
            Frame::Error("no user with email x\ny".into()),
        ] {
            let line = frame.encode();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let mut written = Vec::new();
            write_frame(&mut written, &frame).await.unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), line);
            assert_eq!(Frame::decode(line.trim_end_matches('\n')).unwrap(), frame);
        }
        assert!(Frame::decode("nonsense").is_err());
        assert!(Frame::decode("done {").is_err());
        assert!(Frame::decode("shout {}").is_err());
    }
}
