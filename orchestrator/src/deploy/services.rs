//! `type: package` services: a package installed on a host, run there from its installed directory
//! with its manifest's `start` command.
//!
//! [`prepare`] turns each such service into the remote process it really is before a project is
//! applied: it makes sure the service's version is installed on its host (deploying the archive found
//! beside the services file or in `$HARNESS_HOME/packages` when it is missing), reads the manifest
//! *from the host* (so it is the one of the installed files), and rewrites the service as
//! `type: remote` with `command` = `start`, `working_dir` = `ROOT/NAME-VERSION`, the manifest's env
//! under the service's own, and the manifest's `health` when the service has no check. The supervisor,
//! addresses (`${svc.ip}`), logs and stop then work as for any remote process, and the version is part
//! of the definition: a service switched to another version (rollback) is restarted by `apply`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use command_executor::{Command, Executor, Target};
use harness_config::{HealthCheck, Probe, Project, ServiceKind, Template};
use harness_store::Store;
use packages::{DeployOptions, Manifest, Package};

use super::{DeployTarget, host_target};

/// Directories searched for `NAME-VERSION.tar.zst`, in order.
pub fn archive_dirs(base_dir: Option<&Path>, state_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(b) = base_dir {
        dirs.push(b.to_owned());
        dirs.push(b.join("packages"));
    }
    dirs.push(state_dir.join("packages"));
    dirs
}

/// What a package service runs once prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedService {
    pub service: String,
    pub host: String,
    /// `NAME-VERSION`.
    pub package: String,
    /// The installed directory it runs in.
    pub dir: String,
    /// Whether the version had to be deployed first.
    pub deployed: bool,
}

