//! Compose's own interpolation reference cases (compose-go `template/template_test.go`, with its
//! mapping FOO=first, BAR="" and JSON={"json":2}), run against harness's grammar.
//!
//! Every case matches except those listed as deliberate: an unset variable without a default is
//! an error here, where Compose substitutes an empty string and logs a warning.

use harness_config::{TemplateErrorKind, substitute};

fn mapping(name: &str) -> Option<String> {
    match name {
        "FOO" => Some("first".into()),
        "BAR" => Some(String::new()),
        "JSON" => Some(r#"{"json":2}"#.into()),
        _ => None,
    }
}

enum Want {
    /// Compose's result.
    Text(&'static str),
    /// Compose fails with a message containing this.
    Error(&'static str),
    /// Compose gives this text and a warning; harness refuses the unset variable (documented).
    UnsetHere(&'static str, &'static str),
}
use Want::*;

const CASES: &[(&str, Want)] = &[
    // TestEscaped, TestSubstituteNoMatch
    ("$${foo}", Text("${foo}")),
    ("foo", Text("foo")),
    // TestUnescaped
    ("a $ string", Text("a $ string")),
    ("^REGEX$", Text("^REGEX$")),
    ("$}", Text("$}")),
    ("$", Text("$")),
    // TestInvalid
    ("${", Error("never closed")),
    ("${}", Error("neither a variable")),
    ("${ }", Error("neither a variable")),
    ("${ foo}", Error("neither a variable")),
    ("${foo }", Error("neither a variable")),
    ("${foo!}", Error("neither a variable")),
    // TestNonBraced
    ("$FOO-bar", Text("first-bar")),
    // TestNoValueNoDefault
    ("This ${missing} var", UnsetHere("This  var", "missing")),
    ("This ${BAR} var", Text("This  var")),
    // TestValueNoDefault
    ("This $FOO var", Text("This first var")),
    ("This ${FOO} var", Text("This first var")),
    // TestNoValueWithDefault
    ("ok ${missing:-def}", Text("ok def")),
    ("ok ${missing-def}", Text("ok def")),
    // TestLazyDefaultDoesNotWarn, TestLazyDefaultWarnsWhenUsed
    ("${A:+${A},}B", Text("B")),
    ("${A:-${B}}", UnsetHere("", "B")),
    // TestEmptyValueWithSoftDefault, TestValueWithSoftDefault, TestEmptyValueWithHardDefault
    ("ok ${BAR:-def}", Text("ok def")),
    ("ok ${FOO:-def}", Text("ok first")),
    ("ok ${BAR-def}", Text("ok ")),
    // TestPresentValue*
    ("ok ${UNSET_VAR:+presence_value}", Text("ok ")),
    ("ok ${UNSET_VAR+presence_value}", Text("ok ")),
    ("ok ${FOO:+presence_value}", Text("ok presence_value")),
    ("ok ${FOO+presence_value}", Text("ok presence_value")),
    ("ok ${BAR+presence_value}", Text("ok presence_value")),
    ("ok ${BAR:+presence_value}", Text("ok ")),
    // TestNonAlphanumericDefault
    (
        "ok ${BAR:-/non:-alphanumeric}",
        Text("ok /non:-alphanumeric"),
    ),
    // TestInterpolationExternalInterference
    ("-ok ${BAR:-defaultValue}", Text("-ok defaultValue")),
    ("+ok ${UNSET:-${BAR-defaultValue}}", Text("+ok ")),
    ("-ok ${FOO:-defaultValue}", Text("-ok first")),
    (":-ok ${UNSET-defaultValue}", Text(":-ok defaultValue")),
    (":-ok ${BAR-defaultValue}", Text(":-ok ")),
    (":?ok ${BAR-defaultValue}", Text(":?ok ")),
    (":?ok ${BAR:-defaultValue}", Text(":?ok defaultValue")),
    (":+ok ${BAR:-defaultValue}", Text(":+ok defaultValue")),
    ("+ok ${BAR-defaultValue}", Text("+ok ")),
    ("?ok ${BAR:-defaultValue}", Text("?ok defaultValue")),
    // TestDefaultsWithNestedExpansion
    ("ok ${UNSET_VAR-$FOO}", Text("ok first")),
    ("ok ${UNSET_VAR-${FOO}}", Text("ok first")),
    ("ok ${UNSET_VAR-${FOO} ${FOO}}", Text("ok first first")),
    ("ok ${BAR:-$FOO}", Text("ok first")),
    ("ok ${BAR:-${FOO}}", Text("ok first")),
    ("ok ${BAR:-${FOO} ${FOO}}", Text("ok first first")),
    ("ok ${BAR+$FOO}", Text("ok first")),
    ("ok ${BAR+$FOO ${FOO:+second}}", Text("ok first second")),
    // TestMandatoryVariableErrors
    (
        "not ok ${UNSET_VAR:?Mandatory Variable Unset}",
        Error("`UNSET_VAR` is required: Mandatory Variable Unset"),
    ),
    (
        "not ok ${BAR:?Mandatory Variable Empty}",
        Error("`BAR` is required: Mandatory Variable Empty"),
    ),
    ("not ok ${UNSET_VAR:?}", Error("`UNSET_VAR` is required")),
    (
        "not ok ${UNSET_VAR?Mandatory Variable Unset}",
        Error("`UNSET_VAR` is required: Mandatory Variable Unset"),
    ),
    ("not ok ${UNSET_VAR?}", Error("`UNSET_VAR` is required")),
    // TestMandatoryVariableErrorsWithNestedExpansion
    (
        "not ok ${UNSET_VAR:?Mandatory Variable ${FOO}}",
        Error("`UNSET_VAR` is required: Mandatory Variable first"),
    ),
    (
        "not ok ${UNSET_VAR?Mandatory Variable ${FOO}}",
        Error("`UNSET_VAR` is required: Mandatory Variable first"),
    ),
    // TestDefaultsForMandatoryVariables
    ("ok ${FOO:?err}", Text("ok first")),
    ("ok ${FOO?err}", Text("ok first")),
    ("ok ${BAR?err}", Text("ok ")),
    // TestPrecedence
    (
        "${UNSET_VAR?bar-baz}",
        Error("`UNSET_VAR` is required: bar-baz"),
    ),
    ("${UNSET_VAR-myerror?msg}", Text("myerror?msg")),
    ("${FOO?bar-baz}", Text("first")),
    (
        "${BAR:-default_value_for_empty_var}",
        Text("default_value_for_empty_var"),
    ),
    (
        "${UNSET_VAR-default_value_for_unset_var}",
        Text("default_value_for_unset_var"),
    ),
    // TestSubstitutionFunctionChoice: the first operator after the name wins, the rest is
    // its argument (shown through the value each choice gives).
    ("${UNSET_VAR:?val?ue}", Error("is required: val?ue")),
    ("${UNSET_VAR?val:?ue}", Error("is required: val:?ue")),
    ("${UNSET_VAR?va-lu+e:?e}", Error("is required: va-lu+e:?e")),
    ("${UNSET_VAR?va+lu-e:?e}", Error("is required: va+lu-e:?e")),
    ("${UNSET_VAR:-value}", Text("value")),
    ("${UNSET_VAR-va:-lu:?e}", Text("va:-lu:?e")),
    ("${UNSET_VAR-va+lu?e}", Text("va+lu?e")),
    ("${UNSET_VAR-va?lu+e}", Text("va?lu+e")),
    ("${FOO:+va:?lu:-e}", Text("va:?lu:-e")),
    ("${FOO+va:+lue}", Text("va:+lue")),
    ("${FOO+va?lu-e}", Text("va?lu-e")),
    ("${FOO+va-lu?e}", Text("va-lu?e")),
    // TestNoValueWithCurlyBracesDefault, TestValueWithCurlyBracesDefault
    (r#"ok ${missing:-{"json":1}}"#, Text(r#"ok {"json":1}"#)),
    (r#"ok ${missing-{"json":1}}"#, Text(r#"ok {"json":1}"#)),
    (r#"ok ${JSON:-{"json":1}}"#, Text(r#"ok {"json":2}"#)),
    (r#"ok ${JSON-{"json":1}}"#, Text(r#"ok {"json":2}"#)),
];

fn run(template: &str) -> Result<String, Vec<TemplateErrorKind>> {
    substitute(template, &mapping)
        .map(|t| {
            t.as_literal()
                .expect("no service references in these cases")
        })
        .map_err(|errors| errors.into_iter().map(|e| e.kind).collect())
}

#[test]
fn compose_reference_cases() {
    let mut matched = 0;
    let mut deliberate = 0;
    let mut failures = Vec::new();
    for (template, want) in CASES {
        let got = run(template);
        let ok = match (want, &got) {
            (Text(t), Ok(s)) => s == t,
            (Error(needle), Err(errors)) => errors.iter().any(|e| e.to_string().contains(needle)),
            (UnsetHere(_, name), Err(errors)) => {
                deliberate += 1;
                errors == &[TemplateErrorKind::UnsetVariable((*name).to_owned())]
            }
            _ => false,
        };
        if ok && !matches!(want, UnsetHere(..)) {
            matched += 1;
        }
        if !ok {
            failures.push(format!("{template:?}: got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(CASES.len(), 80);
    assert_eq!(deliberate, 2);
    assert_eq!(matched, CASES.len() - deliberate, "cases matching Compose");
}

/// The deliberate difference gives Compose's text once the variable is set (even to "").
#[test]
fn deliberate_difference_is_only_about_unset_variables() {
    for (template, want) in CASES {
        if let UnsetHere(text, name) = want {
            let with_empty = |n: &str| {
                if n == *name {
                    Some(String::new())
                } else {
                    mapping(n)
                }
            };
            let got = substitute(template, &with_empty).map(|t| t.as_literal());
            assert_eq!(got, Ok(Some((*text).to_owned())), "{template}");
        }
    }
}

/// Service references are recognised before variables (ADR 0002), also inside defaults.
#[test]
fn references_inside_defaults_and_alternatives() {
    let t = substitute("${UPSTREAM:-http://${api.ip}:${api.port}}", &mapping).unwrap();
    assert_eq!(t.to_string(), "http://${api.ip}:${api.port}");
    let t = substitute("${FOO:+${db-1.host}}", &mapping).unwrap();
    assert_eq!(t.references().count(), 1);
    // An unused default is not substituted, so its unset variables are no error.
    assert!(substitute("${FOO:-${NOPE}}", &mapping).is_ok());
}

#[test]
fn error_offsets_inside_defaults_point_at_the_inner_dollar() {
    let errors = substitute("ab ${UNSET:-x $NOPE}", &mapping).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].offset, 14);
}
