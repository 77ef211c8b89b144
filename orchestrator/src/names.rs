//! Service names as the user gives them: a service, or the name of a service with `replicas:`,
//! which means its instances `NAME-1..NAME-N` (as Compose's `logs web` means every replica).

use crate::error::{Error, Result};

/// The instances of replicated service `name` among `all`, by index (`web-1`, `web-2`, ...);
/// empty when `name` has none.
pub(crate) fn instances<'a>(name: &str, all: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut found: Vec<(u32, String)> = all
        .into_iter()
        .filter_map(|s| {
            let index = s.strip_prefix(name)?.strip_prefix('-')?;
            let n: u32 = index.parse().ok()?;
            // `web-01` is not an instance name; `web-1` is.
            (n.to_string() == index).then(|| (n, s.clone()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, s)| s).collect()
}

/// `services` with each name that is not a service but has instances replaced by them, in
/// order and once each; a name that is neither is an unknown service of `project`.
pub(crate) fn expand<'a>(
    project: &str,
    all: impl IntoIterator<Item = &'a String> + Clone,
    services: &[String],
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(services.len());
    for s in services {
        let names = if all.clone().into_iter().any(|k| k == s) {
            vec![s.clone()]
        } else {
            instances(s, all.clone())
        };
        if names.is_empty() {
            return Err(Error::UnknownService {
                project: project.to_owned(),
                service: s.clone(),
            });
        }
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicated_name_means_its_instances_in_order() {
        let all: Vec<String> = [
            "api", "web-1", "web-10", "web-2", "web-x", "webby-1", "web-01",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(instances("web", &all), ["web-1", "web-2", "web-10"]);
        assert!(instances("api", &all).is_empty());
        let names = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            expand("p", &all, &names(&["web", "api", "web-2"])).unwrap(),
            ["web-1", "web-2", "web-10", "api"]
        );
        assert_eq!(expand("p", &all, &names(&["web-x"])).unwrap(), ["web-x"]);
        assert!(matches!(
            expand("p", &all, &names(&["nope"])),
            Err(Error::UnknownService { .. })
        ));
    }
}
