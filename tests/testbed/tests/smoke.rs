//! The testbed is what every integration test stands on: prove each promise in its contract.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testbed::{Engine, Testbed, sh_quote, wait_until};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// A marker no other test run uses at the same time.
fn marker(what: &str) -> String {
    format!("tb-smoke-{what}-{}", std::process::id())
}

#[test]
fn ssh_reaches_every_bridged_host_as_the_login_user() {
    let tb = Testbed::get();
    assert_eq!(tb.hosts.len(), 3);
    for h in &tb.hosts {
        let out = tb.sh_ok(&h.name, "hostname; id -un; echo \"$HOME\"");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                h.name.as_str(),
                tb.ssh_user.as_str(),
                &format!("/home/{}", tb.ssh_user)
            ],
            "on {}",
            h.name
        );
        // The explicit, config-free form works too (what the product's ssh layer builds itself).
        let out = testbed::run(
            {
                let mut c = tb.ssh_command_with_key(&tb.ssh_user, &tb.ssh_key, &h.name);
                c.arg("hostname");
                c
            },
            testbed::COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), h.name);
    }
}

#[test]
fn h4_is_reachable_only_through_h1() {
    let tb = Testbed::get();
    assert_eq!(tb.h4.jump.as_deref(), Some("h1"));
    // Through the jump host (ProxyJump in the ssh config).
    assert_eq!(tb.sh_ok("h4", "hostname"), "h4");
    // h1 reaches h4 directly.
    let banner = tb.sh_ok(
        "h1",
        &format!("echo | nc -w 3 {} 22 | head -c 8", tb.h4.addr),
    );
    assert_eq!(banner, "SSH-2.0-");
    // From the root namespace there is no route: a direct connection fails or times out.
    let started = Instant::now();
    let direct =
        TcpStream::connect_timeout(&SocketAddr::new(tb.h4.addr, 22), Duration::from_secs(2));
    assert!(direct.is_err(), "h4 must not be reachable directly");
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = testbed::run(
        {
            let mut c = tb.ssh_command_with_key(&tb.ssh_user, &tb.ssh_key, "h4");
            c.args(["-o", "ConnectTimeout=2", "true"]);
            c
        },
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "direct ssh to h4 must fail");
}

