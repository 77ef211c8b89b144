//! The address rules of ADR 0020, one assertion per row: `${svc.ip}`, `${svc.host}` and
//! `${svc.port}` as each kind of consumer sees each kind of provider.

use harness_config::{Project, Property, ServiceRef};
use orchestrator::addresses::{Placement, Resolver};

fn project() -> Project {
    let yaml = r#"name: addr
hosts:
  h1: {address: 198.18.0.11, user: u}
  h2: {address: 198.18.0.12, user: u}
  h4: {address: 198.19.0.14, user: u, jump: h1}
services:
  local: {command: "true", ports: [7000]}
  api: {host: h1, command: "true", ports: [8080]}
  db: {type: docker, host: h2, image: x, ports: ["15432:5432"]}
  cache: {type: docker, host: h2, image: x, ports: [6379]}
  web: {type: docker, image: x, ports: ["8081:80"]}
"#;
    let dir = tempfile::tempdir().unwrap();
    harness_config::load_str(
        &dir.path().join("services.yaml"),
        yaml.to_owned(),
        &|_: &str| None::<String>,
    )
    .into_result()
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn get(p: &Project, from: Placement, svc: &str, prop: Property) -> Result<String, String> {
    Resolver::new(p, from).resolve(&ServiceRef {
        service: svc.into(),
        property: prop,
    })
}

fn on(host: &str) -> Placement {
    Placement::Host {
        host: host.into(),
        user: None,
    }
}

fn in_container(host: Option<&str>) -> Placement {
    Placement::Container {
        host: host.map(Into::into),
    }
}

#[test]
fn same_machine_is_loopback() {
    let p = project();
    assert_eq!(
        get(&p, Placement::Local, "local", Property::Ip).unwrap(),
        "127.0.0.1"
    );
    assert_eq!(
        get(&p, Placement::Local, "local", Property::Host).unwrap(),
        "localhost"
    );
    assert_eq!(get(&p, on("h1"), "api", Property::Ip).unwrap(), "127.0.0.1");
    // A process on h2 reaches h2's container on loopback, on the published port.
    assert_eq!(get(&p, on("h2"), "db", Property::Ip).unwrap(), "127.0.0.1");
    assert_eq!(get(&p, on("h2"), "db", Property::Port).unwrap(), "15432");
    assert_eq!(
        get(&p, Placement::Local, "web", Property::Port).unwrap(),
        "8081"
    );
}

#[test]
fn other_hosts_use_the_configured_address() {
    let p = project();
    assert_eq!(
        get(&p, on("h2"), "api", Property::Ip).unwrap(),
        "198.18.0.11"
    );
    assert_eq!(
        get(&p, Placement::Local, "api", Property::Ip).unwrap(),
        "198.18.0.11"
    );
    assert_eq!(
        get(&p, Placement::Local, "api", Property::Port).unwrap(),
        "8080"
    );
    assert_eq!(
        get(&p, on("h1"), "db", Property::Ip).unwrap(),
        "198.18.0.12"
    );
    assert_eq!(
        get(&p, on("h1"), "db", Property::Host).unwrap(),
        "198.18.0.12"
    );
}

#[test]
fn containers_reach_their_host_by_its_address() {
    let p = project();
    // Another engine: that engine host's address (loopback in a container is itself).
    assert_eq!(
        get(&p, in_container(Some("h1")), "db", Property::Ip).unwrap(),
        "198.18.0.12"
    );
    assert_eq!(
        get(&p, in_container(Some("h1")), "api", Property::Ip).unwrap(),
        "198.18.0.11"
    );
    assert_eq!(
        get(&p, in_container(None), "local", Property::Ip).unwrap(),
        "host.docker.internal"
    );
}

#[test]
fn the_daemons_machine_is_found_from_the_routing_table() {
    let p = project();
    let ip = get(&p, on("h1"), "local", Property::Ip);
    // On a machine with a route towards 198.18.0.11 this is a real local address; without one,
    // a clear error. Behind a jump host there is never a usable answer.
    match ip {
        Ok(ip) => assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}"),
        Err(e) => assert!(e.contains("h1"), "{e}"),
    }
    let e = get(&p, on("h4"), "local", Property::Ip).unwrap_err();
    assert!(e.contains("jump host"), "{e}");
}

#[test]
fn containers_on_one_engine_use_the_container_address_and_port() {
    let p = project();
    // The provider container's address is filled in when the consumer is launched.
    let ip = get(&p, in_container(Some("h2")), "cache", Property::Ip).unwrap();
    assert!(ip.contains("harness-container-ip:cache"), "{ip:?}");
    assert_eq!(
        get(&p, in_container(Some("h2")), "db", Property::Port).unwrap(),
        "5432"
    );
    assert_eq!(
        get(&p, in_container(Some("h2")), "cache", Property::Port).unwrap(),
        "6379"
    );
    // Another engine goes through the published port.
    assert_eq!(
        get(&p, in_container(None), "db", Property::Port).unwrap(),
        "15432"
    );
}

#[test]
fn unpublished_container_ports_cannot_be_referenced() {
    let p = project();
    let e = get(&p, on("h1"), "cache", Property::Port).unwrap_err();
    assert!(e.contains("not published") && e.contains("6379"), "{e}");
}
