//! The measuring client: raw keep-alive HTTP/1.1 over a tokio `TcpStream`, one per connection,
//! with requests prebuilt as bytes where they do not change.
//!
//! Why not reqwest here (it is still used for setup): on two cores shared with the server, its
//! per-request work (header maps, a connection pool, a body stream, hyper's dispatcher) took
//! 55–63% of the CPU in the scenarios, so `/me` read 137% of `/healthz`, which measured the
//! client rather than the server. A request here is one `write` of ready bytes and as many
//! `read`s as the answer needs into a buffer the connection keeps, parsed only for the status,
//! the body's length (or chunks) and whether the server keeps the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server to send requests to: where it listens, and its `Host`.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) host: String,
    addr: SocketAddr,
}

impl Target {
    /// `http://host:port` (no TLS: the harness drives local or tunnelled servers).
    pub(crate) async fn resolve(base: &str) -> Result<Arc<Self>, String> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: only http:// URLs can be driven"))?;
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        let with_port = if host.contains(':') && !host.ends_with(']') {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("{base}: {e}"))?
            .next()
            .ok_or_else(|| format!("{base}: no address"))?;
        Ok(Arc::new(Self { host, addr }))
    }

    /// A GET with `headers`, as bytes to send as they are.
    pub(crate) fn get(&self, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut r = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }

    /// A POST of `body` as `content_type`, with `headers`.
    pub(crate) fn post(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        let mut bytes = r.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    /// A POST of a JSON value.
    pub(crate) fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        bearer: Option<&str>,
    ) -> Vec<u8> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.post(
            path,
            "application/json",
            body.to_string().as_bytes(),
            &headers,
        )
    }
}

/// One keep-alive connection; reconnects when the server closes it or after an error.
pub(crate) struct Wire {
    target: Arc<Target>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Where the last answer's body lies in `buf`.
    body: (usize, usize),
    /// Whether each answer is bounded by [`ANSWER_TIMEOUT`]. The scenarios' connections turn
    /// it off (a timer a request is a measurable part of the client's work) and are bounded
    /// as a whole instead (`client.rs`).
    pub(crate) guarded: bool,
}

/// An answer: its status; the body is [`Wire::body`] until the next request.
pub(crate) type Status = u16;

/// How long one answer may take before it counts as lost (a stalled server must not hang a run).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

impl Wire {
    pub(crate) fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            body: (0, 0),
            guarded: true,
        }
    }

    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The body of the last answer.
    pub(crate) fn body(&self) -> &[u8] {
        &self.buf[self.body.0..self.body.1]
    }

    /// Sends `request` and reads its answer; on any failure the connection is dropped (the
    /// next request opens a new one).
    pub(crate) async fn send(&mut self, request: &[u8]) -> Result<Status, String> {
        let reused = self.stream.is_some();
        let first = self.bounded(request).await;
        // A kept-alive connection the server closed while it was idle (its keep-alive timeout)
        // fails before any byte of an answer: the request was not read, so it is sent again on a
        // new connection, once.
        let first = match first {
            Ok(Err(e))
                if reused
                    && self.buf.is_empty()
                    && ["closed", "reset", "Broken pipe"]
                        .iter()
                        .any(|w| e.contains(w)) =>
            {
                self.stream = None;
                self.bounded(request).await
            }
            other => other,
        };
        match first {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err("transport: no answer in 30 s".into())
            }
        }
    }

    /// [`Wire::send`], with any status but 2xx as an error naming it and the body's start.
    pub(crate) async fn send_2xx(&mut self, request: &[u8]) -> Result<(), String> {
        let status = self.send(request).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let b = self.body();
            let text = String::from_utf8_lossy(&b[..b.len().min(160)]).into_owned();
            Err(format!("HTTP {status}: {text}"))
        }
    }

    async fn bounded(
        &mut self,
        request: &[u8],
    ) -> Result<Result<Status, String>, tokio::time::error::Elapsed> {
        if self.guarded {
            tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(request)).await
        } else {
            Ok(self.exchange(request).await)
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Status, String> {
        self.write(request).await?;
        let (status, _) = self.answer(0).await?;
        Ok(status)
    }

    /// Sends `requests` (complete requests, one after the other) in one write, and reads as
    /// many answers: HTTP/1.1 pipelining, for requests that change nothing (GETs). Their
    /// statuses, in order; the last one's body is [`Wire::body`]. No retry: any failure drops
    /// the connection.
    pub(crate) async fn send_pipelined(
        &mut self,
        requests: &[u8],
        count: usize,
        statuses: &mut Vec<Status>,
    ) -> Result<(), String> {
        statuses.clear();
        let r = async {
            self.write(requests).await?;
            let mut at = 0;
            for _ in 0..count {
                let (status, end) = self.answer(at).await?;
                statuses.push(status);
                at = end;
            }
            Ok::<_, String>(())
        }
        .await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    async fn write(&mut self, request: &[u8]) -> Result<(), String> {
        if self.stream.is_none() {
            self.stream = Some(connect(self.target.addr).await?);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("transport: no connection".into());
        };
        self.buf.clear();
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("transport: write: {e}"))
    }

    /// Reads the answer that starts at `start` in the buffer; its status and where it ends.
    async fn answer(&mut self, start: usize) -> Result<(Status, usize), String> {
        let Some(stream) = self.stream.as_mut() else {
            return Err("transport: no connection".into());
        };
        let head_end = loop {
            if let Some(i) = find(&self.buf[start..], b"\r\n\r\n") {
                break start + i + 4;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = Head::parse(&self.buf[start..head_end])?;
        // 1xx, 204 and 304 answers have no body, whatever their headers say.
        let bodiless = head.status < 200 || head.status == 204 || head.status == 304;
        let body = match head.length {
            _ if bodiless => (head_end, head_end),
            Some(n) => {
                while self.buf.len() < head_end + n {
                    read_more(stream, &mut self.buf).await?;
                }
                (head_end, head_end + n)
            }
            None if head.chunked => dechunk(stream, &mut self.buf, head_end).await?,
            // No length and not chunked: the body runs to the end of the connection.
            None => {
                loop {
                    match stream.read_buf(&mut self.buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(format!("transport: read: {e}")),
                    }
                }
                self.stream = None;
                (head_end, self.buf.len())
            }
        };
        self.body = body;
        if head.close {
            self.stream = None;
        }
        Ok((head.status, body.1))
    }
}

/// A connection to `addr` with Nagle off and, on Linux, `reno` congestion control where the
/// machine's default is another. Why: distributions now default to `bbr`, whose pacing and
/// model updates run on every send (`bbr_main`, its timers: 2–3% of the client's samples in
/// `healthz` here), work a loopback connection's congestion control has no use for; reno is
/// always allowed to unprivileged sockets, and its cost is a few instructions per ack. The
/// server's sockets keep the machine's default (operating.md#load-testing).
async fn connect(addr: std::net::SocketAddr) -> Result<TcpStream, String> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("transport: socket: {e}"))?;
    #[cfg(target_os = "linux")]
    {
        // Best effort: a kernel without reno (none ships so) keeps its default.
        let _ = socket2::SockRef::from(&socket).set_tcp_congestion(b"reno");
    }
    socket
        .set_nodelay(true)
        .map_err(|e| format!("transport: nodelay: {e}"))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("transport: connect: {e}"))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err("transport: connection closed by the server".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("transport: read: {e}")),
    }
}