/// Prepares every `type: package` service of `project` (see the module docs). `versions` overrides
/// the version of some services (a rollback switches them to what is now active). The error names the
/// service, the host and the cause.
pub async fn prepare(
    exec: &Executor,
    store: &Store,
    project: &Project,
    archive_dirs: &[PathBuf],
    options: &DeployOptions,
    versions: &HashMap<String, String>,
) -> Result<(Project, Vec<PreparedService>), String> {
    let mut out = project.clone();
    let names: Vec<String> = project
        .services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Package)
        .map(|(n, _)| n.clone())
        .collect();
    // Each host and package may need a probe, an upload and a manifest read: all at once, except
    // services of one package on one host, which go one after the other (the first deploys it, and
    // the host's install lock would refuse a second concurrent deployment).
    let mut groups: BTreeMap<(Option<String>, Option<String>), Vec<String>> = BTreeMap::new();
    for name in &names {
        let s = &project.services[name];
        groups
            .entry((s.host.clone(), s.package.clone()))
            .or_default()
            .push(name.clone());
    }
    let shared = std::sync::Arc::new((
        exec.clone(),
        store.clone(),
        project.clone(),
        archive_dirs.to_vec(),
        options.clone(),
    ));
    let tasks: Vec<smol::Task<_>> = groups
        .into_values()
        .map(|group| {
            let shared = shared.clone();
            let versions: Vec<Option<String>> =
                group.iter().map(|n| versions.get(n).cloned()).collect();
            smol::spawn(async move {
                let (exec, store, project, dirs, options) = &*shared;
                let mut results = Vec::with_capacity(group.len());
                for (name, version) in group.into_iter().zip(versions) {
                    let r = prepare_one(exec, store, project, &name, version, dirs, options).await;
                    results.push((name, r));
                }
                results
            })
        })
        .collect();
    // Every task runs to its end (no deployment is cut off midway); all failures are reported.
    let mut done = Vec::with_capacity(names.len());
    let mut errors = Vec::new();
    for task in tasks {
        for (name, r) in task.await {
            match r {
                Ok((manifest, p)) => {
                    if let Some(s) = out.services.get_mut(&name) {
                        rewrite(s, &manifest, &p.dir);
                    }
                    done.push(p);
                }
                Err(e) => errors.push(format!("service {name}: {e}")),
            }
        }
    }
    if errors.is_empty() {
        for (name, s) in &out.services {
            for (dep, condition) in &s.depends_on {
                if *condition == harness_config::Condition::Healthy
                    && names.contains(dep)
                    && out
                        .services
                        .get(dep)
                        .is_some_and(|d| d.health_check.is_none())
                {
                    errors.push(format!(
                        "service {name} waits for {dep} to be healthy, but neither {dep} nor the \
                         manifest of its package has a health check"
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok((out, done))
    } else {
        Err(errors.join("; "))
    }
}

async fn prepare_one(
    exec: &Executor,
    store: &Store,
    project: &Project,
    name: &str,
    version: Option<String>,
    archive_dirs: &[PathBuf],
    options: &DeployOptions,
) -> Result<(Manifest, PreparedService), String> {
    let service = &project.services[name];
    let package = service
        .package
        .clone()
        .ok_or_else(|| "type: package needs `package:`".to_owned())?;
    let host = service
        .host
        .clone()
        .ok_or_else(|| "type: package needs `host:` (the host it is installed on)".to_owned())?;
    let target = host_target(project, &host).map_err(|e| e.to_string())?;
    let root = options.root.trim_end_matches('/').to_owned();
    let installed = packages::installed(exec, &target, &options.root, &package)
        .await
        .map_err(|e| e.to_string())?;
    let version = match version.or_else(|| service.version.clone()) {
        Some(v) => v,
        None => installed.current.clone().ok_or_else(|| {
            format!(
                "no version of package {package} is active on {host}: deploy one with `harness \
                 deploy`, or set `version:`"
            )
        })?,
    };
    let id = format!("{package}-{version}");
    let mut deployed = false;
    if !installed.versions.contains(&version) {
        let file = format!("{id}.tar.zst");
        let found = archive_dirs
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let dirs: Vec<String> = archive_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                format!(
                    "{id} is not installed on {host}, and there is no {file} to deploy in {} \
                     (build it with `harness package build`)",
                    dirs.join(", ")
                )
            })?;
        let pkg = blocking::unblock(move || Package::open(&found))
            .await
            .map_err(|e| e.to_string())?;
        if pkg.manifest.name != package || pkg.manifest.version.to_string() != version {
            return Err(format!(
                "{} holds package {}, not {id}",
                pkg.path.display(),
                pkg.id()
            ));
        }
        let targets = [DeployTarget {
            host: host.clone(),
            target: target.clone(),
        }];
        let mut results = super::deploy(
            exec,
            store,
            Some(&project.name),
            &pkg,
            &targets,
            options,
            &|_| {},
        )
        .await;
        results
            .pop()
            .unwrap_or_else(|| {
                Err(packages::Error::Install {
                    host: host.clone(),
                    step: "deploy".into(),
                    detail: "no result".into(),
                })
            })
            .map_err(|e| e.to_string())?;
        deployed = true;
    }
    let dir = format!("{root}/{id}");
    let manifest = read_manifest(exec, &target, &host, &dir).await?;
    Ok((
        manifest,
        PreparedService {
            service: name.to_owned(),
            host,
            package: id,
            dir,
            deployed,
        },
    ))
}

/// The manifest of the installed directory, as the host has it.
async fn read_manifest(
    exec: &Executor,
    target: &Target,
    host: &str,
    dir: &str,
) -> Result<Manifest, String> {
    let path = format!("{dir}/{}", packages::MANIFEST_FILE);
    let out = exec
        .output(target, &Command::new("cat").arg(&path))
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{host}: cannot read {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Manifest::from_bytes(Path::new(&path), &out.stdout).map_err(|e| format!("{host}: {path}: {e}"))
}

/// The package service as the remote process it is.
fn rewrite(s: &mut harness_config::Service, m: &Manifest, dir: &str) {
    s.kind = ServiceKind::Remote;
    s.command = Some(harness_config::Command::Shell(Template::literal(
        m.start.clone(),
    )));
    s.binary = None;
    s.args.clear();
    s.working_dir = Some(Template::literal(dir));
    let mut env: BTreeMap<String, Template> = m
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Template::literal(v.clone())))
        .collect();
    env.insert("HARNESS_PACKAGE_DIR".into(), Template::literal(dir));
    env.insert(
        "HARNESS_PACKAGE_VERSION".into(),
        Template::literal(m.version.to_string()),
    );
    // The service's own env wins over the manifest's.
    env.extend(std::mem::take(&mut s.env));
    s.env = env;
    if s.health_check.is_none()
        && let Some(h) = &m.health
    {
        s.health_check = Some(HealthCheck {
            probe: Probe::Command {
                command: Template::literal("sh"),
                args: vec![Template::literal("-c"), Template::literal(h.clone())],
            },
            interval: HealthCheck::DEFAULT_INTERVAL,
            timeout: HealthCheck::DEFAULT_TIMEOUT,
            retries: HealthCheck::DEFAULT_RETRIES,
            start_period: std::time::Duration::ZERO,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_service_becomes_a_remote_process_in_its_installed_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.yaml");
        std::fs::write(
            &path,
            "hosts:\n  h1: {address: 198.18.0.11}\nservices:\n  web:\n    type: package\n    \
             package: hello\n    host: h1\n    env: {GREETING: mine}\n",
        )
        .unwrap();
        let loaded = harness_config::load(&path);
        let mut project = loaded.project.unwrap();
        let m = Manifest::from_bytes(
            Path::new("manifest.yaml"),
            b"name: hello\nversion: 1.2.0\nstart: exec ./server --port $PORT\n\
              health: ./server --check\nenv: {GREETING: theirs, MODE: prod}\n",
        )
        .unwrap();
        let s = project.services.get_mut("web").unwrap();
        rewrite(s, &m, "/opt/hello-1.2.0");
        assert_eq!(s.kind, ServiceKind::Remote);
        assert_eq!(
            s.command,
            Some(harness_config::Command::Shell(Template::literal(
                "exec ./server --port $PORT"
            )))
        );
        assert_eq!(s.working_dir, Some(Template::literal("/opt/hello-1.2.0")));
        let env = |k: &str| s.env.get(k).and_then(Template::as_literal);
        assert_eq!(env("GREETING").as_deref(), Some("mine"), "the service wins");
        assert_eq!(env("MODE").as_deref(), Some("prod"));
        assert_eq!(env("HARNESS_PACKAGE_VERSION").as_deref(), Some("1.2.0"));
        assert!(s.health_check.is_some(), "the manifest's health is used");
        // The rewritten project survives the round trip the daemon makes (saved, loaded again).
        let yaml = serde_saphyr::to_string(&project).unwrap();
        let again = harness_config::load_str(&path, yaml, &|_: &str| -> Option<String> { None });
        assert!(again.errors.is_empty(), "{:?}", again.errors);
        let web = &again.project.unwrap().services["web"];
        assert_eq!(web.kind, ServiceKind::Remote);
        assert_eq!(web.command, project.services["web"].command);
    }
}
