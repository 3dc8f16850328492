//! A minimal HTTP/1.1 client: one keep-alive connection, one request at a
//! time, `Content-Length` or chunked bodies. Enough to drive the service
//! without adding an HTTP client to the crate's dependencies, and cheap: a
//! request is one `write` and usually one `read`.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: its status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One connection to `addr` (`host:port`), opened on first use and again
/// after the server closes it.
pub struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    request: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    /// A connection to `addr`; nothing is opened yet.
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            stream: None,
            buf: Vec::with_capacity(16 << 10),
            request: Vec::with_capacity(4 << 10),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sends one request and reads its response. A request on a kept-alive
    /// connection that the server has closed meanwhile is retried once on a
    /// fresh connection.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.request.clear();
        self.request.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr).as_bytes());
        for (name, value) in headers {
            self.request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        self.request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        self.request.extend_from_slice(body);

        let reused = self.stream.is_some();
        match tokio::time::timeout(self.timeout, self.round_trip()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if reused && is_stale(&e) => {
                self.stream = None;
                tokio::time::timeout(self.timeout, self.round_trip())
                    .await
                    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out")))
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }

    /// `GET` with headers.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        self.send("GET", path, headers, &[]).await
    }

    async fn round_trip(&mut self) -> io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().ok_or_else(|| io::Error::other("no connection"))?;
        stream.write_all(&self.request).await?;

        // The head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head is not UTF-8"))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        self.buf.drain(..head_end);

        // The body.
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    read_more(stream, &mut self.buf).await?;
                };
                let size_text = std::str::from_utf8(&self.buf[..line_end]).unwrap_or("");
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                // The size line, the chunk and its CRLF.
                let need = line_end + 2 + size + 2;
                while self.buf.len() < need {
                    read_more(stream, &mut self.buf).await?;
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..need);
                if size == 0 {
                    break body;
                }
            }
        } else {
            let len = content_length.unwrap_or(0);
            while self.buf.len() < len {
                read_more(stream, &mut self.buf).await?;
            }
            self.buf.drain(..len).collect()
        };
        if close {
            self.stream = None;
        }
        Ok(Response { status, body })
    }
}

/// Whether an error means the kept-alive connection was closed by the
/// server before this request (worth one retry).
fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(16 << 10);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
