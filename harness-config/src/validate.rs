//! Checks across the whole project: references, hosts, cycles, port clashes, kind rules.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::decode::{Positions, suggest};
use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::graph::find_cycles;
use crate::model::{Condition, Project, ServiceKind};
use crate::template::Property;

/// `broken` names the services whose declaration already had errors: checks that would only
/// repeat those (a misspelt `comand` also means "nothing to run") are skipped for them.
pub(crate) fn validate(
    project: &Project,
    positions: &Positions,
    file_of: &dyn Fn(u16) -> PathBuf,
    broken: &HashSet<String>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut push = |severity, code, path: &str, message: String, help: Option<String>| {
        let pos = positions.find(path);
        let file = file_of(pos.map_or(0, |p| p.file));
        let d = Diagnostic::new(severity, code, &file, pos, path, message);
        out.push(match help {
            Some(h) => d.with_help(h),
            None => d,
        });
    };
    let names = || project.services.keys().map(String::as_str);

    // Service references: the service exists and has the property.
    let mut bad_ref_targets = HashSet::new();
    for (field, r) in &positions.refs {
        let Some(target) = project.services.get(&r.service) else {
            bad_ref_targets.insert(r.service.clone());
            push(
                Severity::Error,
                Code::UnknownService,
                field,
                format!("`{r}` refers to unknown service `{}`", r.service),
                suggest(&r.service, names()).map(|s| format!("did you mean `{s}`?")),
            );
            continue;
        };
        match &r.property {
            Property::Port if target.ports.is_empty() => push(
                Severity::Error,
                Code::InvalidValue,
                field,
                format!("`{r}`: service `{}` declares no ports", r.service),
                Some(format!("add `ports:` to `{}`", r.service)),
            ),
            Property::NamedPort(port)
                if !target.ports.iter().any(|p| p.name.as_deref() == Some(port)) =>
            {
                let port_names = target.ports.iter().filter_map(|p| p.name.as_deref());
                push(
                    Severity::Error,
                    Code::InvalidValue,
                    field,
                    format!("`{r}`: service `{}` has no port named `{port}`", r.service),
                    suggest(port, port_names).map(|s| format!("did you mean `{s}`?")),
                )
            }
            _ => {}
        }
    }

    for (name, service) in &project.services {
        let sp = format!("services.{name}");

        // Dependencies exist (references were reported above).
        for (dep, condition) in &service.depends_on {
            // The field that made the dependency, looked up only to report a problem.
            let origin = || {
                positions
                    .dep_origin
                    .get(&(name.clone(), dep.clone()))
                    .cloned()
                    .unwrap_or_else(|| sp.clone())
            };
            let Some(target) = project.services.get(dep) else {
                if !bad_ref_targets.contains(dep) && !broken.contains(dep) {
                    push(
                        Severity::Error,
                        Code::UnknownService,
                        &origin(),
                        format!("`{name}` depends on unknown service `{dep}`"),
                        suggest(dep, names()).map(|s| format!("did you mean `{s}`?")),
                    );
                }
                continue;
            };
            if dep == name {
                continue; // reported as a cycle
            }
            // A package's health check may come from its manifest (checked when it is deployed).
            if *condition == Condition::Healthy
                && target.health_check.is_none()
                && target.kind != ServiceKind::Package
            {
                push(
                    Severity::Error,
                    Code::InvalidValue,
                    &origin(),
                    format!(
                        "`{name}` waits for `{dep}` to be healthy, but `{dep}` has no health_check"
                    ),
                    Some(format!(
                        "add a health_check to `{dep}` or use condition `started`"
                    )),
                );
            }
        }

        // Hosts exist; sudo is allowed where `user:` needs it.
        match &service.host {
            Some(host) => match project.hosts.get(host) {
                None => push(
                    Severity::Error,
                    Code::UnknownHost,
                    &format!("{sp}.host"),
                    format!("unknown host `{host}`"),
                    Some(
                        match suggest(host, project.hosts.keys().map(String::as_str)) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "declare it under `hosts:` (or use `local`)".to_owned(),
                        },
                    ),
                ),
                Some(h) if service.user.is_some() && !h.sudo => push(
                    Severity::Error,
                    Code::SudoDisabled,
                    &format!("{sp}.user"),
                    format!("`user:` needs sudo, but host `{host}` has `sudo: false`"),
                    Some(format!(
                        "remove `user:` or set `sudo: true` on host `{host}`"
                    )),
                ),
                Some(_) => {}
            },
            None if service.kind == ServiceKind::Remote => push(
                Severity::Error,
                Code::MissingField,
                &sp,
                format!("remote service `{name}` needs a `host`"),
                None,
            ),
            None => {}
        }
        if let Some(net) = &service.network
            && !project.networks.contains_key(net)
        {
            push(
                Severity::Error,
                Code::InvalidValue,
                &format!("{sp}.network"),
                format!("unknown network `{net}`"),
                suggest(net, project.networks.keys().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?")),
            );
        }

        // What each kind needs.
        if broken.contains(name) {
            continue;
        }
        let runs_command = service.binary.is_some() || service.command.is_some();
        if service.binary.is_some() && service.command.is_some() {
            push(
                Severity::Error,
                Code::InvalidValue,
                &format!("{sp}.command"),
                "give either `binary` (with `args`) or `command`, not both".to_owned(),
                None,
            );
        }
        match service.kind {
            ServiceKind::Docker if service.image.is_none() => push(
                Severity::Error,
                Code::MissingField,
                &sp,
                format!("docker service `{name}` has no `image`"),
                Some("add `image: NAME[:TAG]`".to_owned()),
            ),
            ServiceKind::Process | ServiceKind::Remote if !runs_command => push(
                Severity::Error,
                Code::MissingField,
                &sp,
                format!("service `{name}` has nothing to run"),
                Some("add `binary:` (with `args:`) or `command:`".to_owned()),
            ),
            ServiceKind::Package if service.package.is_none() => push(
                Severity::Error,
                Code::MissingField,
                &sp,
                format!("package service `{name}` has no `package`"),
                None,
            ),
            _ => {}
        }
    }

    // Two services publishing the same port on the same host.
    let mut bound: HashMap<(&str, u16), &str> = HashMap::new();
    for (name, service) in &project.services {
        let host = service.host.as_deref().unwrap_or("local");
        for (i, port) in service.host_ports().enumerate() {
            if let Some(first) = bound.insert((host, port), name)
                && first != name
            {
                push(
                    Severity::Error,
                    Code::PortConflict,
                    &format!("services.{name}.ports[{i}]"),
                    format!("port {port} on host `{host}` is already used by `{first}`"),
                    Some("publish one of them on another port".to_owned()),
                );
            }
        }
    }

    for cycle in find_cycles(project) {
        let path = match cycle.as_slice() {
            [a, b, ..] => positions
                .dep_origin
                .get(&(a.clone(), b.clone()))
                .cloned()
                .unwrap_or_else(|| format!("services.{a}")),
            _ => String::new(),
        };
        push(
            Severity::Error,
            Code::DependencyCycle,
            &path,
            format!("dependency cycle: {}", cycle.join(" → ")),
            Some("remove one of these dependencies".to_owned()),
        );
    }

    // Warnings: nothing would notice if this service stopped working.
    let depended: HashSet<&str> = project
        .services
        .values()
        .flat_map(|s| s.depends_on.keys().map(String::as_str))
        .collect();
    for (name, service) in &project.services {
        if !depended.contains(name.as_str())
            && service.health_check.is_none()
            && service.kind != ServiceKind::Package
        {
            push(
                Severity::Warning,
                Code::Unobserved,
                &format!("services.{name}"),
                format!("nothing depends on `{name}` and it has no health_check"),
                Some("add a health_check so that `harness health` can tell it works".to_owned()),
            );
        }
    }
    out
}
