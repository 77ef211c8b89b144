//! The proxy's own answers: the list of routes, a service not ready, an upstream that failed.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::RouteInfo;
use crate::forward::{ProxyBody, own};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `404`: no route for `host`; lists the routes there are, as links.
pub(crate) fn unknown(host: &str, port: u16, routes: &[RouteInfo]) -> Response<ProxyBody> {
    let mut body = format!(
        "<!doctype html>\n<title>harness proxy</title>\n<h1>No service at {}</h1>\n",
        escape(host)
    );
    if routes.is_empty() {
        body.push_str("<p>No service is routed yet: start a project with ports.</p>\n");
    } else {
        body.push_str("<p>Routes:</p>\n<ul>\n");
        for r in routes {
            let _ = writeln!(
                body,
                "<li><a href=\"http://{h}:{port}/\">{h}</a> &rarr; {t}</li>",
                h = escape(&r.host),
                t = escape(&r.target)
            );
        }
        body.push_str("</ul>\n");
    }
    own(StatusCode::NOT_FOUND, "text/html; charset=utf-8", body)
}

/// `503`: the service cannot take requests now.
pub(crate) fn unavailable(
    service: &str,
    reason: &str,
    retry_after: Option<u32>,
) -> Response<ProxyBody> {
    let mut resp = own(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        format!("{service} is not available: {reason}\n"),
    );
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// `502`: the upstream could not be reached or broke the exchange.
pub(crate) fn bad_gateway(service: &str, upstream: SocketAddr, error: &str) -> Response<ProxyBody> {
    own(
        StatusCode::BAD_GATEWAY,
        "text/plain; charset=utf-8",
        format!("{service} at {upstream}: {error}\n"),
    )
}
