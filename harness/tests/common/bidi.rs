//! A headless Firefox driven over WebDriver BiDi, which Firefox speaks itself: no geckodriver.
//! `firefox --headless --remote-debugging-port=0 --profile DIR` prints
//! `WebDriver BiDi listening on ws://127.0.0.1:PORT` and serves BiDi at `/session`; the client here
//! is a plain WebSocket (async-tungstenite on smol, blocked on by the test's own thread) that sends
//! commands with ids and, while it waits for their results, keeps the page's error log entries
//! (`log.entryAdded`) and skips other events. Included by path (it is not in `common/mod.rs`, so
//! only the tests that use it compile it).
//!
//! The session accepts the daemon's certificate with the standard `acceptInsecureCerts`
//! capability (Firefox has no SPKI pin switch like Chromium's; importing the CA into a profile
//! would need NSS's `certutil`). Firefox and its content processes run in their own process
//! group, killed as a whole when the browser is dropped.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use base64::Engine as _;
use futures_lite::StreamExt as _;
use serde_json::{Value, json};
use smol::net::TcpStream;

/// The Firefox binary on `PATH` (Debian's `firefox-esr`, or `firefox`).
pub fn firefox_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["firefox-esr", "firefox"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

pub struct Firefox {
    child: Child,
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// The top-level browsing context (the one tab).
    context: String,
    /// What Firefox printed on stderr, for failure messages.
    log: Arc<Mutex<String>>,
    /// The page's errors (`log.entryAdded` at level error: uncaught exceptions, console.error).
    page_errors: Vec<String>,
    _profile: tempfile::TempDir,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// `session.new` answers once Firefox's idle start-up tasks have run: seconds on an idle machine,
/// much longer on a loaded one.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

impl Firefox {
    /// Starts `binary` headless with a fresh profile and a `width`×`height` viewport; `prefs`
    /// (name, value as JavaScript) go into the profile's `user.js` too.
    pub fn open(binary: &Path, width: u64, height: u64, prefs: &[(&str, &str)]) -> Firefox {
        let profile = tempfile::tempdir().expect("profile dir");
        // The remote agent sets its recommended automation prefs itself; these keep a fresh
        // profile on a blank page and from reaching for servers (there is no network in CI).
        let defaults = [
            ("browser.startup.page", "0"),
            ("browser.startup.homepage", "\"about:blank\""),
            ("browser.newtabpage.enabled", "false"),
            ("browser.shell.checkDefaultBrowser", "false"),
            ("datareporting.policy.dataSubmissionEnabled", "false"),
            ("app.update.disabledForTesting", "true"),
            ("app.normandy.enabled", "false"),
            ("messaging-system.rsexperimentloader.enabled", "false"),
            ("browser.safebrowsing.malware.enabled", "false"),
            ("browser.safebrowsing.phishing.enabled", "false"),
            ("browser.safebrowsing.downloads.enabled", "false"),
            ("network.captive-portal-service.enabled", "false"),
            ("network.connectivity-service.enabled", "false"),
        ];
        let user_js: String = defaults
            .iter()
            .chain(prefs)
            .map(|(k, v)| format!("user_pref(\"{k}\", {v});\n"))
            .collect();
        std::fs::write(profile.path().join("user.js"), user_js).expect("user.js");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-remote",
                "--remote-debugging-port=0",
                "--profile",
            ])
            .arg(profile.path())
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        // Read stderr to its end (a full pipe would stall Firefox); the first BiDi line gives the
        // port.
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split_once("WebDriver BiDi listening on ws://") {
                    let _ = tx.send(rest.1.trim().to_string());
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() < 64 * 1024 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                kill_group(&mut child);
                panic!(
                    "Firefox did not start its BiDi server within 60 s; it said:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        let url = format!("ws://{addr}/session");
        let ws = smol::block_on(async {
            let tcp = TcpStream::connect(addr.as_str()).await?;
            async_tungstenite::client_async(url.as_str(), tcp)
                .await
                .map(|(ws, _)| ws)
                .map_err(std::io::Error::other)
        });
        let ws = match ws {
            Ok(ws) => ws,
            Err(e) => {
                kill_group(&mut child);
                panic!("connect to Firefox's BiDi at {url}: {e}");
            }
        };
        let mut ff = Firefox {
            child,
            ws,
            next_id: 0,
            context: String::new(),
            log,
            page_errors: Vec::new(),
            _profile: profile,
        };
        ff.command(
            "session.new",
            json!({"capabilities": {"alwaysMatch": {"acceptInsecureCerts": true}}}),
        );
        let tree = ff.command("browsingContext.getTree", json!({"maxDepth": 0}));
        ff.context = tree["contexts"][0]["context"]
            .as_str()
            .unwrap_or_else(|| panic!("no browsing context: {tree}"))
            .to_string();
        ff.viewport(width, height);
        ff.command("session.subscribe", json!({"events": ["log.entryAdded"]}));
        ff
    }

    /// The errors the page reported since the last call (seen while waiting for command
    /// results).
    pub fn take_page_errors(&mut self) -> Vec<String> {
        // A round trip, so that entries sent before it have been read.
        self.command("browsingContext.getTree", json!({"maxDepth": 0}));
        std::mem::take(&mut self.page_errors)
    }

    /// Sends a command and waits for its result (events in between are skipped).
    pub fn try_command(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let timeout = if method == "session.new" {
            SESSION_TIMEOUT
        } else {
            COMMAND_TIMEOUT
        };
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        let ws = &mut self.ws;
        let page_errors = &mut self.page_errors;
        let reply = async {
            ws.send(Message::text(message))
                .await
                .map_err(|e| format!("send {method}: {e}"))?;
            loop {
                let m = match ws.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(format!("{method}: {e}")),
                    None => return Err(format!("{method}: Firefox closed the connection")),
                };
                let Message::Text(text) = m else { continue };
                let v: Value = serde_json::from_str(text.as_str())
                    .map_err(|e| format!("{method}: not JSON ({e}): {}", text.as_str()))?;
                if v["method"] == "log.entryAdded" && v["params"]["level"] == "error" {
                    page_errors.push(format!(
                        "{}: {} ({})",
                        v["params"]["type"].as_str().unwrap_or_default(),
                        v["params"]["text"].as_str().unwrap_or_default(),
                        v["params"]["source"]["context"]
                            .as_str()
                            .unwrap_or_default(),
                    ));
                }
                if v["id"].as_u64() != Some(id) {
                    continue;
                }
                return match v["type"].as_str() {
                    Some("success") => Ok(v["result"].clone()),
                    _ => Err(format!(
                        "{method}: {} {}",
                        v["error"].as_str().unwrap_or("error"),
                        v["message"].as_str().unwrap_or_default()
                    )),
                };
            }
        };
        let timeout = async {
            smol::Timer::after(timeout).await;
            Err(format!("{method}: no answer within {timeout:?}"))
        };
        smol::block_on(smol::future::or(reply, timeout))
    }

    pub fn command(&mut self, method: &str, params: Value) -> Value {
        self.try_command(method, params).unwrap_or_else(|e| {
            panic!(
                "{e}\nFirefox said:\n{}",
                self.log.lock().unwrap_or_else(|e| e.into_inner())
            )
        })
    }

    /// Sets the page's own size (screenshots are of it).
    pub fn viewport(&mut self, width: u64, height: u64) {
        let context = self.context.clone();
        self.command(
            "browsingContext.setViewport",
            json!({"context": context, "viewport": {"width": width, "height": height}}),
        );
    }

    /// Navigates and waits for the document to load (a fragment change returns at once).
    pub fn go(&mut self, url: &str) {
        let context = self.context.clone();
        self.command(
            "browsingContext.navigate",
            json!({"context": context, "url": url, "wait": "complete"}),
        );
    }

    /// Runs `body` as a function body in the page and returns its value as JSON (`return`
    /// what you want back; undefined is null).
    pub fn try_js(&mut self, body: &str) -> Result<Value, String> {
        let context = self.context.clone();
        let expression = format!("JSON.stringify((() => {{ {body} }})() ?? null)");
        let r = self.try_command(
            "script.evaluate",
            json!({
                "expression": expression,
                "target": {"context": context},
                "awaitPromise": false,
                "resultOwnership": "none",
            }),
        )?;
        match r["type"].as_str() {
            Some("success") => {
                let text = r["result"]["value"].as_str().unwrap_or("null");
                serde_json::from_str(text).map_err(|e| format!("the script's value ({e}): {text}"))
            }
            _ => Err(format!(
                "the script threw: {}",
                r["exceptionDetails"]["text"].as_str().unwrap_or_default()
            )),
        }
    }

    pub fn js(&mut self, body: &str) -> Value {
        self.try_js(body)
            .unwrap_or_else(|e| panic!("{e}\nthe script: {body}"))
    }

    /// Polls `body` every 20 ms until it returns something other than null or false (a script
    /// that fails, e.g. during a navigation, counts as not yet).
    pub fn wait_js(&mut self, what: &str, timeout: Duration, body: &str) -> Value {
        let start = Instant::now();
        loop {
            if let Ok(v) = self.try_js(body)
                && !v.is_null()
                && v != Value::Bool(false)
            {
                return v;
            }
            if start.elapsed() >= timeout {
                let page = self.try_js(
                    "return location.href + ' | ' + document.body.innerText.slice(0, 800);",
                );
                panic!("timed out waiting for {what}; the page: {page:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Clicks the element `css` selects (through the DOM, as a user's click dispatches).
    pub fn click(&mut self, css: &str) {
        let js = format!(
            "const e = document.querySelector({}); if (!e) return false; e.click(); return true;",
            serde_json::to_string(css).expect("json")
        );
        assert_eq!(self.js(&js), Value::Bool(true), "no element {css}");
    }

    /// A PNG of the viewport, written to `dir/name.png`.
    pub fn screenshot(&mut self, dir: &Path, name: &str) {
        let context = self.context.clone();
        let r = self.command(
            "browsingContext.captureScreenshot",
            json!({"context": context, "origin": "viewport"}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("base64 png"))
            .expect("png");
        std::fs::create_dir_all(dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

fn kill_group(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.wait();
}

impl Drop for Firefox {
    fn drop(&mut self) {
        // Close politely (it ends the session), then make sure no process of the group is left.
        let _ = self.try_command("browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_group(&mut self.child);
    }
}
