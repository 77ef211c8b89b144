//! What to run: program, arguments, environment, working directory, stdin.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::error::{Error, Result};

/// What the command's stdin is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    /// `/dev/null`: the program sees end of file at once.
    #[default]
    Null,
    /// A pipe the caller writes through [`crate::Process::take_stdin`]; forwarded through every layer.
    Piped,
}

/// The size of a pseudo-terminal, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

impl Default for PtySize {
    fn default() -> Self {
        PtySize { rows: 24, cols: 80 }
    }
}

/// A program with its arguments, environment and working directory. The environment and working directory
/// apply to the program at the end of the layer chain (inside the container, as the sudo user, on the remote
/// host), not to the layers' own clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<OsString>,
    pub(crate) stdin: StdinMode,
    pub(crate) timeout: Option<Duration>,
    /// Run on a pseudo-terminal of this size (see [`Command::pty`]).
    pub(crate) pty: Option<PtySize>,
    /// Output as it is read instead of in lines (see [`Command::chunked_output`]).
    pub(crate) chunked: bool,
    /// An internal control operation (signal, status): uses the ssh slot kept for those.
    pub(crate) control: bool,
}

impl Command {
    /// A command running `program` (looked up in `PATH` at the end of the chain).
    pub fn new(program: impl Into<OsString>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: StdinMode::Null,
            timeout: None,
            pty: None,
            chunked: false,
            control: false,
        }
    }

    /// Appends one argument, passed byte for byte (empty strings and newlines included).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable for the program (added to the environment it would get anyway).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets the program's working directory.
    pub fn current_dir(mut self, dir: impl Into<OsString>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Connects stdin (default [`StdinMode::Null`]).
    pub fn stdin(mut self, mode: StdinMode) -> Self {
        self.stdin = mode;
        self
    }

    /// Kills the command (and everything it started) if it runs longer than this; waiting then yields
    /// [`Error::Timeout`]. Without it a one-off command may run for ever, like a service.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Delivers output as it is read ([`crate::Event::Stdout`] and [`crate::Event::Stderr`] carry
    /// whatever one read returned, newlines included, `newline: false`), so a prompt without a newline
    /// arrives at once. A listener that falls behind slows the program down (the pipes fill)
    /// instead of losing output.
    pub fn chunked_output(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Runs the program on a pseudo-terminal of `size`, allocated at the far end of the chain:
    /// locally the executor opens one (the program's controlling terminal); an ssh layer runs
    /// `ssh -tt`, a docker layer `docker exec -it`, and sudo runs on the terminal it is given. stdout
    /// and stderr are then one stream (all output arrives as [`crate::Event::Stdout`]), output is
    /// chunked, and stdin is the terminal ([`crate::Process::take_stdin`]; closing it sends the
    /// terminal's end-of-file character). Window size changes go through
    /// [`crate::Process::resize`]. The environment still travels on stdin: the exec wrapper turns the
    /// far terminal's echo off (`stty raw -echo`) before the executor sends it, and restores the
    /// terminal before the program starts, so nothing of it is echoed (`stty` is then needed at the
    /// far end).
    pub fn pty(mut self, size: PtySize) -> Self {
        self.pty = Some(size);
        self.stdin = StdinMode::Piped;
        self.chunked = true;
        self
    }

    /// The pseudo-terminal size, for commands run on one.
    pub fn get_pty(&self) -> Option<PtySize> {
        self.pty
    }

    /// The program.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments after the program.
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The environment set on the command.
    pub fn get_env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// The working directory set on the command.
    pub fn get_current_dir(&self) -> Option<&OsStr> {
        self.cwd.as_deref()
    }

    /// The stdin mode.
    pub fn get_stdin(&self) -> StdinMode {
        self.stdin
    }

    /// The timeout, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Program followed by arguments.
    pub fn argv(&self) -> Vec<OsString> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// Checks what cannot cross a layer: NUL bytes anywhere, bad variable names, an empty program.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.program.is_empty() {
            return Err(Error::invalid("command", "empty program"));
        }
        let nul = |s: &OsStr| s.as_bytes().contains(&0);
        if nul(&self.program) || self.args.iter().any(|a| nul(a)) {
            return Err(Error::invalid("command", "an argument contains a NUL byte"));
        }
        for (k, v) in &self.env {
            let kb = k.as_bytes();
            let valid = !kb.is_empty()
                && !kb[0].is_ascii_digit()
                && kb.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(Error::invalid(
                    "environment variable name",
                    format!("{k:?}"),
                ));
            }
            if nul(v) {
                return Err(Error::invalid(
                    "environment variable",
                    format!("{k:?} contains a NUL byte"),
                ));
            }
        }
        if self.cwd.as_deref().is_some_and(|c| c.is_empty() || nul(c)) {
            return Err(Error::invalid(
                "working directory",
                format!("{:?}", self.cwd),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_env() {
        assert!(Command::new("x").env("A B", "1").validate().is_err());
        assert!(Command::new("x").env("1A", "1").validate().is_err());
        assert!(Command::new("x").env("A_1", "1\n2").validate().is_ok());
        assert!(Command::new("").validate().is_err());
        assert!(Command::new("x").arg("a\0b").validate().is_err());
    }

    #[test]
    fn env_replaces() {
        let c = Command::new("x").env("A", "1").env("A", "2");
        assert_eq!(c.get_env(), &[("A".into(), "2".into())]);
    }
}
