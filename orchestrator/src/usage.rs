//! What running services use (`harness top`): CPU time, memory, fds and threads, read where each
//! runs — this machine's /proc, a remote host's /proc through ONE command per host over its
//! existing SSH connection, and `docker stats --no-stream` once per engine. Hosts and engines are
//! read at the same time; one that does not answer makes its services `Unknown`, never zero.

use std::collections::BTreeMap;

use command_executor::service::container::ContainerStats;
use command_executor::service::procfs::{Usage, UsageBatch};
use command_executor::{DockerCli, Target};
use harness_protocol::{Location, ServiceEntry, ServiceState};

use crate::spec::Resolved;
use crate::{Orchestrator, Result};

/// What one reading found for one service.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A process: its cumulative figures and the clock and units of its machine.
    Process {
        usage: Usage,
        /// Seconds since its machine booted, when read.
        uptime: f64,
        ticks_per_sec: u64,
        page_size: u64,
    },
    /// A container, as its engine counts it (CPU already a percentage over ~1 s).
    Container(ContainerStats),
    /// Could not be read: why.
    Unknown(String),
}

/// One running service's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReading {
    pub project: String,
    pub service: String,
    /// `local`, `ssh:HOST`, `docker:ENGINE`.
    pub place: String,
    pub pid: Option<u32>,
    pub entry: ServiceEntry,
    pub reading: Reading,
}

enum Group {
    Local,
    Host(Target),
    Engine(Target, DockerCli),
}

impl Orchestrator {
    /// Reads every running service (of `project`, or all); a service whose host is known not to
    /// answer (state `unknown`) is listed as unknown without being read.
    pub async fn read_usage(&self, project: Option<&str>) -> Result<Vec<UsageReading>> {
        let inner = self.inner()?;
        let entries: Vec<ServiceEntry> = self
            .status(project)
            .await?
            .into_iter()
            .filter(|e| {
                e.state == ServiceState::Running || matches!(e.state, ServiceState::Unknown { .. })
            })
            .collect();
        // Each service goes to the group of the place it runs; one reading per group.
        let mut groups: BTreeMap<String, (Group, Vec<usize>)> = BTreeMap::new();
        let mut out: Vec<UsageReading> = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let spec = self
                .project(&e.project)
                .and_then(|def| Resolved::new(&def, &e.name, None).ok());
            let (place, group) = match (&e.location, &spec) {
                (Location::Local, _) => ("local".to_owned(), Some(Group::Local)),
                (Location::Host { name, .. }, Some(spec)) => (
                    format!("ssh:{name}"),
                    spec.host.as_ref().map(|h| Group::Host(h.target(None))),
                ),
                (Location::Container { engine, .. }, Some(spec)) => (
                    format!("docker:{engine}"),
                    spec.container
                        .as_ref()
                        .map(|c| Group::Engine(c.cli_target(), c.cli())),
                ),
                (Location::Host { name, .. }, None) => (format!("ssh:{name}"), None),
                (Location::Container { engine, .. }, None) => (format!("docker:{engine}"), None),
            };
            let reading = match (&group, &e.state) {
                // Its host is known not to answer (ADR 0032): not waited on again.
                (_, ServiceState::Unknown { host, reason, .. }) => {
                    Reading::Unknown(format!("{host} does not answer: {reason}"))
                }
                (None, _) => Reading::Unknown("the project's definition is not loaded".into()),
                (Some(Group::Local | Group::Host(_)), _) if e.runtime.pid.is_none() => {
                    Reading::Unknown("no pid recorded".into())
                }
                (Some(_), _) => Reading::Unknown(String::new()),
            };
            if let (Some(g), Reading::Unknown(why)) = (group, &reading)
                && why.is_empty()
            {
                groups
                    .entry(place.clone())
                    .or_insert((g, Vec::new()))
                    .1
                    .push(i);
            }
            out.push(UsageReading {
                project: e.project.clone(),
                service: e.name.clone(),
                place,
                pid: e.runtime.pid,
                entry: e,
                reading,
            });
        }
        // One task per host and engine: they are read at the same time.
        let reads = groups.into_iter().map(|(place, (group, members))| {
            let exec = inner.executor.clone();
            let pids: Vec<u32> = members.iter().filter_map(|&i| out[i].pid).collect();
            let names: Vec<String> = members
                .iter()
                .map(|&i| match &out[i].entry.location {
                    Location::Container { name, .. } => name.clone(),
                    _ => String::new(),
                })
                .collect();
            smol::spawn(async move {
                let exec = &exec;
                let found: std::result::Result<Found, String> = match group {
                    Group::Local => blocking::unblock(move || {
                        command_executor::service::procfs::usage_batch(&pids)
                    })
                    .await
                    .map(Found::Procs)
                    .ok_or_else(|| "cannot read /proc/uptime".to_owned()),
                    Group::Host(target) => {
                        command_executor::service::remote::usage(exec, &target, &pids)
                            .await
                            .map(Found::Procs)
                            .map_err(|e| e.to_string())
                    }
                    Group::Engine(target, cli) => {
                        command_executor::service::container::stats(exec, &target, &cli)
                            .await
                            .map(Found::Containers)
                            .map_err(|e| e.to_string())
                    }
                };
                (place, members, names, found)
            })
        });
        let tasks: Vec<_> = reads.collect();
        for task in tasks {
            let (place, members, names, found) = task.await;
            for (k, &i) in members.iter().enumerate() {
                out[i].reading = match &found {
                    Err(why) => Reading::Unknown(format!("{place}: {why}")),
                    Ok(Found::Procs(batch)) => {
                        match out[i].pid.and_then(|p| batch.processes.get(&p)) {
                            Some(u) => process_reading(*u, batch),
                            None => Reading::Unknown("the process is gone".into()),
                        }
                    }
                    Ok(Found::Containers(stats)) => match stats.get(&names[k]) {
                        Some(s) => Reading::Container(*s),
                        None => Reading::Unknown("the engine does not list the container".into()),
                    },
                };
            }
        }
        Ok(out)
    }
}

enum Found {
    Procs(UsageBatch),
    Containers(BTreeMap<String, ContainerStats>),
}

fn process_reading(usage: Usage, batch: &UsageBatch) -> Reading {
    Reading::Process {
        usage,
        uptime: batch.uptime,
        ticks_per_sec: batch.ticks_per_sec,
        page_size: batch.page_size,
    }
}