/// Decodes a chunked body that starts at `start`, in place (whatever follows it in the buffer
/// stays after it); returns where the decoded body lies.
async fn dechunk(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<(usize, usize), String> {
    let mut out = Vec::new();
    let mut at = start;
    let end = loop {
        let line_end = loop {
            if let Some(i) = find(&buf[at..], b"\r\n") {
                break at + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end]).map_err(|e| e.to_string())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        let data = line_end + 2;
        while buf.len() < data + size + 2 {
            read_more(stream, buf).await?;
        }
        if size == 0 {
            // Trailers are not used by bp-auth; the last chunk ends with its CRLF.
            break data + 2;
        }
        out.extend_from_slice(&buf[data..data + size]);
        at = data + size + 2;
    };
    let decoded = out.len();
    buf.splice(start..end, out);
    Ok((start, start + decoded))
}

/// What the harness reads of an answer's head.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

impl Head {
    /// Reads the head byte by byte rather than through `str` searches: it is parsed on every
    /// request, and `split("\r\n")`'s substring search was the client's largest own cost.
    fn parse(head: &[u8]) -> Result<Self, String> {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let first = lines.next().unwrap_or(b"");
        let bad = || format!("bad status line {:?}", String::from_utf8_lossy(first));
        // "HTTP/1.1 200 OK": the status is the three digits after the first space.
        let code = first
            .iter()
            .position(|&b| b == b' ')
            .and_then(|sp| first.get(sp + 1..sp + 4))
            .ok_or_else(bad)?;
        let mut status = 0u16;
        for &d in code {
            if !d.is_ascii_digit() {
                return Err(bad());
            }
            status = status * 10 + u16::from(d - b'0');
        }
        let mut h = Self {
            status,
            length: None,
            chunked: false,
            close: first.starts_with(b"HTTP/1.0"),
        };
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                h.length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                h.chunked = value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                h.close = value.eq_ignore_ascii_case(b"close");
            }
        }
        Ok(h)
    }
}

/// Where `needle` starts in `hay`: a scan for its first byte, then a compare (answers' heads are
/// read on every request).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = 0;
    while let Some(i) = hay.get(at..)?.iter().position(|&b| b == first) {
        let start = at + i;
        if hay.get(start + 1..start + needle.len()) == Some(rest) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// The string value of `"key":"…"` in a flat JSON body, without parsing the rest (token
/// answers are read on every refresh; their values hold no escapes).
pub(crate) fn json_str<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let at = find(body, pat.as_bytes())? + pat.len();
    let len = body[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[at..at + len]).ok()
}
