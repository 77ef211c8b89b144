//! The web dashboard's files, embedded in the binary and served by the daemon's API port
//! (ADR 0039). Plain HTML, CSS and ES modules: no build step.
//!
//! `login.html` and `login.js` are the only files served without a session; they carry no data.

use harness_server::{Asset, DashboardConfig};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

pub static ASSETS: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: HTML,
        body: include_str!("assets/index.html"),
        public: false,
    },
    Asset {
        path: "/app.js",
        content_type: JS,
        body: include_str!("assets/app.js"),
        public: false,
    },
    Asset {
        path: "/api.js",
        content_type: JS,
        body: include_str!("assets/api.js"),
        public: false,
    },
    Asset {
        path: "/dashboard.css",
        content_type: CSS,
        body: include_str!("assets/dashboard.css"),
        public: true,
    },
    Asset {
        path: "/login",
        content_type: HTML,
        body: include_str!("assets/login.html"),
        public: true,
    },
    Asset {
        path: "/login.js",
        content_type: JS,
        body: include_str!("assets/login.js"),
        public: true,
    },
    Asset {
        path: "/favicon.svg",
        content_type: SVG,
        body: include_str!("assets/favicon.svg"),
        public: true,
    },
];

/// Sessions are kept here (SHA-256 of each id and its expiry, 0600), so a page survives a restart.
pub const SESSIONS_FILE: &str = "dashboard-sessions";
/// The port the daemon last listened on; a restart without `--listen` tries it first, so that an
/// open dashboard (its origin includes the port) can reconnect.
pub const LAST_PORT_FILE: &str = "last-port";

pub fn config(home: &harness_protocol::HarnessHome) -> DashboardConfig {
    DashboardConfig {
        assets: ASSETS,
        sessions_file: Some(home.path(SESSIONS_FILE)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_have_no_inline_script_or_style() {
        for a in super::ASSETS {
            if a.content_type.starts_with("text/html") {
                assert!(!a.body.contains("<script>"), "{}: inline script", a.path);
                assert!(!a.body.contains("style="), "{}: inline style", a.path);
                for handler in ["onclick=", "onload=", "onerror=", "onsubmit="] {
                    assert!(!a.body.contains(handler), "{}: inline {handler}", a.path);
                }
            }
        }
    }
}
