//! Just enough HTTP/1.1 to route one port between the WebSocket upgrade, `/healthz` and `/metrics`.
//!
//! The request head is read here (bounded in size and time; parsed by `httparse`) so that
//! authentication happens before any WebSocket machinery runs and refusals get a proper status
//! instead of a dropped socket.

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

    /// Every value of a header that may repeat (e.g. `Cookie`).
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
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
    #[error("request head larger than {MAX_HEAD} bytes or {MAX_HEADERS} headers")]
    TooLarge,
    #[error("malformed request head")]
    Malformed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Most header lines accepted in a request head.
const MAX_HEADERS: usize = 64;

/// Reads a request head; returns it and any bytes read past it.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, end)) = parse(&buf)? {
            if end > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(end);
            return Ok((head, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A complete head and its length, or `None` if more bytes are needed.
fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let end = match req.parse(buf) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(HeadError::Malformed);
    };
    let headers = req
        .headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?;
            Ok((h.name.to_string(), value.trim().to_string()))
        })
        .collect::<Result<Vec<_>, HeadError>>()?;
    Ok(Some((
        Head {
            method: method.to_string(),
            path: path.to_string(),
            headers,
        },
        end,
    )))
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
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
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
    // One write, so head and body travel in one TLS record: a WebSocket client reads the body
    // only if it came with the head.
    head.push_str(body);
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<(Head, Vec<u8>), HeadError> {
        smol::block_on(read_head(&mut futures_lite::io::Cursor::new(
            bytes.to_vec(),
        )))
    }

    #[test]
    fn a_head_with_bytes_after_it() {
        let (head, rest) = read(
            b"GET /v1/ws?x=1 HTTP/1.1\r\nHost: l\r\nConnection: keep-alive, Upgrade\r\n\
              Authorization: bearer  abc \r\n\r\nFRAME",
        )
        .expect("head");
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/v1/ws?x=1");
        assert!(head.header_has("connection", "upgrade"));
        assert_eq!(head.bearer(), Some("abc"));
        assert_eq!(rest, b"FRAME");
    }

    #[test]
    fn malformed_truncated_and_oversized_heads_are_refused() {
        assert!(matches!(read(b"GET\r\n\r\n"), Err(HeadError::Malformed)));
        assert!(matches!(
            read(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\nHost: l\r\n"),
            Err(HeadError::Eof)
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(read(big.as_bytes()), Err(HeadError::TooLarge)));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(read(many.as_bytes()), Err(HeadError::TooLarge)));
    }
}
