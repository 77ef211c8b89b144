//! `.env` and `env_file` through the loader: Compose's dotenv rules, precedence, diagnostics.

use std::path::Path;

use harness_config::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn dotenv_values_follow_compose_rules_and_feed_interpolation() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        ".env",
        "\u{feff}HOST=db.local\nexport\tPORT=5432\nURL=\"postgres://${HOST}:${PORT:-1}/app\" # comment\n\
MULTI=\"line one\nline two\"\nESC=\"a\\tb\\n\"\nLIT='$HOST'\nYAML_STYLE: yes\nINHERIT\n",
    );
    let yaml = "services:\n  a:\n    command: x\n    env:\n      URL: $URL\n      MULTI: ${MULTI}\n      ESC: ${ESC}\n      LIT: ${LIT}\n      Y: ${YAML_STYLE}\n      I: ${INHERIT}\n";
    let env = |n: &str| (n == "INHERIT").then(|| "from-process".to_owned());
    let loaded = load_str(&dir.path().join("services.yaml"), yaml.into(), &env);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    let a = &loaded.project.unwrap().services["a"];
    let get = |k: &str| a.env[k].as_literal().unwrap();
    assert_eq!(get("URL"), "postgres://db.local:5432/app");
    assert_eq!(get("MULTI"), "line one\nline two");
    assert_eq!(get("ESC"), "a\tb\n");
    assert_eq!(get("LIT"), "$HOST");
    assert_eq!(get("Y"), "yes");
    assert_eq!(get("I"), "from-process");
}

#[test]
fn process_env_beats_dotenv_and_later_env_file_wins_under_env() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".env", "P=dotenv\nQ=dotenv\n");
    write(dir.path(), "one.env", "S=one\nT=one\nU=one\n");
    write(dir.path(), "two.env", "S=two\nT=two\n");
    let yaml = "services:\n  a:\n    command: \"${P} ${Q}\"\n    env_file: [one.env, two.env]\n    env: {T: own}\n";
    let env = |n: &str| (n == "P").then(|| "process".to_owned());
    let loaded = load_str(&dir.path().join("services.yaml"), yaml.into(), &env);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    let a = &loaded.project.unwrap().services["a"];
    assert_eq!(
        a.command,
        Some(Command::Shell(Template::literal("process dotenv")))
    );
    assert_eq!(a.env["S"].as_literal().unwrap(), "two");
    assert_eq!(a.env["T"].as_literal().unwrap(), "own");
    assert_eq!(a.env["U"].as_literal().unwrap(), "one");
}

#[test]
fn invalid_env_lines_name_their_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".env", "OK=1\nNOT VALID\n");
    write(dir.path(), "svc.env", "A=1\n\nB=\"never closed\n");
    let yaml = "services:\n  a:\n    command: x\n    env_file: svc.env\n";
    let texts = vec![(dir.path().join("services.yaml"), yaml.to_owned())];
    let loaded = load_texts(texts, &LoadOptions::default(), &no_env);
    let found: Vec<String> = loaded.errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(loaded.errors.len(), 2, "{found:#?}");
    let dotenv = loaded
        .errors
        .iter()
        .find(|d| d.file.ends_with(".env") && !d.file.ends_with("svc.env"))
        .unwrap();
    assert_eq!((dotenv.line, dotenv.column), (Some(2), Some(1)));
    assert_eq!(dotenv.code, Code::EnvFile);
    let svc = loaded
        .errors
        .iter()
        .find(|d| d.file.ends_with("svc.env"))
        .unwrap();
    assert_eq!((svc.line, svc.column), (Some(3), Some(3)));
    assert!(svc.message.contains("unterminated"), "{}", svc.message);
    assert!(loaded.project.is_none());
}

/// The daemon reloads a definition the CLI already substituted, without the client's
/// environment: `.env` is then not read, so its variables cannot fail there.
#[test]
fn a_substituted_definition_does_not_read_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".env", "TOKEN=${ONLY_IN_THE_CLIENT}\n");
    let yaml = "services:\n  a:\n    command: \"echo $$TOKEN ${b.ip}\"\n  b: {command: y}\n";
    let loaded = load_str(&dir.path().join("services.yaml"), yaml.into(), &no_env);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    // A variable that needs `.env` reads it, and its problem is reported.
    let yaml = "services:\n  a:\n    command: \"echo ${TOKEN}\"\n";
    let loaded = load_str(&dir.path().join("services.yaml"), yaml.into(), &no_env);
    assert!(
        loaded
            .errors
            .iter()
            .any(|d| d.file.ends_with(".env") && d.message.contains("ONLY_IN_THE_CLIENT")),
        "{:#?}",
        loaded.errors
    );
}
