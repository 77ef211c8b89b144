//! The daemon's command line, shared by `harnessd` and the CLI that starts it. Parsed by hand:
//! clap would put the CLI's parser back into the lean daemon's address space (ADR 0024).

use std::ffi::OsString;

use super::RunOptions;

/// This build's identity, so a CLI never starts a `harnessd` left over from another build
/// (`cargo run` relinks only the `harness` binary). Written by build.rs from the sources.
pub const BUILD_ID: &str = env!("HARNESS_BUILD_ID");

/// What `harnessd` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Run(RunOptions),
    Help,
    Version,
    BuildId,
}

pub const USAGE: &str = "\
harnessd: the harness daemon (normally started by `harness`; see `harness daemon --help`)

Usage: harnessd [--listen ADDR] [--stop-services] [--detached]

Options:
      --listen <ADDR>   Address to listen on; port 0 picks a free one [env: HARNESS_LISTEN=]
      --stop-services   When the daemon shuts down (SIGTERM/SIGINT), stop the services too
      --detached        Leave the caller's session (what `harness daemon start` does)
      --build-id        Print this build's identity
  -h, --help            Print help
  -V, --version         Print version
";

/// Parses `harnessd`'s arguments (without the program name). `HARNESS_LISTEN` stands in for a
/// missing `--listen`, as it does for `harness daemon run`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    listen_env: Option<OsString>,
) -> Result<Invocation, String> {
    let mut opts = RunOptions::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        match flag.as_str() {
            "--listen" => {
                let value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .ok_or("--listen needs an address (HOST:PORT)")?,
                };
                opts.listen = Some(parse_addr(&value, "--listen")?);
            }
            "--stop-services" if inline.is_none() => opts.stop_services = true,
            "--detached" if inline.is_none() => opts.detached = true,
            "--build-id" => return Ok(Invocation::BuildId),
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            other => return Err(format!("unexpected argument {other:?}\n\n{USAGE}")),
        }
    }
    if opts.listen.is_none()
        && let Some(env) = listen_env
    {
        let value = env
            .into_string()
            .map_err(|v| format!("HARNESS_LISTEN {v:?} is not UTF-8"))?;
        opts.listen = Some(parse_addr(&value, "HARNESS_LISTEN")?);
    }
    Ok(Invocation::Run(opts))
}

fn parse_addr(value: &str, what: &str) -> Result<std::net::SocketAddr, String> {
    value
        .parse()
        .map_err(|e| format!("{what} {value:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:0)"))
}

impl RunOptions {
    /// The arguments that make `harnessd` (or `harness daemon run`) run with these options.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if self.detached {
            args.push("--detached".into());
        }
        if let Some(addr) = self.listen {
            args.push("--listen".into());
            args.push(addr.to_string().into());
        }
        if self.stop_services {
            args.push("--stop-services".into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: Option<&str>) -> Result<Invocation, String> {
        parse(args.iter().map(OsString::from), env.map(OsString::from))
    }

    #[test]
    fn options_round_trip_through_their_arguments() {
        let opts = RunOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            stop_services: true,
            detached: true,
        };
        assert_eq!(
            parse(opts.to_args(), None),
            Ok(Invocation::Run(opts.clone()))
        );
        assert_eq!(
            run(
                &["--listen=127.0.0.1:0", "--detached", "--stop-services"],
                None
            ),
            Ok(Invocation::Run(opts))
        );
    }

    #[test]
    fn the_environment_fills_only_a_missing_listen() {
        let from_env = run(&[], Some("127.0.0.1:7000")).unwrap();
        assert_eq!(
            from_env,
            Invocation::Run(RunOptions {
                listen: Some("127.0.0.1:7000".parse().unwrap()),
                ..RunOptions::default()
            })
        );
        let flag_wins = run(&["--listen", "127.0.0.1:1"], Some("bad")).unwrap();
        assert!(matches!(flag_wins, Invocation::Run(o) if o.listen.unwrap().port() == 1));
    }

    #[test]
    fn bad_input_is_named() {
        let e = run(&["--listen", "nowhere"], None).unwrap_err();
        assert!(e.contains("--listen \"nowhere\""), "{e}");
        let e = run(&[], Some("x:y")).unwrap_err();
        assert!(e.contains("HARNESS_LISTEN"), "{e}");
        let e = run(&["--frobnicate"], None).unwrap_err();
        assert!(e.contains("unexpected argument \"--frobnicate\""), "{e}");
        let e = run(&["--listen"], None).unwrap_err();
        assert!(e.contains("needs an address"), "{e}");
        assert_eq!(run(&["--help"], None), Ok(Invocation::Help));
        assert_eq!(run(&["-V"], None), Ok(Invocation::Version));
    }
}
