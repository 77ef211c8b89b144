//! Builds (or opens) a package and deploys it to testbed hosts in parallel, drawing nothing: prints one
//! line per host and the wall time. Used by bench/deploy.sh.
//!
//! ```text
//! cargo run --release -p packages --example deploy_hosts -- PKG.tar.zst|DIR ROOT h1 [h2 ...]
//! ```
//! A directory is built first, into `$TMPDIR/harness-packages/`. Hosts come from the testbed env file
//! (`HARNESS_TESTBED_ENV`); the login user installs through sudo.

use std::path::Path;
use std::time::Instant;

use command_executor::{Executor, SshHost, Target};
use packages::{DeployOptions, Package};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: deploy_hosts PKG.tar.zst|DIR ROOT HOST...");
        std::process::exit(2);
    }
    let started = Instant::now();
    let src = Path::new(&args[0]);
    let out = std::env::temp_dir().join("harness-packages");
    let pkg = if src.is_dir() {
        packages::build(src, &out)
    } else {
        Package::open(src)
    };
    let pkg = pkg.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let opened = started.elapsed();
    let tb = testbed::Testbed::get();
    let targets: Vec<Target> = args[2..]
        .iter()
        .map(|name| {
            let h = tb.host(name);
            let host = SshHost::new(h.addr.to_string())
                .name(name.as_str())
                .port(tb.ssh_port)
                .user(tb.ssh_user.clone())
                .identity_file(&tb.ssh_key)
                .known_hosts(&tb.known_hosts);
            Target::ssh(host).sudo("root")
        })
        .collect();
    let exec = Executor::default();
    let opts = DeployOptions {
        root: args[1].clone(),
        ..DeployOptions::default()
    };
    let results = smol::block_on(packages::deploy_all(&exec, &targets, &pkg, &opts, &|_| {}));
    let mut failed = false;
    for r in results {
        match r {
            Ok(d) => println!(
                "{}: {} {:?} ({} bytes sent)",
                d.host, d.package, d.outcome, d.bytes_sent
            ),
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    println!(
        "{} ({} bytes, {}) to {} hosts: open/verify {:?}, total {:?}",
        pkg.id(),
        pkg.size,
        pkg.path.display(),
        targets.len(),
        opened,
        started.elapsed()
    );
    std::process::exit(i32::from(failed));
}
