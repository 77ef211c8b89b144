//! Loading services.yaml: every diagnostic kind, the grammar through the loader, the model.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness_config::*;

const FILE: &str = "/nonexistent/project/services.yaml";

fn load_env(yaml: &str, vars: &[(&str, &str)]) -> Loaded {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    load_str(Path::new(FILE), yaml.to_owned(), &lookup)
}

fn load(yaml: &str) -> Loaded {
    load_env(yaml, &[])
}

fn valid(yaml: &str) -> Project {
    let loaded = load(yaml);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    loaded.project.expect("valid project")
}

fn codes(loaded: &Loaded) -> Vec<Code> {
    loaded.errors.iter().map(|d| d.code).collect()
}

fn only_error(yaml: &str, code: Code) -> Diagnostic {
    let loaded = load(yaml);
    assert_eq!(codes(&loaded), vec![code], "{:#?}", loaded.errors);
    assert!(loaded.project.is_none());
    loaded.errors[0].clone()
}

#[test]
fn unknown_key_suggests_and_points_at_line_and_column() {
    let d = only_error(
        "services:\n  api:\n    command: run\n    dependncies: [db]\n  db:\n    command: x\n",
        Code::UnknownKey,
    );
    assert_eq!((d.line, d.column), (Some(4), Some(5)));
    assert!(
        d.message.contains("did you mean `dependencies`"),
        "{}",
        d.message
    );
    assert_eq!(d.path, "services.api.dependncies");
    assert_eq!(d.file, PathBuf::from(FILE));
}

#[test]
fn unknown_key_without_a_near_match_lists_known_keys() {
    let d = only_error("services: {}\nzzzz: 1\n", Code::UnknownKey);
    assert!(d.help.unwrap().contains("services"));
}

#[test]
fn three_mistakes_give_three_diagnostics() {
    let loaded = load(
        "services:\n  api:\n    comand: run\n    restart: sometimes\n    health_check:\n      http: http://x\n      interval: soon\n",
    );
    assert_eq!(
        codes(&loaded),
        vec![Code::UnknownKey, Code::InvalidValue, Code::BadDuration],
        "{:#?}",
        loaded.errors
    );
    let lines: Vec<_> = loaded.errors.iter().map(|d| d.line.unwrap()).collect();
    assert_eq!(lines, vec![3, 4, 7]);
}

#[test]
fn wrong_types_name_what_was_expected() {
    let d = only_error(
        "services:\n  api:\n    command: x\n    args: 5\n",
        Code::WrongType,
    );
    assert!(
        d.message.contains("must be a list, found an integer"),
        "{}",
        d.message
    );
    let d = only_error(
        "services:\n  api:\n    command: x\n    env: 5\n",
        Code::WrongType,
    );
    assert_eq!(d.path, "services.api.env");
    only_error("services: [a, b]\n", Code::WrongType);
    only_error(
        "services:\n  api:\n    command: x\n    ports: [[1]]\n",
        Code::WrongType,
    );
}

#[test]
fn missing_fields() {
    let d = only_error("services:\n  db:\n    type: docker\n", Code::MissingField);
    assert!(d.message.contains("no `image`"));
    only_error("services:\n  api: {}\n", Code::MissingField);
    only_error("name: x\n", Code::MissingField);
    only_error("", Code::MissingField);
    only_error(
        "hosts:\n  h: {port: 22}\nservices: {}\n",
        Code::MissingField,
    );
    only_error(
        "services:\n  r:\n    type: remote\n    command: x\n",
        Code::MissingField,
    );
}

