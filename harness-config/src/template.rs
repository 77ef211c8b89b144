//! The `${...}` grammar.
//!
//! A string in services.yaml may hold two kinds of `${...}`:
//! - variables, in the Compose specification's syntax (`$VAR`, `${VAR}`, `${VAR:-default}`,
//!   `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`, `${VAR:?message}`, `${VAR?message}`, with
//!   `${...}` nested in defaults, alternatives and messages), substituted once, at load, from the
//!   environment. One deliberate difference: a variable that is unset and has no default is an
//!   error here, where Compose substitutes an empty string and warns;
//! - service references (`${svc.ip}`, `${svc.port}`, `${svc.host}`, `${svc.ports.NAME}`), kept in a
//!   [`Template`] because their value depends on where the consumer runs and is known only when
//!   the orchestrator starts it.
//!
//! `$$` is a literal `$`; a `$` followed by neither `{`, `$` nor a name start is literal too.

use std::fmt;

use serde::{Serialize, Serializer};

/// A string whose service references are resolved at start time.
///
/// Parsed once at load: literal text (variables already substituted) and [`ServiceRef`]s.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a [`Template`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Literal(String),
    Ref(ServiceRef),
}

/// `${service.property}`: an address of another service, seen from the consumer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub service: String,
    pub property: Property,
}

/// What a [`ServiceRef`] asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// `ip`: the address the consumer should connect to.
    Ip,
    /// `host`: the host name (or address) the service runs on.
    Host,
    /// `port`: the service's first port.
    Port,
    /// `ports.NAME`: the port named NAME.
    NamedPort(String),
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.property {
            Property::Ip => write!(f, "${{{}.ip}}", self.service),
            Property::Host => write!(f, "${{{}.host}}", self.service),
            Property::Port => write!(f, "${{{}.port}}", self.service),
            Property::NamedPort(name) => write!(f, "${{{}.ports.{name}}}", self.service),
        }
    }
}

impl Template {
    /// A template with no references.
    pub fn literal(text: impl Into<String>) -> Self {
        let text = text.into();
        if text.is_empty() {
            return Template::default();
        }
        Template {
            parts: vec![Part::Literal(text)],
        }
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The service references, in order of appearance.
    pub fn references(&self) -> impl Iterator<Item = &ServiceRef> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Literal(_) => None,
        })
    }

    /// The text when there is no reference to resolve.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Ref(_) => return None,
            }
        }
        Some(out)
    }

    /// The final string, asking `resolve` for each reference (the orchestrator supplies it per
    /// consumer, since `${db.ip}` differs between a local process and a container).
    pub fn render<E>(
        &self,
        mut resolve: impl FnMut(&ServiceRef) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Ref(r) => out.push_str(&resolve(r)?),
            }
        }
        Ok(out)
    }

    fn push_literal(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(Part::Literal(last)) = self.parts.last_mut() {
            last.push_str(text);
        } else {
            self.parts.push(Part::Literal(text.to_owned()));
        }
    }
}

/// The source form: literal `$` escaped as `$$`, references as `${svc.prop}`, so that it loads
/// back to the same template.
impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(s) if s.contains('$') => f.write_str(&escape_dollars(s))?,
                Part::Literal(s) => f.write_str(s)?,
                Part::Ref(r) => write!(f, "{r}")?,
            }
        }
        Ok(())
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `$` → `$$`, so that text survives another round of substitution.
pub fn escape_dollars(s: &str) -> String {
    s.replace('$', "$$")
}

/// A problem found while substituting one string. `offset` is the byte offset of the `$` in
/// the string, to point the diagnostic at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub kind: TemplateErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateErrorKind {
    /// `${` without a closing `}`.
    Unclosed,
    /// `${}` or a name that is neither a variable nor `svc.property`.
    BadExpression(String),
    /// `${svc.what}` with an unknown property.
    UnknownProperty { reference: String, property: String },
    /// `${VAR}` with VAR unset and no default.
    UnsetVariable(String),
    /// `${VAR:?message}` with VAR unset (or empty).
    Required { name: String, message: String },
    /// A service reference in a field that is fixed at load time.
    ReferenceNotAllowed(ServiceRef),
}

