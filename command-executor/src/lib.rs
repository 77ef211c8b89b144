//! Runs commands anywhere: local, via sudo, in Docker containers, over SSH, nested.
//!
//! A [`Target`] is a stack of [`Layer`]s (`ssh → sudo → docker exec`); an [`Executor`] launches a
//! [`Command`], a [`ManagedSpec`] or a [`DockerRun`] on it (the [`Launcher`] trait), or attaches to something
//! already running (the [`Attacher`] trait). Every kind yields the same [`Process`] handle: id, [`Events`]
//! (Started, Stdout/Stderr lines, Exited), `wait`, `signal`, `stop`.
//!
//! ```no_run
//! use command_executor::*;
//! # smol::block_on(async {
//! let exec = Executor::default();
//! let h1 = SshHost::new("198.18.0.11").name("h1").user("hbuser");
//! let target = Target::ssh(h1).sudo("hbsvc");
//! let out = exec.output(&target, &Command::new("id").arg("-un")).await?;
//! assert_eq!(out.stdout_text(), "hbsvc\n");
//! # Ok::<_, Error>(()) });
//! ```

mod classify;
mod command;
mod docker;
mod error;
mod event;
mod executor;
mod layer;
mod managed;
mod process;
pub mod quote;
mod script;
pub mod service;
mod signal;
mod ssh;

pub use command::{Command, PtySize, StdinMode};
pub use docker::{ContainerSelector, DockerRun};
pub use error::{Error, Place, Result};
pub use event::{Event, Events, ExitStatus, Line, MAX_LINE, OutputStream};
pub use executor::{Attacher, BoxFuture, Executor, ExecutorOptions, Launcher, LocalPid};
pub use layer::{DockerCli, DockerExec, HostKeyPolicy, Layer, SshHost, Sudo, Target};
pub use managed::{Follow, ManagedRef, ManagedSpec};
pub use process::{ManagedState, Output, Process, ProcessId, Stdin};
pub use signal::Signal;
pub use ssh::SshStats;

#[cfg(test)]
mod tests {
    /// The orchestrator moves handles across tasks and threads.
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<crate::Process>();
        check::<crate::Executor>();
        check::<crate::Events>();
        check::<crate::Error>();
        fn check_future<F: std::future::Future + Send>(_: F) {}
        let exec = crate::Executor::default();
        let target = crate::Target::local();
        let cmd = crate::Command::new("true");
        check_future(exec.spawn(&target, &cmd));
        let spec = crate::ManagedSpec::new("x", cmd.clone());
        check_future(exec.start_managed(&target, &spec));
    }
}