#[test]
fn invalid_values() {
    let d = only_error(
        "services:\n  a:\n    command: x\n    restart: {policy: alway}\n",
        Code::InvalidValue,
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `always`?"));
    let d = only_error(
        "services:\n  a:\n    command: x\n    stop: {signal: SIGBOGUS}\n",
        Code::InvalidValue,
    );
    assert!(d.message.contains("not a signal"));
    only_error(
        "services:\n  a:\n    command: x\n    ports: [\"abc\"]\n",
        Code::InvalidValue,
    );
    only_error(
        "services:\n  a:\n    command: x\n    ports: [70000]\n",
        Code::InvalidValue,
    );
    // Port 0 is any free port of this machine, chosen at load; not on an SSH host.
    let p = valid("services:\n  a:\n    command: x\n    ports: [0, \"0:80\"]\n");
    assert!(p.services["a"].ports.iter().all(|p| p.port > 0));
    assert!(p.services["a"].ports[1].published.is_some_and(|p| p > 0));
    only_error(
        "hosts: {h: {address: 10.0.0.1}}\nservices:\n  a:\n    command: x\n    host: h\n    ports: [0]\n",
        Code::InvalidValue,
    );
    only_error("services:\n  a.b:\n    command: x\n", Code::InvalidValue);
    only_error(
        "services:\n  a:\n    binary: x\n    command: y\n",
        Code::InvalidValue,
    );
    only_error(
        "services:\n  a:\n    command: x\n    health_check: {retries: 2}\n",
        Code::InvalidValue,
    );
    only_error(
        "services:\n  a:\n    command: x\n    health_check: {http: h, tcp: 80}\n",
        Code::InvalidValue,
    );
    only_error(
        "services:\n  a:\n    command: x\n    depends_on: {b: ready}\n  b: {command: y}\n",
        Code::InvalidValue,
    );
    only_error(
        "services:\n  a:\n    command: x\n    restart: {backoff: {initial: 5s, max: 1s}}\n",
        Code::InvalidValue,
    );
}

#[test]
fn bad_durations() {
    for bad in ["5 seconds", "-1", "\"\"", "[1]", "1.5"] {
        let yaml = format!("services:\n  a:\n    command: x\n    startup_timeout: {bad}\n");
        only_error(&yaml, Code::BadDuration);
    }
}

#[test]
fn durations_accept_strings_and_integer_seconds() {
    let p = valid(
        "services:\n  a:\n    command: x\n    startup_timeout: 1m30s\n    health_check: {tcp: 1, interval: 2, timeout: 500ms, start_period: \"1.5s\"}\n",
    );
    let a = &p.services["a"];
    assert_eq!(a.startup_timeout, Some(Duration::from_secs(90)));
    let hc = a.health_check.as_ref().unwrap();
    assert_eq!(hc.interval, Duration::from_secs(2));
    assert_eq!(hc.timeout, Duration::from_millis(500));
    assert_eq!(hc.start_period, Duration::from_millis(1500));
    assert_eq!(hc.retries, HealthCheck::DEFAULT_RETRIES);
}

#[test]
fn variable_default_with_dots_is_not_a_service_reference() {
    let p =
        valid("services:\n  a:\n    command: x\n    env: {DB: \"${DB_HOST:-db.example.com}\"}\n");
    assert_eq!(
        p.services["a"].env["DB"].as_literal().as_deref(),
        Some("db.example.com")
    );
    assert!(p.services["a"].depends_on.is_empty());
}

#[test]
fn dollar_dollar_stays_literal() {
    let p = valid("services:\n  a:\n    command: \"echo $${HOME}\"\n");
    let Some(Command::Shell(t)) = &p.services["a"].command else {
        panic!("shell command")
    };
    assert_eq!(t.as_literal().as_deref(), Some("echo ${HOME}"));
}

#[test]
fn required_variable_message() {
    let d = only_error(
        "services:\n  a:\n    command: \"${X:?set X}\"\n",
        Code::Substitution,
    );
    assert!(d.message.contains("set X"), "{}", d.message);
    // Points at the `${`, inside the quotes.
    assert_eq!((d.line, d.column), (Some(3), Some(15)));
    assert_eq!(d.span.map(|s| s.1), Some("${X:?set X}".len()));
    let d = only_error(
        "services:\n  a:\n    command: echo ${ONE:-1} and ${TWO:?}\n",
        Code::Substitution,
    );
    assert_eq!((d.line, d.column), (Some(3), Some(33)));
}

#[test]
fn all_unset_variables_are_listed() {
    let loaded =
        load("services:\n  a:\n    command: \"${A} ${B}\"\n    image: ${C}\n    type: process\n");
    let msgs: Vec<&str> = loaded.errors.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    for v in ["`A`", "`B`", "`C`"] {
        assert!(msgs.iter().any(|m| m.contains(v)), "{v} in {msgs:?}");
    }
}

#[test]
fn variables_come_from_process_then_dotenv_then_env_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "A=dotenv\nB=dotenv\n# c\nexport Q=\"quoted\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("vars.env"), "A=file\nB=file\nC=file\n").unwrap();
    std::fs::write(dir.path().join("svc.env"), "S=from-file\nT=from-file\n").unwrap();
    let yaml = "env_file: vars.env\nservices:\n  a:\n    command: \"${A} ${B} ${C} ${Q}\"\n    env_file: svc.env\n    env: {T: own}\n";
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, yaml).unwrap();
    let loaded = load_with_env(&path, &|n: &str| (n == "A").then(|| "process".to_owned()));
    let p = loaded
        .project
        .unwrap_or_else(|| panic!("{:#?}", loaded.errors));
    let a = &p.services["a"];
    let Some(Command::Shell(t)) = &a.command else {
        panic!()
    };
    assert_eq!(t.as_literal().unwrap(), "process dotenv file quoted");
    assert_eq!(a.env["S"].as_literal().unwrap(), "from-file");
    assert_eq!(a.env["T"].as_literal().unwrap(), "own");
    assert_eq!(p.name, dir.path().file_name().unwrap().to_string_lossy());
}