impl fmt::Display for TemplateErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateErrorKind::Unclosed => f.write_str("`${` is never closed with `}`"),
            TemplateErrorKind::BadExpression(e) => write!(
                f,
                "`${{{e}}}` is neither a variable (`${{NAME}}`) nor a service reference (`${{service.ip}}`)"
            ),
            TemplateErrorKind::UnknownProperty {
                reference,
                property,
            } => write!(
                f,
                "`${{{reference}}}`: a service has no property `{property}` (known: ip, port, host, ports.NAME)"
            ),
            TemplateErrorKind::UnsetVariable(name) => {
                write!(f, "variable `{name}` is not set and has no default")
            }
            TemplateErrorKind::Required { name, message } => {
                if message.is_empty() {
                    write!(f, "variable `{name}` is required")
                } else {
                    write!(f, "variable `{name}` is required: {message}")
                }
            }
            TemplateErrorKind::ReferenceNotAllowed(r) => write!(
                f,
                "service reference `{r}` is not allowed here: this field is fixed when the file is loaded"
            ),
        }
    }
}

/// Service names: letters, digits, `-` and `_`; no dots, which separate the property.
pub fn is_service_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn known_property(property: &str) -> Option<Property> {
    match property {
        "ip" => Some(Property::Ip),
        "host" => Some(Property::Host),
        "port" => Some(Property::Port),
        p => p
            .strip_prefix("ports.")
            .filter(|name| is_service_name(name))
            .map(|name| Property::NamedPort(name.to_owned())),
    }
}

