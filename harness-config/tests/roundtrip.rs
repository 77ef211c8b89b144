//! Property: a valid model serialized to YAML (what `config show` prints) loads back unchanged,
//! and no input makes the loader panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness_config::*;
use proptest::prelude::*;

/// Text with the characters that need care: `$`, `:`, `#`, quotes, spaces, YAML-looking words.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 $:/._#'\"-]{0,12}",
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("1e5".to_owned()),
        Just("0755".to_owned()),
        Just("- x".to_owned()),
        Just(" lead".to_owned()),
    ]
}

fn name_text() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,6}"
}

fn duration() -> impl Strategy<Value = Duration> {
    (0u64..100_000).prop_map(Duration::from_millis)
}

/// A template: literal text, possibly around a reference to one of `deps`.
fn template(deps: Vec<String>) -> BoxedStrategy<Template> {
    if deps.is_empty() {
        return text().prop_map(Template::literal).boxed();
    }
    (text(), proptest::sample::select(deps), 0..3usize, text())
        .prop_map(|(a, dep, prop, b)| {
            let prop = ["ip", "host", "ports.p0"][prop];
            let source = format!(
                "{}${{{dep}.{prop}}}{}",
                escape_dollars(&a),
                escape_dollars(&b)
            );
            substitute(&source, &|_: &str| None).unwrap_or_default()
        })
        .boxed()
}

fn health_check(deps: Vec<String>) -> impl Strategy<Value = HealthCheck> {
    let probe = prop_oneof![
        (
            template(deps.clone()),
            proptest::collection::vec(template(deps.clone()), 0..3)
        )
            .prop_map(|(command, args)| Probe::Command { command, args }),
        template(deps.clone()).prop_map(|http| Probe::Http { http }),
        (1u16.., proptest::option::of(template(deps))).prop_map(|(port, host)| Probe::Tcp {
            tcp: TcpProbe { port, host }
        }),
    ];
    (probe, duration(), duration(), 0u32..10, duration()).prop_map(
        |(probe, interval, timeout, retries, start_period)| HealthCheck {
            probe,
            interval,
            timeout,
            retries,
            start_period,
        },
    )
}

fn service(index: usize, earlier: Vec<String>) -> impl Strategy<Value = Service> {
    let kind = prop_oneof![
        Just(ServiceKind::Process),
        Just(ServiceKind::Docker),
        Just(ServiceKind::Remote),
        Just(ServiceKind::Package),
    ];
    let conditions = prop_oneof![
        Just(Condition::Started),
        Just(Condition::Healthy),
        Just(Condition::CompletedSuccessfully),
    ];
    let deps = proptest::sample::subsequence(earlier.clone(), 0..=earlier.len());
    let env = proptest::collection::btree_map("[A-Z_]{1,6}", template(earlier.clone()), 0..3);
    let restart = (
        prop_oneof![
            Just(RestartPolicy::No),
            Just(RestartPolicy::OnFailure),
            Just(RestartPolicy::Always),
            Just(RestartPolicy::UnlessStopped),
        ],
        proptest::option::of(0u32..10),
        duration(),
        duration(),
    )
        .prop_map(|(policy, max_restarts, a, b)| Restart {
            policy,
            max_restarts,
            backoff: Backoff {
                initial: a.min(b),
                max: a.max(b),
            },
            on_unhealthy: false,
        });
    let stop = (
        proptest::sample::select(vec!["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP"]),
        duration(),
    )
        .prop_map(|(signal, timeout)| Stop {
            signal: signal.to_owned(),
            timeout,
        });
    let ports = (1..3usize, proptest::bool::ANY).prop_map(move |(n, publish)| {
        (0..n)
            .map(|j| Port {
                name: (j == 0).then(|| "p0".to_owned()),
                port: 1000 + (index * 10 + j) as u16,
                published: publish.then_some(20000 + (index * 10 + j) as u16),
            })
            .collect::<Vec<_>>()
    });
    let command = prop_oneof![
        template(earlier.clone()).prop_map(|t| (None, Vec::new(), Some(Command::Shell(t)))),
        proptest::collection::vec(template(earlier.clone()), 1..3).prop_map(|v| (
            None,
            Vec::new(),
            Some(Command::Argv(v))
        )),
        (
            template(earlier.clone()),
            proptest::collection::vec(template(earlier.clone()), 0..3)
        )
            .prop_map(|(b, args)| (Some(b), args, None)),
    ];
    (
        kind,
        command,
        proptest::option::of(template(earlier.clone())),
        env,
        (
            proptest::option::of(name_text()),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..2),
        ),
        ports,
        (deps, proptest::collection::vec(conditions, 8)),
        health_check(earlier),
        restart,
        stop,
        proptest::option::of(duration()),
    )
        .prop_map(
            move |(
                kind,
                (binary, args, command),
                working_dir,
                env,
                (user, image, volumes),
                ports,
                (deps, conds),
                hc,
                restart,
                stop,
                startup_timeout,
            )| {
                let mut s = Service {
                    kind,
                    binary: None,
                    args: Vec::new(),
                    command: None,
                    entrypoint: Vec::new(),
                    working_dir,
                    env,
                    host: None,
                    user,
                    network: None,
                    image: None,
                    ports,
                    volumes,
                    package: None,
                    version: None,
                    install_path: None,
                    depends_on: deps.into_iter().zip(conds).collect(),
                    health_check: Some(hc),
                    restart,
                    stop,
                    startup_timeout,
                    subdomain: None,
                    proxy_port: None,
                    watch: None,
                    logging: Logging::default(),
                };
                match kind {
                    ServiceKind::Process | ServiceKind::Remote => {
                        s.binary = binary;
                        s.args = args;
                        s.command = command;
                        if kind == ServiceKind::Remote {
                            s.host = Some("h1".into());
                        }
                    }
                    ServiceKind::Docker => {
                        s.image = Some(image.unwrap_or_else(|| "img".into()));
                        s.entrypoint = args.iter().filter_map(Template::as_literal).collect();
                        s.command = command;
                    }
                    ServiceKind::Package => {
                        s.package = Some("pkg".into());
                        s.install_path = binary.map(|b| b.to_string());
                        s.version = image;
                        s.host = Some("h1".into());
                    }
                }
                // References are implicit `started` dependencies.
                let refs: Vec<String> = s
                    .templates()
                    .iter()
                    .flat_map(|t| t.references())
                    .map(|r| r.service.clone())
                    .collect();
                for r in refs {
                    s.depends_on.entry(r).or_insert(Condition::Started);
                }
                s
            },
        )
}