#[test]
fn sudo_without_password_for_the_login_user_only() {
    let tb = Testbed::get();
    for h in tb.all_hosts() {
        assert_eq!(tb.sh_ok(&h.name, "sudo -n id -un"), "root", "on {}", h.name);
        let who = tb.sh_ok(&h.name, &format!("sudo -n -u {} id -un", tb.sudo_user));
        assert_eq!(who, tb.sudo_user, "on {}", h.name);
    }
    // hbpw logs in by key, but its sudo wants a password: `sudo -n` fails at once instead of hanging.
    let started = Instant::now();
    let out = testbed::run(
        {
            let mut c = tb.ssh_command_with_key(&tb.password_sudo_user, &tb.ssh_key, "h1");
            c.arg("id -un; sudo -n true");
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(text(&out.stdout), tb.password_sudo_user);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("password is required"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn hosts_have_their_own_hostname_tmp_opt_and_home() {
    let tb = Testbed::get();
    let file = marker("tmp");
    tb.sh_ok(
        "h1",
        &format!("echo h1 > /tmp/{file}; echo h1 > /var/tmp/{file}; echo home > ~/{file}"),
    );
    assert!(!std::path::Path::new(&format!("/tmp/{file}")).exists());
    for h in ["h2", "h3", "h4"] {
        let seen = tb.sh_ok(
            h,
            &format!(
                "hostname; test -e /tmp/{file} && echo tmp; test -e /var/tmp/{file} && echo var; test -e ~/{file} && echo home; true"
            ),
        );
        assert_eq!(
            seen, h,
            "h1's /tmp, /var/tmp and /home must be invisible on {h}"
        );
    }
    // /opt is private too: root on h2 installs something that h3 does not see.
    tb.sh_ok("h2", &format!("sudo -n mkdir /opt/{file}"));
    assert_eq!(
        tb.sh_ok("h3", &format!("test -e /opt/{file} && echo yes || echo no")),
        "no"
    );
    assert!(!std::path::Path::new(&format!("/opt/{file}")).exists());
    tb.sh_ok("h2", &format!("sudo -n rmdir /opt/{file}"));
    tb.sh_ok("h1", &format!("rm -f /tmp/{file} /var/tmp/{file} ~/{file}"));
}

#[test]
fn wrong_key_is_refused() {
    let tb = Testbed::get();
    let out = testbed::run(
        {
            let mut c = tb.ssh_command_with_key(&tb.ssh_user, &tb.ssh_wrong_key, "h1");
            c.arg("true");
            c
        },
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn unreachable_address_times_out() {
    let tb = Testbed::get();
    let started = Instant::now();
    let err = TcpStream::connect_timeout(
        &SocketAddr::new(tb.unreachable_addr, 22),
        Duration::from_millis(700),
    )
    .expect_err("nothing may answer on the unreachable address");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(600));
    // From inside a host as well.
    let out = tb.sh_on(
        "h2",
        &format!("nc -w 1 {} 22 </dev/null; echo rc=$?", tb.unreachable_addr),
    );
    assert_eq!(text(&out.stdout), "rc=1");
}

#[test]
fn docker_runs_the_image_on_both_engines() {
    let tb = Testbed::get();
    let ok = tb.docker_ok(Engine::Local, ["run", "--rm", &tb.image, "echo", "ok"]);
    assert_eq!(ok, "ok");
    let ok = tb.docker_ok(Engine::H2, ["run", "--rm", &tb.image, "echo", "ok"]);
    assert_eq!(ok, "ok");
    // On h2, as the login user through sudo, with the socket path from the env file.
    let cli = tb.docker_cli.display().to_string();
    let script = format!(
        "sudo -n {} -H {} run --rm {} sh -c 'echo ok; exit 7'",
        sh_quote(&cli),
        sh_quote(&tb.docker_h2),
        sh_quote(&tb.image)
    );
    let out = tb.sh_on("h2", &script);
    assert_eq!(text(&out.stdout), "ok", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn h2_engine_lives_on_h2() {
    let tb = Testbed::get();
    // Its bind mounts see h2's private /tmp.
    let file = marker("docker");
    tb.sh_ok("h2", &format!("echo from-h2 > /tmp/{file}"));
    let seen = tb.docker_ok(
        Engine::H2,
        [
            "run",
            "--rm",
            "-v",
            "/tmp:/h2tmp",
            &tb.image,
            "cat",
            &format!("/h2tmp/{file}"),
        ],
    );
    assert_eq!(seen, "from-h2");
    tb.sh_ok("h2", &format!("rm -f /tmp/{file}"));
    // Its containers reach the other hosts (h1's sshd), and h1 reaches a port published on h2.
    let addr = tb.host("h1").addr.to_string();
    let banner = tb.docker_ok(
        Engine::H2,
        [
            "run",
            "--rm",
            &tb.image,
            "sh",
            "-c",
            &format!("echo | nc -w 3 {addr} 22 | head -c 8"),
        ],
    );
    assert_eq!(banner, "SSH-2.0-");
    let name = marker("web");
    let port = testbed::free_port().to_string();
    tb.docker_ok(
        Engine::H2,
        [
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            &format!("{port}:80"),
            &tb.image,
            "sh",
            "-c",
            "echo hello > /tmp/index.html && exec httpd -f -p 80 -h /tmp",
        ],
    );
    let h2 = tb.host("h2").addr.to_string();
    let mut body = String::new();
    let up = wait_until(Duration::from_secs(10), || {
        let out = tb.sh_on(
            "h1",
            &format!("busybox wget -q -O - http://{h2}:{port}/index.html"),
        );
        body = text(&out.stdout);
        out.status.success()
    });
    tb.docker_ok(Engine::H2, ["rm", "-f", &name]);
    assert!(up, "h1 could not fetch from the container published on h2");
    assert_eq!(body, "hello");
}

#[test]
fn processes_are_found_by_pid_and_host() {
    let tb = Testbed::get();
    let secs = 4000 + std::process::id() % 1000;
    let pid: u32 = tb
        .sh_ok(
            "h3",
            &format!("setsid sleep {secs} </dev/null >/dev/null 2>&1 & echo $!"),
        )
        .parse()
        .expect("a pid");
    assert!(tb.pid_alive_on("h3", pid));
    assert!(!tb.pid_alive_on("h1", pid), "the pid lives on h3, not h1");
    let found = tb.processes_matching(&format!("sleep {secs}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].pid, pid);
    assert_eq!(found[0].host.as_deref(), Some("h3"));
    assert_eq!(tb.processes_on("h3", &format!("sleep {secs}")), found);
    assert!(tb.processes_on("h2", &format!("sleep {secs}")).is_empty());
    tb.sh_ok("h3", &format!("kill {pid}"));
    assert!(wait_until(Duration::from_secs(5), || !tb.pid_alive_on("h3", pid)));
    assert!(tb.processes_matching(&format!("sleep {secs}")).is_empty());
}