#[test]
fn missing_env_file_is_an_io_error_at_the_field() {
    let d = only_error(
        "services:\n  a:\n    command: x\n    env_file: nope.env\n",
        Code::Io,
    );
    assert_eq!(d.line, Some(4));
}

#[test]
fn reference_to_unknown_service_names_it() {
    let d = only_error(
        "services:\n  a:\n    command: \"ping ${ghost.ip}\"\n",
        Code::UnknownService,
    );
    assert!(
        d.message.contains("unknown service `ghost`"),
        "{}",
        d.message
    );
    assert_eq!(d.line, Some(3));
}

#[test]
fn reference_properties_are_checked() {
    let base = "services:\n  db:\n    command: x\n    ports: [{name: pg, port: 5432}]\n  nop:\n    command: x\n  a:\n    command: \"c\"\n    env: {X: \"";
    only_error(
        &format!("{base}${{db.ports.pgg}}\"}}\n"),
        Code::InvalidValue,
    );
    only_error(&format!("{base}${{nop.port}}\"}}\n"), Code::InvalidValue);
    only_error(&format!("{base}${{db.address}}\"}}\n"), Code::Substitution);
    let p = valid(&format!(
        "{base}${{db.ports.pg}} ${{db.port}} ${{nop.host}} ${{nop.ip}}\"}}\n"
    ));
    assert_eq!(p.services["a"].depends_on.len(), 2);
}

#[test]
fn references_are_not_allowed_in_load_time_fields() {
    only_error(
        "services:\n  a:\n    command: x\n  b:\n    image: \"${a.host}/img\"\n",
        Code::Substitution,
    );
}

#[test]
fn unknown_dependency_suggests_a_name() {
    let d = only_error(
        "services:\n  api:\n    command: x\n    dependencies: [databse]\n  database:\n    command: y\n",
        Code::UnknownService,
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `database`?"));
    assert_eq!((d.line, d.column), (Some(4), Some(20)));
}

#[test]
fn unknown_host() {
    let d = only_error(
        "hosts:\n  lab1: {address: 10.0.0.1}\nservices:\n  a:\n    host: lab2\n    command: x\n",
        Code::UnknownHost,
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `lab1`?"));
}

#[test]
fn three_service_cycle_prints_the_whole_path() {
    let d = only_error(
        "services:\n  a: {command: x, dependencies: [b]}\n  b: {command: x, dependencies: [c]}\n  c: {command: x, dependencies: [a]}\n",
        Code::DependencyCycle,
    );
    assert!(d.message.contains("a → b → c → a"), "{}", d.message);
    let d = only_error(
        "services:\n  a: {command: x, dependencies: [a]}\n",
        Code::DependencyCycle,
    );
    assert!(d.message.contains("a → a"), "{}", d.message);
}

#[test]
fn port_conflicts_on_the_same_host() {
    let d = only_error(
        "services:\n  a: {command: x, ports: [8080]}\n  b: {image: nginx, ports: [\"8080:80\"]}\n",
        Code::PortConflict,
    );
    assert!(d.message.contains("8080"));
    // Unpublished container ports and other hosts do not clash.
    valid(
        "hosts:\n  h: {address: h}\nservices:\n  a: {command: x, ports: [80], health_check: {tcp: 80}}\n  b: {image: nginx, ports: [80], health_check: {tcp: 80}}\n  c: {command: x, host: h, ports: [80], health_check: {tcp: 80}}\n",
    );
}

#[test]
fn user_needs_sudo_on_its_host() {
    only_error(
        "hosts:\n  h: {address: h, sudo: false}\nservices:\n  a: {command: x, host: h, user: app}\n",
        Code::SudoDisabled,
    );
}

#[test]
fn healthy_dependency_needs_a_health_check() {
    only_error(
        "services:\n  a: {command: x, depends_on: {b: healthy}}\n  b: {command: y}\n",
        Code::InvalidValue,
    );
}

#[test]
fn warnings_are_separate_from_errors() {
    let loaded = load("services:\n  lonely:\n    command: x\n");
    assert!(loaded.errors.is_empty());
    assert!(loaded.is_valid());
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].code, Code::Unobserved);
    assert_eq!(loaded.warnings[0].severity, Severity::Warning);
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let d = only_error("services:\n  a: [unclosed\n", Code::Syntax);
    assert!(d.line.is_some());
    let d = only_error(
        "services:\n  a: {command: x}\n  a: {command: y}\n",
        Code::Syntax,
    );
    assert!(
        d.message.to_lowercase().contains("duplicate"),
        "{}",
        d.message
    );
}