fn project() -> impl Strategy<Value = Project> {
    let host = (
        text(),
        1u16..,
        proptest::option::of(name_text()),
        proptest::option::of(text()),
        proptest::option::of(name_text()),
        proptest::bool::ANY,
        proptest::option::of(text()),
    )
        .prop_map(
            |(address, port, user, identity, jump, accept_new, docker_host)| Host {
                address,
                port,
                user,
                identity_file: identity.map(PathBuf::from),
                jump,
                known_hosts: if accept_new {
                    KnownHosts::AcceptNew
                } else {
                    KnownHosts::Strict
                },
                sudo: true,
                docker_host,
            },
        )
        .boxed();
    (1..5usize)
        .prop_flat_map(move |n| {
            let services: Vec<BoxedStrategy<(String, Service)>> = (0..n)
                .map(|i| {
                    let earlier: Vec<String> = (0..i).map(|k| format!("s{k}")).collect();
                    service(i, earlier)
                        .prop_map(move |s| (format!("s{i}"), s))
                        .boxed()
                })
                .collect();
            (
                services,
                host.clone(),
                proptest::option::of(text()),
                proptest::option::of(text()),
                name_text(),
                settings(),
                network(),
            )
        })
        .prop_map(
            |(services, h1, version, description, name, settings, network)| {
                let mut services: BTreeMap<String, Service> = services.into_iter().collect();
                // The loader applies `settings` to services that set nothing themselves.
                for s in services.values_mut() {
                    s.startup_timeout = s.startup_timeout.or(settings.startup_timeout);
                }
                Project {
                    name,
                    version,
                    description,
                    settings,
                    hosts: BTreeMap::from([("h1".to_owned(), h1)]),
                    networks: BTreeMap::from([("n0".to_owned(), network)]),
                    proxy: None,
                    services,
                }
            },
        )
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        proptest::option::of(proptest::sample::select(vec!["debug", "info", "warn"])),
        proptest::option::of(duration()),
        proptest::option::of(duration()),
        proptest::option::of(duration()),
    )
        .prop_map(|(level, interval, startup, shutdown)| Settings {
            log_level: level.map(str::to_owned),
            health_check_interval: interval,
            startup_timeout: startup,
            shutdown_timeout: shutdown,
        })
}

