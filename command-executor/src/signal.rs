//! Signals by name. Remote targets are signalled with `kill -s NAME`, so a signal is kept as its portable
//! name; the local number comes from rustix.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A POSIX signal. The common ones have variants; [`Signal::from_str`] accepts any name `kill -l` knows here
/// (`TERM`, `SIGTERM`, `term`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Term,
    Kill,
    Int,
    Hup,
    Quit,
    Usr1,
    Usr2,
    Stop,
    Cont,
    Alrm,
    Winch,
    Pipe,
}

const TABLE: &[(Signal, &str, rustix::process::Signal)] = &[
    (Signal::Term, "TERM", rustix::process::Signal::TERM),
    (Signal::Kill, "KILL", rustix::process::Signal::KILL),
    (Signal::Int, "INT", rustix::process::Signal::INT),
    (Signal::Hup, "HUP", rustix::process::Signal::HUP),
    (Signal::Quit, "QUIT", rustix::process::Signal::QUIT),
    (Signal::Usr1, "USR1", rustix::process::Signal::USR1),
    (Signal::Usr2, "USR2", rustix::process::Signal::USR2),
    (Signal::Stop, "STOP", rustix::process::Signal::STOP),
    (Signal::Cont, "CONT", rustix::process::Signal::CONT),
    (Signal::Alrm, "ALRM", rustix::process::Signal::ALARM),
    (Signal::Winch, "WINCH", rustix::process::Signal::WINCH),
    (Signal::Pipe, "PIPE", rustix::process::Signal::PIPE),
];

impl Signal {
    /// The name `kill -s` takes (`TERM`).
    pub fn name(self) -> &'static str {
        TABLE
            .iter()
            .find(|(s, ..)| *s == self)
            .map(|(_, n, _)| *n)
            .unwrap_or("TERM")
    }

    /// The signal's number on this machine.
    pub fn number(self) -> i32 {
        self.to_rustix().as_raw()
    }

    pub(crate) fn to_rustix(self) -> rustix::process::Signal {
        TABLE
            .iter()
            .find(|(s, ..)| *s == self)
            .map(|(.., r)| *r)
            .unwrap_or(rustix::process::Signal::TERM)
    }

    /// The signal with this number on this machine, if it is one of ours.
    pub fn from_number(n: i32) -> Option<Signal> {
        TABLE
            .iter()
            .find(|(.., r)| r.as_raw() == n)
            .map(|(s, ..)| *s)
    }
}

impl FromStr for Signal {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        let bare = if bare == "ALARM" { "ALRM" } else { bare };
        if let Ok(n) = bare.parse::<i32>() {
            return Signal::from_number(n)
                .ok_or_else(|| Error::invalid("signal", format!("unknown signal number {n}")));
        }
        TABLE
            .iter()
            .find(|(_, n, _)| *n == bare)
            .map(|(s, ..)| *s)
            .ok_or_else(|| Error::invalid("signal", format!("unknown signal {s:?}")))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("TERM".parse::<Signal>().unwrap(), Signal::Term);
        assert_eq!("sigkill".parse::<Signal>().unwrap(), Signal::Kill);
        assert_eq!("9".parse::<Signal>().unwrap(), Signal::Kill);
        assert!("NOPE".parse::<Signal>().is_err());
        assert_eq!(Signal::Hup.number(), 1);
        assert_eq!(Signal::Term.to_string(), "SIGTERM");
    }
}