/// Where variables come from: the caller layers process environment, `.env` and `env_file`.
pub trait VarLookup {
    fn var(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> VarLookup for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Substitutes variables in `text` and parses the service references left over.
/// Collects every error in the string rather than stopping at the first.
///
/// The grammar is the Compose specification's: `$$`, `$NAME`, `${NAME}`, and `${NAME` followed
/// by `:-` `-` `:+` `+` `:?` `?` and an argument that may itself hold `$NAME`, `${...}` (nested
/// braces balance) or service references; arguments are only substituted when used.
pub fn substitute(text: &str, vars: &dyn VarLookup) -> Result<Template, Vec<TemplateError>> {
    let mut out = Template::default();
    let mut errors = Vec::new();
    expand(text, 0, 0, vars, &mut out, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The index of the `}` closing the `${` at `start` (which points at `{`): braces nest, as in
/// Compose, so `${JSON:-{"a":1}}` ends at the last `}`.
fn closing_brace(text: &str, start: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(start) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Deepest nesting of `${...}` inside defaults, alternatives and messages; deeper is an error
/// (hostile input must not exhaust the stack).
pub const MAX_NESTING: usize = 32;

/// Appends the substitution of `text` (at byte `base` of the whole string, `depth` arguments
/// deep) to `out`.
fn expand(
    text: &str,
    base: usize,
    depth: usize,
    vars: &dyn VarLookup,
    out: &mut Template,
    errors: &mut Vec<TemplateError>,
) {
    let bytes = text.as_bytes();
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_literal(&text[literal_start..i]);
        let dollar = i;
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push_literal("$");
                i += 2;
            }
            Some(&b) if is_name_start(b) => {
                let end = (i + 1..bytes.len())
                    .find(|&j| !is_name_char(bytes[j]))
                    .unwrap_or(bytes.len());
                let name = &text[i + 1..end];
                match vars.var(name) {
                    Some(v) => out.push_literal(&v),
                    None => errors.push(TemplateError {
                        offset: base + dollar,
                        kind: TemplateErrorKind::UnsetVariable(name.to_owned()),
                    }),
                }
                i = end;
            }
            Some(b'{') => {
                let Some(close) = closing_brace(text, i + 1) else {
                    errors.push(TemplateError {
                        offset: base + dollar,
                        kind: TemplateErrorKind::Unclosed,
                    });
                    return;
                };
                if depth >= MAX_NESTING {
                    errors.push(TemplateError {
                        offset: base + dollar,
                        kind: TemplateErrorKind::BadExpression(format!(
                            "... nested more than {MAX_NESTING} deep ..."
                        )),
                    });
                    return;
                }
                braced(
                    &text[i + 2..close],
                    base + dollar,
                    depth + 1,
                    vars,
                    out,
                    errors,
                );
                i = close + 1;
            }
            // A `$` before anything else is literal, as in Compose (`a $ b`, `^x$`, `$}`).
            _ => {
                out.push_literal("$");
                i += 1;
            }
        }
        literal_start = i;
    }
    out.push_literal(&text[literal_start..]);
}

/// The text between `${` and its `}`; `dollar` is the offset of the `$`.
fn braced(
    body: &str,
    dollar: usize,
    depth: usize,
    vars: &dyn VarLookup,
    out: &mut Template,
    errors: &mut Vec<TemplateError>,
) {
    let error = |errors: &mut Vec<TemplateError>, kind| {
        errors.push(TemplateError {
            offset: dollar,
            kind,
        })
    };
    // `svc.prop` first: service names may contain `-`, which would otherwise read as `${VAR-default}`.
    if let Some((service, property)) = body.split_once('.')
        && is_service_name(service)
        && let Some(property) = known_property(property)
    {
        out.parts.push(Part::Ref(ServiceRef {
            service: service.to_owned(),
            property,
        }));
        return;
    }
    let bytes = body.as_bytes();
    let name_len = if bytes.first().is_some_and(|&b| is_name_start(b)) {
        bytes.iter().take_while(|&&b| is_name_char(b)).count()
    } else {
        0
    };
    let (name, rest) = body.split_at(name_len);
    if name.is_empty() {
        return error(errors, bad_expression(body));
    }
    if rest.is_empty() {
        match vars.var(name) {
            Some(v) => out.push_literal(&v),
            None => error(errors, TemplateErrorKind::UnsetVariable(name.to_owned())),
        }
        return;
    }
    let (colon, op_and_arg) = match rest.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let Some(op) = op_and_arg.bytes().next().filter(|b| b"-+?".contains(b)) else {
        return error(errors, bad_expression(body));
    };
    let arg = &op_and_arg[1..];
    // Where the argument starts in the whole string: `${` + name + `:`? + operator.
    let arg_base = dollar + 2 + name_len + usize::from(colon) + 1;
    let value = vars.var(name);
    let present = value.as_deref().is_some_and(|v| !colon || !v.is_empty());
    match op {
        b'-' if present => out.push_literal(value.as_deref().unwrap_or_default()),
        b'-' => expand(arg, arg_base, depth, vars, out, errors),
        b'+' if present => expand(arg, arg_base, depth, vars, out, errors),
        b'+' => out.push_literal(value.as_deref().unwrap_or_default()),
        _ if present => out.push_literal(value.as_deref().unwrap_or_default()),
        _ => {
            let mut message = Template::default();
            expand(arg, arg_base, depth, vars, &mut message, errors);
            error(
                errors,
                TemplateErrorKind::Required {
                    name: name.to_owned(),
                    message: message.to_string().replace("$$", "$"),
                },
            );
        }
    }
}

fn bad_expression(body: &str) -> TemplateErrorKind {
    if let Some((service, property)) = body.split_once('.')
        && is_service_name(service)
    {
        return TemplateErrorKind::UnknownProperty {
            reference: body.to_owned(),
            property: property.to_owned(),
        };
    }
    TemplateErrorKind::BadExpression(body.to_owned())
}

/// Like [`substitute`], for fields fixed at load time (image, user, host...): a service
/// reference there is an error.
pub fn substitute_plain(text: &str, vars: &dyn VarLookup) -> Result<String, Vec<TemplateError>> {
    let template = substitute(text, vars)?;
    let mut out = String::new();
    let mut errors = Vec::new();
    for part in template.parts {
        match part {
            Part::Literal(s) => out.push_str(&s),
            Part::Ref(r) => errors.push(TemplateError {
                offset: text.find(&r.to_string()).unwrap_or(0),
                kind: TemplateErrorKind::ReferenceNotAllowed(r),
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<Template, Vec<TemplateErrorKind>> {
        substitute(text, &env).map_err(|e| e.into_iter().map(|e| e.kind).collect())
    }

    fn lit(text: &str) -> String {
        sub(text).unwrap().as_literal().unwrap()
    }

    #[test]
    fn variables() {
        assert_eq!(lit("a-${SET}-b"), "a-value-b");
        assert_eq!(lit("${SET:-x}"), "value");
        assert_eq!(lit("${SET-x}"), "value");
        assert_eq!(lit("${SET:?no}"), "value");
        assert_eq!(lit("plain text"), "plain text");
        assert_eq!(lit(""), "");
    }

    #[test]
    fn defaults_may_hold_dots_colons_slashes_and_spaces() {
        assert_eq!(lit("${DB_HOST:-db.example.com}"), "db.example.com");
        assert_eq!(lit("${URL:-http://a.b:80/x y}"), "http://a.b:80/x y");
        assert_eq!(lit("${UNSET-d}"), "d");
        assert_eq!(lit("${UNSET:-}"), "");
    }

    #[test]
    fn colon_forms_treat_empty_as_unset() {
        assert_eq!(lit("${EMPTY:-d}"), "d");
        assert_eq!(lit("${EMPTY-d}"), "");
        assert_eq!(lit("${EMPTY?msg}"), "");
        assert_eq!(
            sub("${EMPTY:?msg}"),
            Err(vec![TemplateErrorKind::Required {
                name: "EMPTY".into(),
                message: "msg".into()
            }])
        );
    }

    #[test]
    fn required_carries_the_message() {
        let errs = sub("${X:?set X}").unwrap_err();
        assert!(errs[0].to_string().contains("set X"), "{}", errs[0]);
        let errs = sub("${X?}").unwrap_err();
        assert_eq!(errs[0].to_string(), "variable `X` is required");
    }

    #[test]
    fn dollar_escapes() {
        assert_eq!(lit("$${HOME}"), "${HOME}");
        assert_eq!(lit("cost: $$5"), "cost: $5");
        assert_eq!(lit("a $ b $"), "a $ b $");
        assert_eq!(lit("$SET.x"), "value.x");
        assert_eq!(lit("$1 $}"), "$1 $}");
    }

    #[test]
    fn unset_variables_are_all_listed() {
        let errs = sub("${A} ${SET} ${B}").unwrap_err();
        assert_eq!(
            errs,
            vec![
                TemplateErrorKind::UnsetVariable("A".into()),
                TemplateErrorKind::UnsetVariable("B".into())
            ]
        );
    }

    #[test]
    fn service_references() {
        let t = sub("http://${api.ip}:${api.port}/${db.ports.admin}@${db-1.host}").unwrap();
        let refs: Vec<String> = t.references().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "${api.ip}",
                "${api.port}",
                "${db.ports.admin}",
                "${db-1.host}"
            ]
        );
        assert_eq!(t.as_literal(), None);
        let rendered: Result<String, ()> = t.render(|r| {
            Ok(match &r.property {
                Property::Ip => "10.0.0.1".into(),
                Property::Port => "80".into(),
                Property::NamedPort(n) => n.clone(),
                Property::Host => "h".into(),
            })
        });
        assert_eq!(rendered.unwrap(), "http://10.0.0.1:80/admin@h");
    }

    #[test]
    fn unknown_property_and_bad_expressions() {
        assert!(matches!(
            sub("${api.address}").unwrap_err()[0],
            TemplateErrorKind::UnknownProperty { .. }
        ));
        assert!(matches!(
            sub("${api.ports.}").unwrap_err()[0],
            TemplateErrorKind::UnknownProperty { .. }
        ));
        for bad in ["${}", "${1X}", "${a b}", "${.ip}", "${X:x}"] {
            assert!(
                matches!(
                    sub(bad).unwrap_err()[0],
                    TemplateErrorKind::BadExpression(_)
                ),
                "{bad}"
            );
        }
        assert_eq!(sub("abc ${X"), Err(vec![TemplateErrorKind::Unclosed]));
    }

    #[test]
    fn error_offsets_point_at_the_dollar() {
        let errs = substitute("ab ${A} ${B}", &env).unwrap_err();
        assert_eq!(errs[0].offset, 3);
        assert_eq!(errs[1].offset, 8);
    }

    #[test]
    fn display_round_trips() {
        for text in ["a $$ ${api.ip} ${x.ports.p}", "$${HOME}", "plain"] {
            let t = sub(text).unwrap();
            assert_eq!(sub(&t.to_string()).unwrap(), t, "{text}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "${A:-".repeat(10_000) + &"}".repeat(10_000);
        let errs = sub(&deep).unwrap_err();
        assert!(matches!(&errs[0], TemplateErrorKind::BadExpression(e) if e.contains("nested")));
        let ok = "${A:-".repeat(MAX_NESTING) + "x" + &"}".repeat(MAX_NESTING);
        assert_eq!(lit(&ok), "x");
    }

    #[test]
    fn plain_fields_reject_references() {
        let errs = substitute_plain("img:${api.port}", &env).unwrap_err();
        assert!(matches!(
            errs[0].kind,
            TemplateErrorKind::ReferenceNotAllowed(_)
        ));
        assert_eq!(substitute_plain("x${SET}", &env).unwrap(), "xvalue");
    }
}
