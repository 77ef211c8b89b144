//! The development loop's fields: `proxy:`, `subdomain:`, `proxy_port:`, `watch:`, `logging:`.

use std::path::Path;
use std::time::Duration;

use harness_config::*;

const FILE: &str = "/nonexistent/project/services.yaml";

fn load(yaml: &str) -> Loaded {
    load_str(Path::new(FILE), yaml.to_owned(), &|_: &str| None)
}

fn valid(yaml: &str) -> Project {
    let loaded = load(yaml);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    loaded.project.expect("valid project")
}

const FULL: &str = r#"
proxy: {port: 7181, bind: 0.0.0.0}
services:
  api:
    command: ./api
    ports: [{name: http, port: 8080}, 9090]
    subdomain: API-v2
    proxy_port: http
    watch:
      paths: [src, Cargo.toml]
      ignore: ["*.tmp", "target/"]
      action: none
      debounce: 250ms
      gitignore: false
    logging: {max_size: 10m, max_files: 3}
  web:
    command: ./web
    ports: [3000]
    watch: true
"#;

#[test]
fn every_field_decodes() {
    let p = valid(FULL);
    assert_eq!(
        p.proxy,
        Some(Proxy {
            port: 7181,
            bind: "0.0.0.0".into()
        })
    );
    let api = &p.services["api"];
    assert_eq!(api.subdomain.as_deref(), Some("api-v2"));
    assert_eq!(api.proxy_port, Some(ProxyPort::Name("http".into())));
    let w = api.watch.as_ref().expect("watch");
    assert_eq!(w.paths, ["src", "Cargo.toml"]);
    assert_eq!(w.ignore, ["*.tmp", "target/"]);
    assert_eq!(w.action, WatchAction::None);
    assert_eq!(w.debounce, Duration::from_millis(250));
    assert!(!w.gitignore);
    assert_eq!(
        api.logging,
        Logging {
            max_size: Some(10 << 20),
            max_files: Some(3)
        }
    );
    assert_eq!(p.services["web"].watch, Some(Watch::default()));
    assert_eq!(p.services["web"].logging, Logging::default());
}

#[test]
fn short_forms() {
    let p = valid("proxy: true\nservices: {a: {command: x, watch: [src]}}\n");
    assert_eq!(p.proxy, Some(Proxy::default()));
    assert_eq!(
        p.services["a"].watch.as_ref().map(|w| w.paths.clone()),
        Some(vec!["src".into()])
    );
    let p = valid("proxy: 7999\nservices: {a: {command: x, proxy_port: 81}}\n");
    assert_eq!(p.proxy.map(|x| x.port), Some(7999));
    assert_eq!(p.services["a"].proxy_port, Some(ProxyPort::Number(81)));
}

#[test]
fn the_model_loads_back_unchanged() {
    let p = valid(FULL);
    let yaml = serde_saphyr::to_string(&p).expect("serialize");
    let again = load_str(
        Path::new("/nonexistent/services.yaml"),
        yaml.clone(),
        &|_: &str| None,
    );
    assert!(again.errors.is_empty(), "{yaml}\n{:#?}", again.errors);
    let mut again = again.project.expect("project");
    again.name = p.name.clone();
    assert_eq!(again, p, "{yaml}");
}

#[test]
fn bad_values_are_named_with_their_place() {
    let cases = [
        (
            "proxy: {port: 0}\nservices: {a: {command: x}}\n",
            "proxy.port",
        ),
        (
            "proxy: {bind: localhost}\nservices: {a: {command: x}}\n",
            "proxy.bind",
        ),
        (
            "services: {a: {command: x, subdomain: 'a b'}}\n",
            "services.a.subdomain",
        ),
        (
            "services: {a: {command: x, watch: {action: sync}}}\n",
            "services.a.watch.action",
        ),
        (
            "services: {a: {command: x, watch: {action: reload}}}\n",
            "services.a.watch.action",
        ),
        (
            "services: {a: {command: x, watch: {pahts: [x]}}}\n",
            "services.a.watch.pahts",
        ),
        (
            "services: {a: {command: x, logging: {max_size: 10q}}}\n",
            "services.a.logging.max_size",
        ),
        (
            "services: {a: {command: x, logging: {max_files: -1}}}\n",
            "services.a.logging.max_files",
        ),
    ];
    for (yaml, path) in cases {
        let loaded = load(yaml);
        assert!(loaded.project.is_none(), "{yaml}");
        assert_eq!(loaded.errors.len(), 1, "{yaml}: {:#?}", loaded.errors);
        assert_eq!(loaded.errors[0].path, path, "{yaml}");
        assert!(loaded.errors[0].line.is_some(), "{yaml}");
    }
    let sync = load("services: {a: {command: x, watch: {action: sync}}}\n");
    assert!(sync.errors[0].message.contains("`sync` is not supported"));
}
