//! The `harness` binary, run as a user would: validate, config show/deps/schema, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A services.yaml in its own temporary folder (so no stray `.env` is read).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("services.yaml"), yaml).expect("write");
        Fixture { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("services.yaml")
    }

    fn run(&self, args: &[&str]) -> Run {
        run_in(self.dir.path(), args)
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("HARNESS_FILE")
        .output()
        .expect("run harness");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn misspelt_key_exits_2_with_line_col_and_suggestion() {
    let f = Fixture::new(
        "services:\n  api:\n    command: run\n    dependncies: [db]\n  db:\n    command: x\n",
    );
    let r = f.run(&["validate"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("did you mean `dependencies`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("services.yaml:4:5"), "{}", r.stderr);
    assert!(
        r.stderr.contains("dependncies: [db]"),
        "snippet: {}",
        r.stderr
    );
}

#[test]
fn three_mistakes_three_diagnostics() {
    let f = Fixture::new(
        "services:\n  api:\n    comand: run\n    restart: sometimes\n    health_check:\n      http: http://x\n      interval: soon\n",
    );
    let r = f.run(&["validate", "-o", "json"]);
    assert_eq!(r.code, 2);
    let all = r.json();
    let errors = all
        .as_array()
        .expect("a list")
        .iter()
        .filter(|d| d["severity"] == "error")
        .count();
    assert_eq!(errors, 3, "{}", r.stdout);
    let r = f.run(&["validate"]);
    assert_eq!(r.stderr.matches("× ").count(), 3, "{}", r.stderr);
    assert!(r.stderr.contains("3 errors"), "{}", r.stderr);
}

#[test]
fn json_diagnostics_have_the_documented_shape() {
    let f = Fixture::new("services:\n  api:\n    comand: run\n");
    let r = f.run(&["validate", "-o", "json"]);
    let d = &r.json()[0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "unknown-key");
    assert_eq!(d["line"], 3);
    assert_eq!(d["column"], 5);
    assert_eq!(d["path"], "services.api.comand");
    assert!(d["file"].as_str().unwrap().ends_with("services.yaml"));
    assert!(d["message"].as_str().unwrap().contains("command"));
    assert!(d.get("help").is_some());
}

#[test]
fn substitution_cases() {
    let f = Fixture::new(
        "services:\n  a:\n    command: \"echo $${HOME}\"\n    env:\n      DB: ${DB_HOST:-db.example.com}\n      B: ${X:?set X}\n",
    );
    let r = f.run(&["validate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("set X"), "{}", r.stderr);
    // With X set it is valid; the default and the escape show in the resolved config.
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["config", "show", "-o", "json"])
        .current_dir(f.dir.path())
        .env("X", "x")
        .env_remove("DB_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"]["a"]["env"]["DB"], "db.example.com");
    // `$$` is how a literal `$` is written, so the resolved form keeps it escaped.
    assert_eq!(v["services"]["a"]["command"], "echo $${HOME}");
}

#[test]
fn cycle_prints_the_whole_path() {
    let f = Fixture::new(
        "services:\n  a: {command: x, dependencies: [b]}\n  b: {command: x, dependencies: [c]}\n  c: {command: x, dependencies: [a]}\n",
    );
    let r = f.run(&["validate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("a → b → c → a"), "{}", r.stderr);
}

#[test]
fn unknown_reference_names_the_service() {
    let f = Fixture::new("services:\n  a:\n    command: \"ping ${ghost.ip}\"\n");
    let r = f.run(&["validate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown service `ghost`"), "{}", r.stderr);
    assert!(r.stderr.contains(":3:"), "{}", r.stderr);
}

fn assert_refused_quickly(f: &Fixture, needle: &str) {
    let start = Instant::now();
    let r = f.run(&["validate"]);
    let took = start.elapsed();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stderr.contains(needle), "{}", r.stderr);
    // Generous bound: only catches runaway expansion, not performance (that is in bench/).
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn alias_bomb_is_refused() {
    let mut yaml = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 1..14u8 {
        let (p, c) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        yaml.push_str(&format!(
            "{c}: &{c} [{}]\n",
            vec![format!("*{p}"); 10].join(",")
        ));
    }
    yaml.push_str("services: {}\n");
    assert_refused_quickly(&Fixture::new(&yaml), "alias");
}

#[test]
fn fifty_megabyte_file_is_refused() {
    let f = Fixture::new("");
    let file = std::fs::File::create(f.path()).unwrap();
    file.set_len(50 << 20).unwrap();
    assert_refused_quickly(&f, "limited to 10 MiB");
}

#[test]
fn deep_nesting_is_refused() {
    let yaml = format!("services: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    assert_refused_quickly(&Fixture::new(&yaml), "nests deeper");
    let mut block = String::from("services:\n");
    for i in 0..500 {
        block.push_str(&format!("{}k:\n", " ".repeat(2 * (i + 1))));
    }
    assert_refused_quickly(&Fixture::new(&block), "nests deeper");
}

#[test]
fn adr007_file_validates_and_renders() {
    let file = examples().join("adr007-compat.yaml");
    let file = file.to_str().unwrap();
    let r = run_in(&examples(), &["validate", "-f", file]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run_in(&examples(), &["config", "show", "-f", file]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("type: remote"), "{}", r.stdout);
    assert!(
        r.stdout.contains("address: \"192.168.50.10\""),
        "{}",
        r.stdout
    );
    // The rendered form is itself a valid services.yaml.
    let f = Fixture::new(&r.stdout);
    assert_eq!(f.run(&["validate"]).code, 0);
}

#[test]
fn every_example_validates() {
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let r = run_in(&examples(), &["validate", "-f", path.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{}: {}", path.display(), r.stderr);
        }
    }
}

#[test]
fn secrets_are_masked_unless_asked() {
    let f = Fixture::new(
        "services:\n  db:\n    image: postgres\n    health_check: {tcp: 5432}\n    env:\n      POSTGRES_PASSWORD: hunter2\n      Api_Token: abc\n      USER: app\n",
    );
    let r = f.run(&["config", "show"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stdout.contains("hunter2") && !r.stdout.contains("abc"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("********"));
    assert!(r.stdout.contains("USER: app"));
    let r = f.run(&["config", "show", "-o", "json"]);
    assert_eq!(
        r.json()["services"]["db"]["env"]["POSTGRES_PASSWORD"],
        "********"
    );
    let r = f.run(&["config", "show", "--show-secrets"]);
    assert!(r.stdout.contains("hunter2"), "{}", r.stdout);
}

#[test]
fn deps_in_waves() {
    let file = examples().join("services.yaml");
    let r = run_in(
        &examples(),
        &["config", "deps", "-f", file.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(
        v["start"],
        serde_json::json!([["migrate"], ["api"], ["worker"]])
    );
    assert_eq!(
        v["stop"],
        serde_json::json!([["worker"], ["api"], ["migrate"]])
    );
    let r = run_in(
        &examples(),
        &["config", "deps", "-f", file.to_str().unwrap()],
    );
    assert!(r.stdout.contains("api (healthy)"), "{}", r.stdout);
}

#[test]
fn schema_is_json_schema() {
    let r = run_in(&examples(), &["config", "schema"]);
    assert_eq!(r.code, 0);
    let v = r.json();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert!(v["$defs"]["Service"]["properties"]["depends_on"].is_object());
}

#[test]
fn exit_codes() {
    let f = Fixture::new("services:\n  a: {command: x, health_check: {tcp: 1}}\n");
    assert_eq!(f.run(&["validate"]).code, 0);
    assert_eq!(f.run(&["--version"]).code, 0);
    assert_eq!(f.run(&["--help"]).code, 0);
    assert_eq!(f.run(&["no-such-command"]).code, 2);
    assert_eq!(f.run(&["validate", "--bogus"]).code, 2);
    assert_eq!(f.run(&["validate", "-o", "xml"]).code, 2);
    assert_eq!(f.run(&["validate", "-f", "missing.yaml"]).code, 2);
    assert_eq!(f.run(&["config", "show", "-f", "missing.yaml"]).code, 2);
    let r = f.run(&["completions", "bash"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("harness"));
}

#[test]
fn valid_file_reports_counts() {
    let f = Fixture::new("services:\n  a: {command: x}\n");
    let r = f.run(&["validate"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("valid: 1 service, 1 warning"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("nothing depends on `a`"), "{}", r.stderr);
}

#[test]
fn adr007_examples_validate_render_and_render_back() {
    let dir = examples().join("adr007");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.to_str().unwrap();
        let r = run_in(&dir, &["validate", "-f", file]);
        assert_eq!(r.code, 0, "{file}: {}", r.stderr);
        let r = run_in(&dir, &["config", "show", "-f", file, "--show-secrets"]);
        assert_eq!(r.code, 0, "{file}: {}", r.stderr);
        assert!(r.stdout.contains("settings:"), "{file}: {}", r.stdout);
        assert!(r.stdout.contains("subnet:"), "{file}: {}", r.stdout);
        let shown = run_in(
            &dir,
            &["config", "show", "-f", file, "-o", "json", "--show-secrets"],
        );
        // The rendered form loads back to the same model.
        let f = Fixture::new(&r.stdout);
        let again = f.run(&["config", "show", "-o", "json", "--show-secrets"]);
        assert_eq!(again.code, 0, "{file}: {}", again.stderr);
        let (mut a, mut b) = (shown.json(), again.json());
        a["name"] = Value::Null;
        b["name"] = Value::Null;
        assert_eq!(a, b, "{file}");
        seen += 1;
    }
    assert_eq!(seen, 3);
}

/// `network list` answers from the services file alone: members in order, their mesh addresses
/// (never the network address), none up yet.
#[test]
fn network_list_shows_the_members_and_their_addresses() {
    let file = examples().join("adr007/wireguard.yaml");
    let r = run_in(
        &examples(),
        &[
            "--no-autostart",
            "network",
            "list",
            "-o",
            "json",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rows = v.as_array().unwrap();
    let got: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["member"].as_str().unwrap(),
                r["address"].as_str().unwrap(),
                r["up"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("site-a", "10.100.0.1/24", false),
            ("site-b", "10.100.0.2/24", false)
        ]
    );
    let r = run_in(
        &examples(),
        &[
            "--no-autostart",
            "network",
            "show",
            "nope",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no wireguard network \"nope\""),
        "{}",
        r.stderr
    );
}

#[test]
fn config_show_origins_name_the_file_of_each_value() {
    let f = Fixture::new("services:\n  api:\n    command: run\n    ports: [8080]\n");
    std::fs::write(
        f.dir.path().join("override.yaml"),
        "services:\n  api:\n    command: run --fast\n",
    )
    .unwrap();
    let r = f.run(&[
        "-f",
        "services.yaml",
        "-f",
        "override.yaml",
        "config",
        "show",
        "--origins",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("services.api.command: \"run --fast\"  # override.yaml:3:14"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("services.api.ports[0].port: 8080  # services.yaml:4:13"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("services.api.stop.signal: \"SIGTERM\"  # default (in services.yaml:2:3)"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_compose_key_says_what_to_use_instead() {
    let f = Fixture::new("services:\n  api:\n    image: nginx\n    environment: {A: b}\n");
    let r = f.run(&["validate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("Compose's `environment`"), "{}", r.stderr);
    assert!(r.stderr.contains("`env:`"), "{}", r.stderr);
}

/// A bad line in `.env` or an `env_file` is reported at its file:line:col in the table output
/// too (it had only the message: the file is not the services file, so no snippet is drawn).
#[test]
fn a_bad_dotenv_line_names_its_file_line_and_column() {
    let f = Fixture::new("services:\n  a: {command: run, env_file: [extra.env]}\n");
    std::fs::write(f.dir.path().join(".env"), "GOOD=1\nthis is garbage\n").unwrap();
    std::fs::write(f.dir.path().join("extra.env"), "OK=1\n\nalso bad\n").unwrap();
    let r = f.run(&["validate"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(".env:2:1"), "{}", r.stderr);
    assert!(r.stderr.contains("extra.env:3:1"), "{}", r.stderr);
}
