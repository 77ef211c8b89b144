//! Just enough HTTP/1.1 to route one port between the WebSocket upgrade, `/healthz` and `/metrics`.
//!
//! The request head is read by hand (bounded in size and time) so that authentication happens before
//! any WebSocket machinery runs and refusals get a proper status instead of a dropped socket.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header contains `token` (case-insensitive), e.g. `Connection: Upgrade`.
    pub fn header_has(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The bearer token, if the request carries one.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("connection closed before a complete request head")]
    Eof,
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request head")]
    Malformed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads a request head; returns it and any bytes read past it.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Eof);
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break scan_from + pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    };
    let rest = buf.split_off(end);
    let text = std::str::from_utf8(&buf).map_err(|_| HeadError::Malformed)?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().ok_or(HeadError::Malformed)?.split(' ');
    let method = first.next().ok_or(HeadError::Malformed)?.to_string();
    let path = first.next().ok_or(HeadError::Malformed)?.to_string();
    if !first.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(HeadError::Malformed);
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').ok_or(HeadError::Malformed)?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((
        Head {
            method,
            path,
            headers,
        },
        rest,
    ))
}

/// Writes a complete response and closes the exchange (`Connection: close`).
pub(crate) async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}
