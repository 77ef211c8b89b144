//! File watching (`watch:`): a change under a service's watched paths restarts it (or, with
//! `action: none`, is only recorded), Compose `develop.watch` style.
//!
//! One inotify watcher (the `notify` crate) per project watches every path recursively. Its
//! thread matches each changed path against the services' paths and ignore rules (`ignore:`
//! patterns, the `.gitignore` of the project's folder and of each watched folder unless
//! `gitignore: false`, and always `.git/`), so ignored paths never reach the executor. A burst of
//! changes is one: a service is restarted once no change came for its `debounce`. Each restart
//! (and each change with `action: none`) is a `service.watch` event naming the changed paths.
//! Changes while a service is stopped or failed do not start it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;
use harness_config::WatchAction;
use harness_protocol::{EventType, ServiceKey, ServiceState};
use harness_store::NewEvent;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::Watcher as _;

use crate::{Error, Orchestrator, Result};

/// At most this many paths are named in one event (the count says how many changed).
const MAX_NAMED: usize = 50;

/// What is watched for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedService {
    pub name: String,
    pub paths: Vec<PathBuf>,
    pub action: WatchAction,
}

/// A running watch of one project; dropping it stops watching.
pub struct Watching {
    pub services: Vec<WatchedService>,
    _watcher: notify::RecommendedWatcher,
    _task: smol::Task<()>,
}

struct Spec {
    name: String,
    roots: Vec<PathBuf>,
    ignore: Gitignore,
    debounce: Duration,
    action: WatchAction,
}

impl Spec {
    fn wants(&self, path: &Path) -> bool {
        if !self.roots.iter().any(|r| path.starts_with(r)) {
            return false;
        }
        // The matcher panics on paths outside its root.
        if !path.starts_with(self.ignore.path()) {
            return true;
        }
        !self
            .ignore
            .matched_path_or_any_parents(path, path.is_dir())
            .is_ignore()
    }
}

impl Orchestrator {
    /// Starts watching `services` of an applied project (those with `watch:` when empty; a
    /// named service without `watch:` is watched with the defaults: its project's folder,
    /// restart, 100 ms).
    pub async fn watch(&self, project: &str, services: &[String]) -> Result<Watching> {
        let inner = self.inner()?;
        let known = inner.projects.lock().ok().and_then(|p| {
            p.get(project)
                .map(|rt| (rt.project.clone(), rt.base_dir.clone()))
        });
        let (def, base) = known.ok_or_else(|| Error::UnknownProject {
            project: project.to_owned(),
        })?;
        let base = base.ok_or_else(|| Error::Service {
            service: project.to_owned(),
            message: "the project was not started from a file, so there is nothing to watch"
                .to_owned(),
        })?;
        let names: Vec<String> = if services.is_empty() {
            def.services
                .iter()
                .filter(|(_, s)| s.watch.is_some())
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            crate::names::expand(project, def.services.keys(), services)?
        };
        if names.is_empty() {
            return Err(Error::Service {
                service: project.to_owned(),
                message: "no service has `watch:`; name the services to watch".to_owned(),
            });
        }
        let mut specs = Vec::new();
        for name in names {
            let w = def.services[&name].watch.clone().unwrap_or_default();
            let roots: Vec<PathBuf> = if w.paths.is_empty() {
                vec![base.clone()]
            } else {
                w.paths.iter().map(|p| base.join(p)).collect()
            };
            let ignore =
                matcher(&base, &roots, &w.ignore, w.gitignore).map_err(|m| Error::Service {
                    service: name.clone(),
                    message: m,
                })?;
            specs.push(Spec {
                name,
                roots,
                ignore,
                debounce: w.debounce,
                action: w.action,
            });
        }
        let specs = Arc::new(specs);
        let (tx, rx) = async_channel::unbounded::<(usize, PathBuf)>();
        let for_thread = specs.clone();
        let project_name = project.to_owned();
        let watcher = blocking::unblock(move || -> Result<notify::RecommendedWatcher> {
            let matching = for_thread.clone();
            let mut watcher =
                notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                    let Ok(ev) = res else { return };
                    if matches!(ev.kind, notify::EventKind::Access(_)) {
                        return;
                    }
                    for path in ev.paths {
                        for (i, s) in matching.iter().enumerate() {
                            if s.wants(&path) {
                                let _ = tx.try_send((i, path.clone()));
                            }
                        }
                    }
                })
                .map_err(|e| Error::Service {
                    service: project_name.clone(),
                    message: format!("cannot watch files: {e}"),
                })?;
            let roots: BTreeSet<&PathBuf> = for_thread.iter().flat_map(|s| &s.roots).collect();
            for root in roots {
                watcher
                    .watch(root, notify::RecursiveMode::Recursive)
                    .map_err(|e| Error::Service {
                        service: for_thread
                            .iter()
                            .find(|s| s.roots.contains(root))
                            .map(|s| s.name.clone())
                            .unwrap_or_default(),
                        message: format!("cannot watch {}: {e}", root.display()),
                    })?;
            }
            Ok(watcher)
        })
        .await?;
        let services = specs
            .iter()
            .map(|s| WatchedService {
                name: s.name.clone(),
                paths: s.roots.clone(),
                action: s.action,
            })
            .collect();
        let task = smol::spawn(run(self.clone(), project.to_owned(), base, specs, rx));
        Ok(Watching {
            services,
            _watcher: watcher,
            _task: task,
        })
    }
}

