//! The command line, declared with clap derive. Global flags apply to every command.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCandidates;

use crate::commands::completions::{project_names, service_names};

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Run services across processes, containers and SSH hosts",
    propagate_version = true
)]
pub struct Cli {
    /// The services file [default: services.yaml]; repeat for override files, merged in order
    /// as Compose merges them (HARNESS_FILE: paths separated by `:`).
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        value_name = "PATH",
        env = "HARNESS_FILE",
        value_delimiter = ':'
    )]
    pub file: Vec<PathBuf>,

    /// The project name: names the project of the services file (two copies of one stack side
    /// by side), or picks the project to act on without reading the file.
    #[arg(short = 'p', long, global = true, value_name = "NAME", add = ArgValueCandidates::new(project_names))]
    pub project: Option<String>,

    /// Also start the services of this profile (repeatable; `*` for all; HARNESS_PROFILES:
    /// comma-separated).
    #[arg(
        long = "profile",
        global = true,
        value_name = "NAME",
        env = "HARNESS_PROFILES",
        value_delimiter = ','
    )]
    pub profiles: Vec<String>,

    /// Output format for reports.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// No colors (also when NO_COLOR is set or output is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,

    #[command(flatten)]
    pub daemon: DaemonArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How the CLI reaches the daemon.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The daemon to talk to (wss://HOST:PORT/v1/ws); default: the local one in $HARNESS_HOME
    /// (also set by HARNESS_DAEMON or `daemon:` in the config file).
    #[arg(
        long = "daemon",
        global = true,
        value_name = "URL",
        env = "HARNESS_DAEMON"
    )]
    pub url: Option<String>,

    /// Fail instead of starting a local daemon when none runs (also HARNESS_NO_AUTOSTART=1).
    #[arg(
        long,
        global = true,
        env = "HARNESS_NO_AUTOSTART",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_autostart: bool,

    /// Authenticate with the token in this file (its first line), e.g. a named token from
    /// `harness token create`; default: HARNESS_TOKEN, else the owner's token in $HARNESS_HOME.
    #[arg(long, global = true, value_name = "PATH", env = "HARNESS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: tables and rendered diagnostics.
    Table,
    /// For scripts: JSON on stdout.
    Json,
}

