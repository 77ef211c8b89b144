//! Compose conveniences through the loader: extension keys and anchors, override files,
//! profiles, replicas, `-p`, Compose-key hints, and the ADR-007 model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness_config::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_many(files: &[(&str, &str)], options: &LoadOptions) -> Loaded {
    let texts = files
        .iter()
        .map(|(p, t)| {
            (
                PathBuf::from(format!("/nonexistent/stack/{p}")),
                (*t).to_owned(),
            )
        })
        .collect();
    load_texts(texts, options, &no_env)
}

fn valid_many(files: &[(&str, &str)], options: &LoadOptions) -> Project {
    let loaded = load_many(files, options);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    loaded.project.expect("valid")
}

fn valid(yaml: &str) -> Project {
    valid_many(&[("services.yaml", yaml)], &LoadOptions::default())
}

const ANCHORS: &str = r#"
x-common: &common
  restart: {policy: on-failure, max_restarts: 2}
  stop: {signal: SIGINT, timeout: 3s}
  env: &env
    LOG: debug
services:
  api:
    <<: *common
    command: run api
    x-note: ignored
    env:
      <<: *env
      PORT: "8080"
  worker:
    <<: *common
    command: run worker
    stop: {signal: SIGTERM}
"#;

#[test]
fn extension_keys_anchors_and_merge_keys() {
    let p = valid(ANCHORS);
    let api = &p.services["api"];
    assert_eq!(api.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(api.stop.signal, "SIGINT");
    assert_eq!(api.env["LOG"].as_literal().unwrap(), "debug");
    assert_eq!(api.env["PORT"].as_literal().unwrap(), "8080");
    // An explicit key beats the merged one.
    assert_eq!(p.services["worker"].stop.signal, "SIGTERM");
    assert_eq!(p.services["worker"].restart.max_restarts, Some(2));
}

const BASE: &str = "name: stack
services:
  web:
    command: [server, --port, \"8080\"]
    ports: [\"8080:80\"]
    volumes: [a:/a]
    env: {A: base, B: base}
    health_check: {http: http://localhost/, interval: 2s}
  db:
    image: postgres
";
const OVERRIDE: &str = "services:
  web:
    command: [server, --port, \"9090\"]
    ports: [\"9090:90\"]
    volumes: [b:/b]
    env: {B: override, C: override}
    health_check: {interval: 7s}
  extra:
    command: sleep 1
";

#[test]
fn override_files_merge_as_compose_does() {
    let p = valid_many(
        &[("base.yaml", BASE), ("override.yaml", OVERRIDE)],
        &LoadOptions::default(),
    );
    let web = &p.services["web"];
    // command replaced
    assert_eq!(
        web.command
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap()),
        Some(r#"["server","--port","9090"]"#.to_owned())
    );
    // ports and volumes appended
    let ports: Vec<(u16, Option<u16>)> = web.ports.iter().map(|p| (p.port, p.published)).collect();
    assert_eq!(ports, [(80, Some(8080)), (90, Some(9090))]);
    assert_eq!(web.volumes, ["a:/a", "b:/b"]);
    // maps deep-merged, scalars replaced
    assert_eq!(web.env["A"].as_literal().unwrap(), "base");
    assert_eq!(web.env["B"].as_literal().unwrap(), "override");
    assert_eq!(web.env["C"].as_literal().unwrap(), "override");
    let hc = web.health_check.as_ref().unwrap();
    assert_eq!(hc.interval, Duration::from_secs(7));
    assert!(matches!(hc.probe, Probe::Http { .. }));
    assert!(p.services.contains_key("extra"));
    assert!(p.services.contains_key("db"));
}

#[test]
fn diagnostics_and_origins_name_the_file_that_set_the_value() {
    let loaded = load_many(
        &[
            ("base.yaml", BASE),
            ("override.yaml", "services:\n  web:\n    restart: alwayz\n"),
        ],
        &LoadOptions::default(),
    );
    assert_eq!(loaded.errors.len(), 1, "{:#?}", loaded.errors);
    let d = &loaded.errors[0];
    assert!(d.file.ends_with("override.yaml"), "{d}");
    assert_eq!((d.line, d.column), (Some(3), Some(14)));

    let loaded = load_many(
        &[("base.yaml", BASE), ("override.yaml", OVERRIDE)],
        &LoadOptions::default(),
    );
    let (file, line, _, _) = loaded.origin("services.web.ports[1]").unwrap();
    assert!(file.ends_with("override.yaml"));
    assert_eq!(line, 4);
    let (file, line, _, _) = loaded.origin("services.web.ports[0]").unwrap();
    assert!(file.ends_with("base.yaml"));
    assert_eq!(line, 5);
    let (file, _, _, _) = loaded.origin("services.db.image").unwrap();
    assert!(file.ends_with("base.yaml"));
    let (file, line, _, _) = loaded.origin("services.web.env.B").unwrap();
    assert!(file.ends_with("override.yaml"));
    assert_eq!(line, 6);
}

const PROFILES: &str = "services:
  app: {command: run}
  debugger:
    command: dbg
    profiles: [debug]
  tools:
    command: t
    profiles: [debug, tools]
";

#[test]
fn profiles_select_services() {
    let names = |profiles: &[&str]| -> Vec<String> {
        let options = LoadOptions {
            profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
            ..LoadOptions::default()
        };
        valid_many(&[("s.yaml", PROFILES)], &options)
            .services
            .into_keys()
            .collect()
    };
    assert_eq!(names(&[]), ["app"]);
    assert_eq!(names(&["debug"]), ["app", "debugger", "tools"]);
    assert_eq!(names(&["tools"]), ["app", "tools"]);
    assert_eq!(names(&["*"]), ["app", "debugger", "tools"]);
}

const REPLICAS: &str = "services:
  web:
    command: serve --port ${web.port}
    replicas: 3
    ports: [\"18080-18089\"]
  client:
    command: call ${web.endpoints} first=${web.ip}:${web.port}
    depends_on: [web]
";

#[test]
fn replicas_expand_with_their_own_ports_and_endpoints() {
    let p = valid(REPLICAS);
    let names: Vec<&str> = p.services.keys().map(String::as_str).collect();
    assert_eq!(names, ["client", "web-1", "web-2", "web-3"]);
    for i in 1..=3u16 {
        let s = &p.services[&format!("web-{i}")];
        assert_eq!(s.ports[0].port, 18079 + i);
        // Inside an instance, its own name means itself.
        let cmd = serde_json::to_string(s.command.as_ref().unwrap()).unwrap();
        assert!(cmd.contains(&format!("${{web-{i}.port}}")), "{cmd}");
    }
    let client = &p.services["client"];
    let cmd = serde_json::to_string(client.command.as_ref().unwrap()).unwrap();
    assert!(
        cmd.contains("${web-1.ip}:${web-1.port},${web-2.ip}:${web-2.port},${web-3.ip}:${web-3.port} first=${web-1.ip}:${web-1.port}"),
        "{cmd}"
    );
    let deps: Vec<&str> = client.depends_on.keys().map(String::as_str).collect();
    assert_eq!(deps, ["web-1", "web-2", "web-3"]);

    // `harness scale web=1` overrides the file; a range too short is an error at the port.
    let options = LoadOptions {
        replicas: BTreeMap::from([("web".to_owned(), 1)]),
        ..LoadOptions::default()
    };
    let p = valid_many(&[("s.yaml", REPLICAS)], &options);
    assert!(p.services.contains_key("web-1") && !p.services.contains_key("web-2"));
    let loaded = load_many(
        &[("s.yaml", &REPLICAS.replace("18080-18089", "18080-18081"))],
        &LoadOptions::default(),
    );
    assert!(
        loaded
            .errors
            .iter()
            .any(|d| d.message.contains("no port for instance 3") && d.line == Some(5)),
        "{:#?}",
        loaded.errors
    );
}

/// `harness scale web=5` with a range of 3 ports (published and container side): one error, at
/// the range, naming the field; none of the follow-on errors of the instances beyond it (before:
/// `18080-18082:80` is not a port, `web-4` declares no ports, for each of them and in `client`).
#[test]
fn a_port_range_too_short_for_the_count_is_one_error() {
    let options = LoadOptions {
        replicas: BTreeMap::from([("web".to_owned(), 5)]),
        ..LoadOptions::default()
    };
    for range in ["18080-18082:80", "18080-18082"] {
        let yaml = REPLICAS.replace("18080-18089", range);
        let loaded = load_many(&[("s.yaml", &yaml)], &options);
        assert!(loaded.project.is_none());
        let messages: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        assert_eq!(loaded.errors.len(), 1, "{messages:#?}");
        let e = &loaded.errors[0];
        assert_eq!(e.path, "services.web.ports", "{messages:#?}");
        assert_eq!(e.line, Some(5));
        assert!(
            e.message
                .contains("the port range 18080-18082 has no port for instance 4")
                && e.message.contains("5 instances of `web`"),
            "{}",
            e.message
        );
    }
}

#[test]
fn project_name_option_wins() {
    let options = LoadOptions {
        project_name: Some("two".into()),
        ..LoadOptions::default()
    };
    assert_eq!(valid_many(&[("s.yaml", BASE)], &options).name, "two");
}

#[test]
fn compose_keys_say_what_to_use_instead() {
    let loaded = load_many(
        &[(
            "s.yaml",
            "volumes: {data: {}}\nservices:\n  a:\n    image: x\n    environment: {A: 1}\n    build: .\n    healthcheck: {test: [CMD, true]}\n",
        )],
        &LoadOptions::default(),
    );
    let messages: Vec<String> = loaded
        .errors
        .iter()
        .map(|d| format!("{} | {}", d.message, d.help.clone().unwrap_or_default()))
        .collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages[0].contains("Compose's `volumes`") && messages[0].contains("first use"));
    assert!(messages[1].contains("Compose's `environment`") && messages[1].contains("`env:`"));
    assert!(messages[2].contains("Compose's `build`") && messages[2].contains("docker build"));
    assert!(
        messages[3].contains("Compose's `healthcheck`") && messages[3].contains("health_check")
    );
}

/// Every ADR-007 field at once.
pub const ADR007_ALL: &str = "version: \"1.0\"
settings:
  log_level: debug
  health_check_interval: 4s
  startup_timeout: 90s
  shutdown_timeout: 20s
networks:
  dev:
    type: local
    subnet: 172.30.0.0/16
  lab:
    type: lan
    subnet: 192.168.50.0/24
    nodes:
      - {host: 192.168.50.10, name: node1, ssh_user: tester, ssh_key: ~/.ssh/id_ed25519, package_deploy: true}
  mesh:
    type: wireguard
    subnet: 10.99.0.0/24
    config_path: /etc/wireguard/wg0.conf
    nodes:
      - {host: 10.99.0.2, name: peer1, ssh_user: tester, package_deploy: false}
services:
  db:
    type: docker
    network: dev
    image: postgres:16
    entrypoint: [docker-entrypoint.sh]
    command: [postgres, -c, max_connections=50]
    shutdown_timeout: 30s
    health_check: {tcp: {port: 5432}}
    ports: [\"5432:5432\"]
  collector:
    type: package
    network: lab
    host: 192.168.50.10
    package: collector
    version: \"2.3.1\"
    install_path: /opt/collector
    dependencies: [db]
    health_check: {command: /opt/collector/bin/check}
";

#[test]
fn every_adr007_field_loads_and_maps_onto_defaults() {
    let p = valid(ADR007_ALL);
    assert_eq!(p.settings.log_level.as_deref(), Some("debug"));
    let db = &p.services["db"];
    assert_eq!(db.stop.timeout, Duration::from_secs(30));
    assert_eq!(db.startup_timeout, Some(Duration::from_secs(90)));
    assert_eq!(db.entrypoint.len(), 1);
    assert_eq!(
        db.health_check.as_ref().unwrap().interval,
        Duration::from_secs(4)
    );
    let collector = &p.services["collector"];
    assert_eq!(collector.stop.timeout, Duration::from_secs(20));
    assert_eq!(collector.install_path.as_deref(), Some("/opt/collector"));
    assert_eq!(collector.host.as_deref(), Some("node1"));
    assert_eq!(p.networks["mesh"].kind, NetworkKind::Wireguard);
    assert_eq!(p.networks["lab"].nodes[0].package_deploy, Some(true));
    assert_eq!(p.networks["dev"].subnet.as_deref(), Some("172.30.0.0/16"));
    // It renders, and what renders loads back unchanged.
    let yaml = serde_saphyr::to_string(&p).unwrap();
    let again = load_str(Path::new("/nonexistent/stack/services.yaml"), yaml, &no_env);
    assert!(again.errors.is_empty(), "{:#?}", again.errors);
    assert_eq!(again.project.as_ref(), Some(&p));
}

#[test]
fn adr007_values_are_checked() {
    let bad = ADR007_ALL
        .replace("172.30.0.0/16", "172.30.0.0/33")
        .replace("    config_path: /etc/wireguard/wg0.conf\n", "")
        .replace(
            "shutdown_timeout: 30s",
            "shutdown_timeout: 30s\n    stop: {timeout: 2s}",
        );
    let loaded = load_many(&[("s.yaml", &bad)], &LoadOptions::default());
    let messages: Vec<&str> = loaded.errors.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("not a subnet")));
    assert!(messages.iter().any(|m| m.contains("same setting")));
}

/// A mesh's subnet must hold its members and not overlap another network; each error is
/// placed at the subnet's line and column.
#[test]
fn mesh_subnets_are_checked_at_their_position() {
    let yaml = "networks:
  lab:
    type: lan
    subnet: 10.50.0.0/16
  mesh:
    type: wireguard
    subnet: 10.50.3.0/24
    listen_port: 51900
    mtu: 1400
    nodes: [{host: local}, {host: 10.0.0.2, name: a}]
  tiny:
    type: wireguard
    subnet: 10.60.0.0/31
    nodes: [{host: local}, {host: 10.0.0.2, name: b}]
  small:
    type: wireguard
    subnet: 10.70.0.0/30
    nodes: [{host: local}, {host: 10.0.0.2, name: c}, {host: 10.0.0.3, name: d}]
services:
  a: {command: 'true'}
";
    let loaded = load_many(&[("s.yaml", yaml)], &LoadOptions::default());
    let shown: Vec<String> = loaded
        .errors
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{} {}",
                d.file.display(),
                d.line.unwrap_or(0),
                d.column.unwrap_or(0),
                d.message
            )
        })
        .collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown.iter().any(|m| m.contains("s.yaml:7:13 ")
            && m.contains(
                "network `mesh`: subnet 10.50.3.0/24 overlaps subnet 10.50.0.0/16 of network `lab`"
            )),
        "{shown:#?}"
    );
    assert!(
        shown.iter().any(|m| m.contains("s.yaml:13:13 ")
            && m.contains("subnet 10.60.0.0/31 holds 0 member addresses")
            && m.contains("2 nodes")),
        "{shown:#?}"
    );
    assert!(
        shown.iter().any(|m| m.contains("s.yaml:17:13 ")
            && m.contains("subnet 10.70.0.0/30 holds 2 member addresses")
            && m.contains("3 nodes")),
        "{shown:#?}"
    );
    // Without the bad ones it loads, `local` is no hosts entry, config_path is optional.
    let good = yaml
        .split("  tiny:")
        .next()
        .unwrap()
        .replace("10.50.0.0/16", "10.51.0.0/16")
        + "services:\n  a: {command: 'true'}\n";
    let p = valid(&good);
    let mesh = &p.networks["mesh"];
    assert_eq!((mesh.listen_port, mesh.mtu), (Some(51900), Some(1400)));
    assert!(!p.hosts.contains_key("local"));
    assert!(p.hosts.contains_key("a"));
}

/// Compose's everyday pattern, one anchor merged into many services, is not an alias bomb.
#[test]
fn one_anchor_merged_into_many_services_loads() {
    let mut yaml = String::from("x-defaults: &defaults\n  restart: always\nservices:\n");
    for i in 0..1_500 {
        yaml.push_str(&format!(
            "  s{i}:\n    <<: *defaults\n    command: run {i}\n"
        ));
    }
    let p = valid(&yaml);
    assert_eq!(p.services.len(), 1_500);
    assert!(
        p.services
            .values()
            .all(|s| s.restart.policy == RestartPolicy::Always)
    );
}

#[test]
fn compose_restart_on_failure_with_a_count() {
    // Compose's `restart: on-failure[:max-retries]`; before, `on-failure:3` was an error.
    let p = valid(
        "services:\n  a: {command: run, restart: \"on-failure:3\"}\n  b: {command: run, restart: on-failure}\n",
    );
    assert_eq!(p.services["a"].restart.policy, RestartPolicy::OnFailure);
    assert_eq!(p.services["a"].restart.max_restarts, Some(3));
    assert_eq!(p.services["b"].restart.max_restarts, None);
    let loaded = load_many(
        &[(
            "services.yaml",
            "services:\n  a: {command: run, restart: \"on-failure:x\"}\n",
        )],
        &LoadOptions::default(),
    );
    assert_eq!(loaded.errors.len(), 1, "{:#?}", loaded.errors);
}