fn network() -> impl Strategy<Value = Network> {
    (
        proptest::bool::ANY,
        proptest::option::of(proptest::sample::select(vec![
            "10.0.0.0/24",
            "192.168.50.0/24",
            "fd00::/64",
        ])),
    )
        .prop_map(|(wireguard, subnet)| Network {
            kind: if wireguard {
                NetworkKind::Wireguard
            } else {
                NetworkKind::Local
            },
            // A mesh needs an IPv4 subnet and members.
            subnet: if wireguard {
                Some("10.0.0.0/24".to_owned())
            } else {
                subnet.map(str::to_owned)
            },
            config_path: wireguard.then(|| PathBuf::from("/etc/wireguard/wg0.conf")),
            listen_port: wireguard.then_some(51999),
            mtu: wireguard.then_some(1400),
            nodes: if wireguard {
                vec![harness_config::NetworkNode {
                    host: "local".to_owned(),
                    name: "local".to_owned(),
                    ssh_user: None,
                    ssh_key: None,
                    package_deploy: None,
                }]
            } else {
                Vec::new()
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_survives_serialize_then_parse(project in project()) {
        let yaml = serde_saphyr::to_string(&project).unwrap();
        let loaded = load_str(Path::new("/nonexistent/services.yaml"), yaml.clone(), &|_: &str| None);
        prop_assert!(loaded.errors.is_empty(), "{:#?}\n{}", loaded.errors, yaml);
        prop_assert_eq!(loaded.project.as_ref(), Some(&project), "{}", yaml);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = load_str(Path::new("x.yaml"), text, &|_: &str| None);
    }

    #[test]
    fn yaml_shaped_text_never_panics(
        lines in proptest::collection::vec(
            "( {0,6})([a-z_]{1,12}|-)(:)?( \\[|\\{| &a| \\*a| \\$\\{[a-z.:?-]{0,10}\\}| [0-9a-z\"']{0,8})?",
            0..40,
        )
    ) {
        let text = format!("services:\n{}", lines.join("\n"));
        let _ = load_str(Path::new("x.yaml"), text, &|_: &str| None);
    }
}

/// A base file using an `x-` anchor and `<<:` merges, and an override file that replaces
/// scalars, deep-merges maps and appends ports: what `config show` prints of the merged
/// result loads back to the same model.
fn layered_files() -> impl Strategy<Value = (String, String)> {
    let service = (
        text(),
        proptest::collection::btree_map("[A-Z]{1,3}", text(), 0..3),
        proptest::collection::btree_map("[A-Z]{1,3}", text(), 0..3),
        proptest::option::of(text()),
        proptest::bool::ANY,
        proptest::sample::select(vec!["no", "always", "on-failure"]),
    );
    proptest::collection::vec(service, 1..4).prop_map(|services| {
        let quote = |s: &str| serde_json::to_string(&escape_dollars(s)).unwrap();
        let mut base = String::from(
            "x-defaults: &defaults\n  stop: {signal: SIGINT, timeout: 4s}\n  restart: {policy: on-failure}\nservices:\n",
        );
        let mut over = String::from("services:\n");
        for (i, (command, env, env_over, new_command, add_port, policy)) in
            services.into_iter().enumerate()
        {
            base.push_str(&format!(
                "  s{i}:\n    <<: *defaults\n    command: {}\n    ports: [\"{}:80\"]\n    env:\n",
                quote(&command),
                20000 + i * 10
            ));
            base.push_str("      FIXED: \"1\"\n");
            for (k, v) in env {
                base.push_str(&format!("      {k}: {}\n", quote(&v)));
            }
            over.push_str(&format!("  s{i}:\n    restart: {policy}\n    env:\n"));
            over.push_str("      OVER: \"2\"\n");
            for (k, v) in env_over {
                over.push_str(&format!("      {k}: {}\n", quote(&v)));
            }
            if let Some(c) = new_command {
                over.push_str(&format!("    command: {}\n", quote(&c)));
            }
            if add_port {
                over.push_str(&format!("    ports: [\"{}:81\"]\n", 20001 + i * 10));
            }
        }
        (base, over)
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn merged_anchored_files_survive_config_show((base, over) in layered_files()) {
        let texts = vec![
            (PathBuf::from("/nonexistent/base.yaml"), base.clone()),
            (PathBuf::from("/nonexistent/override.yaml"), over.clone()),
        ];
        let first = load_texts(texts, &LoadOptions::default(), &|_: &str| None);
        prop_assert!(first.errors.is_empty(), "{:#?}\n{}\n{}", first.errors, base, over);
        let project = first.project.unwrap();
        let yaml = serde_saphyr::to_string(&project).unwrap();
        let again = load_str(Path::new("/nonexistent/base.yaml"), yaml.clone(), &|_: &str| None);
        prop_assert!(again.errors.is_empty(), "{:#?}\n{}", again.errors, yaml);
        prop_assert_eq!(again.project.as_ref(), Some(&project), "{}", yaml);
        for s in project.services.values() {
            prop_assert_eq!(s.stop.signal.as_str(), "SIGINT");
            prop_assert!(s.env.contains_key("FIXED") && s.env.contains_key("OVER"));
        }
    }
}