#[test]
fn alias_bomb_is_refused_quickly() {
    let mut yaml = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 1..12 {
        let prev = (b'a' + i - 1) as char;
        let cur = (b'a' + i) as char;
        yaml.push_str(&format!(
            "{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    yaml.push_str("services: {}\n");
    let start = Instant::now();
    let d = only_error(&yaml, Code::Syntax);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        d.message.contains("alias") || d.message.contains("budget"),
        "{}",
        d.message
    );
}

#[test]
fn deep_nesting_is_refused() {
    let yaml = format!(
        "services: {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    only_error(&yaml, Code::Syntax);
    let mut block = String::from("services:\n");
    for i in 0..200 {
        block.push_str(&" ".repeat(2 * (i + 1)));
        block.push_str("k:\n");
    }
    only_error(&block, Code::Syntax);
}

#[test]
fn huge_files_are_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(50 << 20).unwrap();
    let loaded = harness_config::load(&path);
    assert_eq!(codes(&loaded), vec![Code::TooLarge]);
    assert!(
        loaded.errors[0].message.contains("50.0 MiB"),
        "{}",
        loaded.errors[0].message
    );
    let loaded = load(&"#".repeat((MAX_FILE_BYTES + 1) as usize));
    assert_eq!(codes(&loaded), vec![Code::TooLarge]);
}

#[test]
fn missing_file() {
    let loaded = harness_config::load(Path::new("/nonexistent/services.yaml"));
    assert_eq!(codes(&loaded), vec![Code::Io]);
}

#[test]
fn dependencies_normalize_to_depends_on() {
    let p = valid(
        "services:\n  m: {command: x}\n  db: {command: x, health_check: {tcp: 5432}}\n  a:\n    command: \"${cache.ip}\"\n    dependencies: [m]\n    depends_on:\n      db: {condition: service_healthy}\n      m: completed_successfully\n  cache: {command: x}\n  b: {command: x, depends_on: [a]}\n",
    );
    let a = &p.services["a"];
    assert_eq!(a.depends_on["m"], Condition::CompletedSuccessfully);
    assert_eq!(a.depends_on["db"], Condition::Healthy);
    assert_eq!(a.depends_on["cache"], Condition::Started);
    assert_eq!(p.services["b"].depends_on["a"], Condition::Started);
    let waves = p.start_waves().unwrap();
    assert_eq!(waves, vec![vec!["cache", "db", "m"], vec!["a"], vec!["b"]]);
    let stop = p.stop_waves().unwrap();
    assert_eq!(stop[0], vec!["b"]);
    assert_eq!(stop[2], vec!["cache", "db", "m"]);
}

#[test]
fn kinds_are_inferred() {
    let p = valid(
        "hosts:\n  h: {address: h.example, user: me, port: 2222, jump: bastion, known_hosts: accept-new, docker_host: unix:///run/docker.sock}\nservices:\n  p: {command: x}\n  d: {image: nginx}\n  r: {host: h, binary: /bin/x}\n  k: {package: app, version: \"1.2\", host: h}\n  l: {host: local, command: x}\n",
    );
    let kind = |n: &str| p.services[n].kind;
    assert_eq!(kind("p"), ServiceKind::Process);
    assert_eq!(kind("d"), ServiceKind::Docker);
    assert_eq!(kind("r"), ServiceKind::Remote);
    assert_eq!(kind("k"), ServiceKind::Package);
    assert_eq!(kind("l"), ServiceKind::Process);
    assert_eq!(p.services["l"].host, None);
    let h = &p.hosts["h"];
    assert_eq!(
        (h.port, h.known_hosts, h.sudo),
        (2222, KnownHosts::AcceptNew, true)
    );
}

#[test]
fn ports_in_every_form() {
    let p = valid(
        "services:\n  d:\n    image: x\n    ports: [80, \"8080:81\", \"${P:-9000}\", {name: admin, port: 9001, published: 19001}]\n",
    );
    let ports = &p.services["d"].ports;
    assert_eq!(
        ports[0],
        Port {
            name: None,
            port: 80,
            published: None
        }
    );
    assert_eq!(
        ports[1],
        Port {
            name: None,
            port: 81,
            published: Some(8080)
        }
    );
    assert_eq!(ports[2].port, 9000);
    assert_eq!(
        ports[3],
        Port {
            name: Some("admin".into()),
            port: 9001,
            published: Some(19001)
        }
    );
}

#[test]
fn restart_and_stop() {
    let p = valid(
        "services:\n  a:\n    command: x\n    restart: {policy: on-failure, max_restarts: 4, backoff: {initial: 200ms, max: 2s}}\n    stop: {signal: int, timeout: 3}\n  b: {command: x, restart: unless-stopped}\n",
    );
    let a = &p.services["a"];
    assert_eq!(a.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(a.restart.max_restarts, Some(4));
    assert_eq!(a.restart.backoff.initial, Duration::from_millis(200));
    assert_eq!(a.stop.signal, "SIGINT");
    assert_eq!(a.stop.timeout, Duration::from_secs(3));
    assert_eq!(p.services["b"].restart.policy, RestartPolicy::UnlessStopped);
    // YAML 1.2: `no` is the string "no", not false.
    let p = valid("services:\n  a: {command: x, restart: {policy: no}}\n");
    assert_eq!(p.services["a"].restart.policy, RestartPolicy::No);
}

#[test]
fn templates_render_with_the_orchestrators_resolver() {
    let p = valid(
        "services:\n  db: {command: x, ports: [5432]}\n  a:\n    binary: app\n    args: [\"--db=${db.ip}:${db.port}\"]\n",
    );
    let arg = &p.services["a"].args[0];
    let out: Result<String, String> = arg.render(|r| match r.property {
        Property::Ip => Ok("127.0.0.1".into()),
        Property::Port => Ok("5432".into()),
        _ => Err(format!("unexpected {r}")),
    });
    assert_eq!(out.unwrap(), "--db=127.0.0.1:5432");
}

#[test]
fn config_error_renders_with_miette() {
    let loaded = load("services:\n  a:\n    comand: x\n");
    let err = loaded.into_result().unwrap_err();
    assert_eq!(err.errors.len(), 1);
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut out, &err.errors[0])
        .unwrap();
    assert!(out.contains("comand"), "{out}");
    assert!(out.contains("3:5"), "{out}");
}

#[test]
fn diagnostics_serialize_to_the_documented_json() {
    let loaded = load("services:\n  a:\n    comand: x\n");
    let json = serde_json::to_value(&loaded.errors[0]).unwrap();
    for key in [
        "severity", "code", "message", "file", "line", "column", "path", "help",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    assert_eq!(json["severity"], "error");
    assert_eq!(json["line"], 3);
}

#[test]
fn every_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let loaded = harness_config::load(&path);
            assert!(
                loaded.is_valid(),
                "{}: {:#?}",
                path.display(),
                loaded.errors
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "examples found: {seen}");
}

#[test]
fn adr007_file_loads_unchanged() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/adr007-compat.yaml");
    let p = harness_config::load(&path).into_result().unwrap();
    assert_eq!(p.version.as_deref(), Some("1.0"));
    assert_eq!(p.networks["lab"].kind, NetworkKind::Lan);
    assert_eq!(p.hosts["node1"].address, "192.168.50.10");
    assert_eq!(p.hosts["node1"].user.as_deref(), Some("tester"));
    assert_eq!(p.services["probe"].kind, ServiceKind::Remote);
    assert_eq!(p.services["probe"].host.as_deref(), Some("node1"));
    assert_eq!(p.services["collector"].host.as_deref(), Some("node2"));
    let db = &p.services["database"];
    let hc = db.health_check.as_ref().unwrap();
    assert_eq!(hc.timeout, Duration::from_secs(3));
    assert_eq!(hc.interval, Duration::from_secs(5));
    assert_eq!(hc.retries, 10);
    assert!(matches!(hc.probe, Probe::Tcp { .. }));
    assert_eq!(
        p.services["backend"].depends_on["database"],
        Condition::Started
    );
}