/// Each command's own arguments are declared only when it is the one being parsed (or when help,
/// completions or the man page need them all): `harness status` does not build the other fifty.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Check the services file and report every problem (exit 0 valid, 2 invalid).
    Validate,
    /// Start the project's services (all, or these and what they depend on); idempotent.
    Start {
        /// Services to start; default: all.
        #[arg(add = ArgValueCandidates::new(service_names))]
        services: Vec<String>,
        /// Stop and forget services that are no longer in the file.
        #[arg(long)]
        remove_orphans: bool,
    },
    /// Stop services (all by default), dependents first.
    Stop {
        #[arg(add = ArgValueCandidates::new(service_names))]
        services: Vec<String>,
        /// Also stop running services that depend on the named ones.
        #[arg(long)]
        force: bool,
        /// Override every service's stop timeout (e.g. 2s).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Stop and start services again (all by default).
    Restart {
        #[arg(add = ArgValueCandidates::new(service_names))]
        services: Vec<String>,
    },
    /// Start, then show every service's output and lifecycle in the foreground; Ctrl-C stops.
    Up {
        #[arg(add = ArgValueCandidates::new(service_names))]
        services: Vec<String>,
        /// Start in the background and return (as `start`).
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Watch services' files (those with `watch:` by default): a change restarts the service.
    Watch {
        #[arg(add = ArgValueCandidates::new(service_names))]
        services: Vec<String>,
    },
    /// Stop the project's services and forget the project.
    Down {
        /// Override every service's stop timeout (e.g. 2s).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Run N instances of a service (`web=3`): NAME-1..NAME-N; scaling down stops the highest
    /// numbers first (and restarts what depends on them, so they see the new endpoints; at 0
    /// they keep running with an empty `${web.endpoints}`).
    Scale {
        #[arg(required = true, value_name = "SERVICE=N")]
        targets: Vec<String>,
    },
    /// What runs: state, pid, endpoints, health, restarts, uptime (of the services file's
    /// project when there is one, else of every project).
    #[command(visible_alias = "ps")]
    Status {
        /// Redraw every second until interrupted.
        #[arg(long)]
        watch: bool,
        /// Every project, also when a services file names one.
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// CPU %, memory, fds, threads and uptime of each running service, read where it runs
    /// (local /proc, one command per SSH host, `docker stats` per engine); `-` is unknown.
    Top {
        /// Read again every 2 seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Every project, also when a services file names one.
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Service output, with a prefix per service.
    Logs(LogsArgs),
    /// Run a command in a service's context; its exit code becomes harness's.
    ///
    /// stdin is forwarded and output streamed as it comes. When stdin is a terminal the command
    /// gets a terminal too (at the far end: `ssh -tt`, `docker exec -it`), this terminal is put
    /// in raw mode until it ends, and window size changes follow; without one, Ctrl-C is sent
    /// to the command as SIGINT (twice: harness gives up and the command is killed). With `-o json`
    /// the output is collected into one object instead, without stdin.
    Exec {
        /// No terminal, even when stdin is one (like `docker compose exec -T`).
        #[arg(short = 'T', long = "no-tty", conflicts_with = "tty")]
        no_tty: bool,
        /// A terminal even when stdin is not one (end of stdin is then sent as ^D).
        #[arg(short = 't', long = "tty")]
        tty: bool,
        #[arg(add = ArgValueCandidates::new(service_names))]
        service: String,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Health checks: what is checked, the last result and its output.
    Health {
        #[arg(add = ArgValueCandidates::new(service_names))]
        service: Option<String>,
    },
    /// The live event stream (Ctrl-C to stop).
    Events {
        /// Replay retained events after this sequence number first.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// Print the events retained up to now (after --since) and exit instead of following:
        /// for scripts (`harness events --since 0 --no-follow -o json`).
        #[arg(long)]
        no_follow: bool,
    },
    /// Operations (start, stop, restart, deploy, rollback): what happened, what is stuck; `ops
    /// show ID`, `ops cancel ID`, `ops wait ID`.
    Ops(crate::commands::ops::OpsArgs),
    /// The daemon that owns the services.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Inspect the resolved configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build and verify deployable packages.
    #[command(subcommand)]
    Package(crate::commands::package::PackageCommand),
    /// Ship a package to hosts over SSH (verified, installed atomically), or roll it back.
    Deploy(crate::commands::deploy::DeployArgs),
    /// The SSH hosts of the services file.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Compare the registry with what runs everywhere (local processes, hosts, engines) and the
    /// running definitions with the services file: orphaned, abandoned, state mismatch,
    /// definition drift, unreachable; each with evidence and the commands that resolve it.
    /// Read-only; exit 1 when there is drift.
    Drift,
    /// Resolve drift findings. Without a flag it only says what --auto would do (--dry-run);
    /// nothing is killed without --kill.
    Sync(SyncArgs),
    /// Named API tokens with a scope (read, operate, admin), besides the owner's.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The WireGuard meshes of the services file: members, peers, reachability.
    #[command(subcommand)]
    Network(crate::commands::network::NetworkCommand),
    /// Print the shell's completion set-up (completes service and project names too), e.g.
    /// `source <(harness completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `harness manpage > /usr/local/share/man/man1/harness.1`.
    Manpage,
    /// The web dashboard: prints a one-time login link to the daemon's page (and opens it in a
    /// browser when a desktop is there). The code works once, within 2 minutes.
    Dashboard {
        /// Only print the link; do not start a browser.
        #[arg(long)]
        no_open: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    #[arg(add = ArgValueCandidates::new(service_names))]
    pub services: Vec<String>,
    /// Keep printing new lines, across restarts, until interrupted.
    #[arg(short = 'F', long)]
    pub follow: bool,
    /// Only the last N lines of each service.
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines from this long ago (e.g. 10m, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Prefix each line with the time it was read.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only lines (or markers) that match this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
    /// Lifecycle markers (start, exit, restart, health) instead of the output.
    #[arg(long)]
    pub events: bool,
    /// Delete the services' log files (current and rotated) instead of showing them.
    #[arg(long, conflicts_with_all = ["follow", "events", "grep", "tail", "since"])]
    pub clear: bool,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Run the daemon in the foreground.
    Run(ListenArgs),
    /// Start the daemon in the background (log in $HARNESS_HOME/daemon.log).
    Start(ListenArgs),
    /// Stop the daemon; services keep running unless --stop-services.
    Stop {
        #[arg(long)]
        stop_services: bool,
    },
    /// Pid, version, uptime, address, services, connections.
    Status,
    /// Uptime, request and event rates, subscribers, connections and their limit, open files and
    /// the service capacity they leave, memory, store size, retained events, log bytes, SSH
    /// connections per host.
    Stats,
    /// The daemon's effective settings and where each came from (flag, env, default).
    Config,
    /// The daemon's environment, secret-looking values (PASSWORD, TOKEN, SECRET, KEY,
    /// CREDENTIAL) masked; needs an admin token.
    Env,
    /// The daemon's own log.
    Logs {
        #[arg(short = 'F', long)]
        follow: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to listen on; port 0 picks a free one (recorded in $HARNESS_HOME/daemon.json).
    #[arg(long, value_name = "ADDR", env = "HARNESS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// When the daemon itself shuts down (SIGTERM/SIGINT), stop the services too.
    #[arg(long)]
    pub stop_services: bool,
    /// Set by `daemon start` and auto-start: leave the caller's session.
    #[arg(long, hide = true)]
    pub detached: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once (stored only hashed). Use it with
    /// HARNESS_TOKEN or --token-file.
    Create {
        /// 1-64 of A-Z a-z 0-9 . _ - (not `owner`).
        name: String,
        /// read: status, logs, events, health, top; operate: also start, stop, restart, scale,
        /// watch; admin: everything (exec, deploy, tokens, daemon stop).
        #[arg(long, value_parser = ["read", "operate", "admin"])]
        scope: String,
        /// Stop working after this long (e.g. 7d, 12h, 90s); default: until revoked.
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires: Option<std::time::Duration>,
    },
    /// The named tokens: scope, creation, expiry (never their secrets).
    List,
    /// Remove a token: refused from its next request, its open connections closed.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Per host: reachable, authenticated, `sudo -n` works, docker reachable (and as whom),
    /// latency; a hint for each failure (exit 1 when something the project needs fails). The
    /// daemon runs the checks from its machine, with its environment (HARNESS_KNOWN_HOSTS).
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The configuration after substitution and defaults (YAML, or JSON with -o json).
    Show {
        /// Print secret-looking values (PASSWORD, TOKEN, SECRET, KEY, CREDENTIAL) unmasked.
        #[arg(long)]
        show_secrets: bool,
        /// List every value with the file:line:col that set it (after override files).
        #[arg(long)]
        origins: bool,
        /// Per service, what each `${svc.ip}`-style reference resolves to for it, and whether
        /// that is the direct address or a WireGuard mesh address; and the endpoint the daemon
        /// checks health at.
        #[arg(long, conflicts_with = "origins")]
        resolved: bool,
    },
    /// Start order in waves; stop order is the reverse.
    Deps,
    /// The JSON Schema of the services file, for editors.
    Schema,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    harness_config::parse_duration(s)
}

/// `harness sync`: one of these (none = --dry-run).
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub struct SyncArgs {
    /// Say what --auto would do; change nothing (the default).
    #[arg(long)]
    pub dry_run: bool,
    /// Resolve only the safe findings: forget abandoned records, record observed states,
    /// adopt orphans carrying the launch id of a service of an applied project that is not
    /// running. Lists what it leaves for a human.
    #[arg(long)]
    pub auto: bool,
    /// Supervise the orphan of finding ID as its service.
    #[arg(long, value_name = "ID")]
    pub adopt: Option<String>,
    /// Kill the orphan of finding ID (its identity re-verified first; containers: docker rm -f).
    #[arg(long, value_name = "ID")]
    pub kill: Option<String>,
    /// Forget an abandoned record: PROJECT/SERVICE (or SERVICE with -p).
    #[arg(long, value_name = "NAME")]
    pub forget: Option<String>,
}

/// A token's lifetime: a number with `s`, `m`, `h`, `d` or `w` (`7d`, `12h`), or a duration as
/// services.yaml writes them.
fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let unit = match t.chars().last() {
        Some('d') => 86_400,
        Some('w') => 7 * 86_400,
        _ => return harness_config::parse_duration(t),
    };
    let n: u64 = t[..t.len() - 1]
        .parse()
        .map_err(|_| format!("`{t}` is not a lifetime (try 7d, 12h or 90s)"))?;
    n.checked_mul(unit)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("`{t}` is too long"))
}