fn matcher(
    base: &Path,
    roots: &[PathBuf],
    patterns: &[String],
    gitignore: bool,
) -> std::result::Result<Gitignore, String> {
    let mut b = GitignoreBuilder::new(base);
    if gitignore {
        let mut files = vec![base.join(".gitignore")];
        files.extend(roots.iter().map(|r| r.join(".gitignore")));
        files.dedup();
        for f in files.iter().filter(|f| f.is_file()) {
            if let Some(e) = b.add(f) {
                return Err(format!("{}: {e}", f.display()));
            }
        }
    }
    b.add_line(None, ".git/")
        .map_err(|e| format!("watch.ignore: {e}"))?;
    for p in patterns {
        b.add_line(None, p)
            .map_err(|e| format!("watch.ignore {p:?}: {e}"))?;
    }
    b.build().map_err(|e| format!("watch.ignore: {e}"))
}

/// Collects changes per service and acts once each burst is over.
async fn run(
    orch: Orchestrator,
    project: String,
    base: PathBuf,
    specs: Arc<Vec<Spec>>,
    rx: async_channel::Receiver<(usize, PathBuf)>,
) {
    let mut pending: Vec<Option<(BTreeSet<PathBuf>, Instant)>> =
        specs.iter().map(|_| None).collect();
    loop {
        let next = pending.iter().flatten().map(|(_, at)| *at).min();
        let got = async { Some(rx.recv().await) }
            .or(async {
                match next {
                    Some(at) => {
                        async_io::Timer::at(at).await;
                        None
                    }
                    None => std::future::pending().await,
                }
            })
            .await;
        match got {
            Some(Ok((i, path))) => {
                let at = Instant::now() + specs[i].debounce;
                let slot = pending[i].get_or_insert_with(|| (BTreeSet::new(), at));
                slot.0.insert(path);
                slot.1 = at;
                continue;
            }
            Some(Err(_)) => return,
            None => {}
        }
        let now = Instant::now();
        for (i, slot) in pending.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|(_, at)| *at <= now)
                && let Some((paths, _)) = slot.take()
            {
                act(&orch, &project, &base, &specs[i], paths).await;
            }
        }
    }
}

async fn act(
    orch: &Orchestrator,
    project: &str,
    base: &Path,
    spec: &Spec,
    paths: BTreeSet<PathBuf>,
) {
    let Ok(inner) = orch.inner() else { return };
    let key = ServiceKey {
        project: project.to_owned(),
        name: spec.name.clone(),
    };
    // Only a service that is meant to run is restarted.
    let up = matches!(
        inner.store.get(&key).await,
        Ok(Some(e)) if matches!(
            e.state,
            ServiceState::Running
                | ServiceState::Starting
                | ServiceState::Restarting { .. }
                | ServiceState::Exited { .. }
        )
    );
    let restart = up && spec.action == WatchAction::Restart;
    let named: Vec<String> = paths
        .iter()
        .take(MAX_NAMED)
        .map(|p| p.strip_prefix(base).unwrap_or(p).display().to_string())
        .collect();
    tracing::info!(project, service = %spec.name, changed = paths.len(), restart, "watched files changed");
    let _ = inner
        .store
        .emit(vec![NewEvent {
            kind: EventType::ServiceWatch,
            project: Some(project.to_owned()),
            service: Some(spec.name.clone()),
            data: serde_json::json!({
                "paths": named,
                "count": paths.len(),
                "action": if restart { "restart" } else { "none" },
            }),
        }])
        .await;
    if restart
        && let Err(e) = orch
            .restart(project, std::slice::from_ref(&spec.name))
            .await
    {
        tracing::warn!(project, service = %spec.name, error = %e, "restart after a change");
    }
}
