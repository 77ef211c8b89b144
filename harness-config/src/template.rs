//! The `${...}` grammar.
//!
//! A string in services.yaml may hold two kinds of `${...}`:
//! - variables (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`),
//!   substituted once, at load, from the environment;
//! - service references (`${svc.ip}`, `${svc.port}`, `${svc.host}`, `${svc.ports.NAME}`), kept in a
//!   [`Template`] because their value depends on where the consumer runs and is known only when
//!   the orchestrator starts it.
//!
//! `$$` is a literal `$`; a `$` not followed by `{` or `$` is literal too.

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
                Part::Literal(s) => f.write_str(&escape_dollars(s))?,
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

/// What the text between `${` and `}` means.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    Var {
        name: String,
        fallback: Option<Fallback>,
    },
    Ref(ServiceRef),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Fallback {
    /// `:-`/`:?` also apply to an empty value; `-`/`?` only to an unset one.
    colon: bool,
    /// `?`: an error carrying `text`; `-`: a default.
    required: bool,
    text: String,
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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

fn parse_expr(inner: &str) -> Result<Expr, TemplateErrorKind> {
    // `svc.prop` first: service names may contain `-`, which would otherwise read as `${VAR-default}`.
    if let Some((service, property)) = inner.split_once('.')
        && is_service_name(service)
        && let Some(property) = known_property(property)
    {
        return Ok(Expr::Ref(ServiceRef {
            service: service.to_owned(),
            property,
        }));
    }
    // The name runs up to the first operator character; a default may hold anything else.
    let name_end = inner.find([':', '-', '?']).unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    if !rest.is_empty() && is_var_name(name) {
        let (colon, op) = match rest.strip_prefix(':') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let fallback = if let Some(text) = op.strip_prefix('-') {
            Fallback {
                colon,
                required: false,
                text: text.to_owned(),
            }
        } else if let Some(text) = op.strip_prefix('?') {
            Fallback {
                colon,
                required: true,
                text: text.to_owned(),
            }
        } else {
            return Err(TemplateErrorKind::BadExpression(inner.to_owned()));
        };
        return Ok(Expr::Var {
            name: name.to_owned(),
            fallback: Some(fallback),
        });
    }
    if is_var_name(inner) {
        return Ok(Expr::Var {
            name: inner.to_owned(),
            fallback: None,
        });
    }
    if let Some((service, property)) = inner.split_once('.')
        && is_service_name(service)
    {
        return Err(TemplateErrorKind::UnknownProperty {
            reference: inner.to_owned(),
            property: property.to_owned(),
        });
    }
    Err(TemplateErrorKind::BadExpression(inner.to_owned()))
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
pub fn substitute(text: &str, vars: &dyn VarLookup) -> Result<Template, Vec<TemplateError>> {
    let mut out = Template::default();
    let mut errors = Vec::new();
    let mut rest = text;
    let mut base = 0;
    while let Some(i) = rest.find('$') {
        out.push_literal(&rest[..i]);
        let after = &rest[i + 1..];
        if after.starts_with('$') {
            out.push_literal("$");
            base += i + 2;
            rest = &rest[i + 2..];
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(TemplateError {
                    offset: base + i,
                    kind: TemplateErrorKind::Unclosed,
                });
                return Err(errors);
            };
            match parse_expr(&body[..close]) {
                Ok(Expr::Ref(r)) => out.parts.push(Part::Ref(r)),
                Ok(Expr::Var { name, fallback }) => {
                    match resolve_var(&name, fallback.as_ref(), vars) {
                        Ok(value) => out.push_literal(&value),
                        Err(kind) => errors.push(TemplateError {
                            offset: base + i,
                            kind,
                        }),
                    }
                }
                Err(kind) => errors.push(TemplateError {
                    offset: base + i,
                    kind,
                }),
            }
            let consumed = i + 2 + close + 1;
            base += consumed;
            rest = &rest[consumed..];
        } else {
            out.push_literal("$");
            base += i + 1;
            rest = after;
        }
    }
    out.push_literal(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
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

fn resolve_var(
    name: &str,
    fallback: Option<&Fallback>,
    vars: &dyn VarLookup,
) -> Result<String, TemplateErrorKind> {
    let value = vars.var(name);
    let Some(fallback) = fallback else {
        return value.ok_or_else(|| TemplateErrorKind::UnsetVariable(name.to_owned()));
    };
    let missing = match &value {
        None => true,
        Some(v) => fallback.colon && v.is_empty(),
    };
    match (missing, fallback.required) {
        (false, _) => Ok(value.unwrap_or_default()),
        (true, false) => Ok(fallback.text.clone()),
        (true, true) => Err(TemplateErrorKind::Required {
            name: name.to_owned(),
            message: fallback.text.clone(),
        }),
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
        assert_eq!(lit("$x"), "$x");
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
    fn plain_fields_reject_references() {
        let errs = substitute_plain("img:${api.port}", &env).unwrap_err();
        assert!(matches!(
            errs[0].kind,
            TemplateErrorKind::ReferenceNotAllowed(_)
        ));
        assert_eq!(substitute_plain("x${SET}", &env).unwrap(), "xvalue");
    }
}
