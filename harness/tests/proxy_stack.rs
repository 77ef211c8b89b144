//! The one-port proxy on the testbed: `Host: web.localhost` reaches a container of the root
//! engine (its published port) and `Host: api.localhost` a process on h1, through the address the
//! daemon's machine uses for each (ADR 0020).

use std::io::Read as _;
use std::io::Write as _;
use std::net::TcpStream;

use std::time::{Duration, Instant};

use testbed::Testbed;

mod common;
use common::testbed_env::Env;

fn get(proxy: u16, host: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", proxy)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

#[test]
fn proxy_reaches_a_container_and_a_process_on_a_host() {
    let tb = Testbed::get();
    let (proxy, web, api) = (
        testbed::free_port(),
        testbed::free_port(),
        testbed::free_port(),
    );
    let key = tb.var("TB_SSH_KEY").unwrap();
    let yaml = format!(
        r#"name: pxstack
proxy: {{port: {proxy}}}
hosts:
  h1: {{address: {h1}, user: hbuser, identity_file: {key}, sudo: true}}
services:
  web:
    image: "{image}"
    ports: ["{web}:80"]
    command: ["sh", "-c", "mkdir -p /w && echo from-container > /w/index.html && exec httpd -f -p 80 -h /w"]
    health_check: {{command: ["wget", "-q", "-O-", "http://127.0.0.1:80/"], interval: 1s}}
    startup_timeout: 30s
  api:
    host: h1
    ports: [{api}]
    command: "mkdir -p /tmp/px-www && echo from-h1 > /tmp/px-www/index.html && exec busybox httpd -f -p {api} -h /tmp/px-www"
    health_check: {{tcp: {api}, interval: 1s}}
    startup_timeout: 30s
"#,
        h1 = tb.host("h1").addr,
        image = tb.image,
    );
    let env = Env::new(&yaml);
    env.run(&["start"]).ok();

    let end = Instant::now() + Duration::from_secs(10);
    let (mut w, mut a) = (String::new(), String::new());
    while Instant::now() < end && !(w.contains("from-container") && a.contains("from-h1")) {
        w = get(proxy, &format!("web.localhost:{proxy}"));
        a = get(proxy, "api.pxstack.localhost");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        w.starts_with("HTTP/1.1 200") && w.contains("from-container"),
        "{w}"
    );
    assert!(
        a.starts_with("HTTP/1.1 200") && a.contains("from-h1"),
        "{a}"
    );
    env.run(&["stop"]).ok();
}
