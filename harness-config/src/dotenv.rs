//! `.env` and `env_file` files, read by Compose's rules (compose-go's `dotenv` parser).
//!
//! - `KEY=value`, `KEY: value`, `export KEY=value` (space or tab after `export`), spaces around
//!   the separator ignored; a line with only `KEY` takes KEY from the environment (when set).
//! - Unquoted values end at the line end or at ` #`, trailing blanks dropped; `${VAR}` and the
//!   other interpolation forms are substituted.
//! - `'single'` quotes keep the text as written (only `\'` is unescaped); `"double"` quotes
//!   expand `\n \t \r \a \b \f \v \\ \" \$` and `\0NNN`, then substitute variables. Quoted values may
//!   span lines; what follows the closing quote on its line may be a `#` comment.
//! - A UTF-8 byte-order mark is dropped; an unterminated quote, a key with a space or a character
//!   other than letters, digits, `_ . - [ ]` is an error with its line and column.
//!
//! Variables in values are looked up in the environment first, then in the keys defined above
//! in the same file, as Compose does. Unlike Compose, an unset variable without a default is an
//! error (the same rule as in services.yaml).

use crate::template::{Part, VarLookup, substitute};

/// A problem in an env file, at a 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotenvError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Every `KEY`, value in file order (a later entry for the same key wins).
pub fn parse(text: &str, env: &dyn VarLookup) -> Result<Vec<(String, String)>, DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Parser {
        text,
        bytes: text.as_bytes(),
        i: 0,
        out: Vec::new(),
        env,
    }
    .run()
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    i: usize,
    out: Vec<(String, String)>,
    env: &'a dyn VarLookup,
}

/// Compose's blank characters inside a line (not the newline).
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

impl Parser<'_> {
    fn error(&self, i: usize, message: String) -> DotenvError {
        let before = &self.text[..i.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let column = before[line_start..].chars().count() + 1;
        DotenvError {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
            message,
        }
    }

    fn skip_blanks(&mut self) {
        while self.bytes.get(self.i).is_some_and(|&b| is_blank(b)) {
            self.i += 1;
        }
    }

    fn skip_to_line_end(&mut self) {
        while self.bytes.get(self.i).is_some_and(|&b| b != b'\n') {
            self.i += 1;
        }
    }

    fn run(mut self) -> Result<Vec<(String, String)>, DotenvError> {
        loop {
            // The next statement: skip blank lines and comment lines.
            while let Some(&b) = self.bytes.get(self.i) {
                if is_blank(b) || b == b'\n' {
                    self.i += 1;
                } else if b == b'#' {
                    self.skip_to_line_end();
                } else {
                    break;
                }
            }
            if self.i >= self.bytes.len() {
                return Ok(self.out);
            }
            self.statement()?;
        }
    }

    fn statement(&mut self) -> Result<(), DotenvError> {
        let rest = &self.text[self.i..];
        if let Some(after) = rest.strip_prefix("export")
            && after.bytes().next().is_some_and(is_blank)
        {
            self.i += "export".len();
            self.skip_blanks();
        }
        let key_start = self.i;
        let mut separator = None;
        for (offset, c) in self.text[key_start..].char_indices() {
            match c {
                '=' | ':' | '\n' => {
                    separator = Some((key_start + offset, c));
                    break;
                }
                '_' | '.' | '-' | '[' | ']' | ' ' | '\t' | '\r' => {}
                c if c.is_alphanumeric() => {}
                c => {
                    let at = key_start + offset;
                    let line = self.text[key_start..].lines().next().unwrap_or_default();
                    return Err(self.error(
                        at,
                        format!("unexpected character {c:?} in variable name {line:?}"),
                    ));
                }
            }
        }
        let (end, sep) = separator.unwrap_or((self.text.len(), '\n'));
        let key = self.text[key_start..end].trim().to_owned();
        if key.contains([' ', '\t']) {
            return Err(self.error(key_start, format!("key {key:?} cannot contain a space")));
        }
        if sep == '\n' {
            // `KEY` alone: inherited from the environment, when set there.
            if let Some(value) = self.env.var(&key) {
                self.out.push((key, value));
            }
            self.i = end;
            return Ok(());
        }
        self.i = end + 1;
        self.skip_blanks();
        let value = match self.bytes.get(self.i) {
            Some(&q @ (b'"' | b'\'')) => self.quoted(q)?,
            _ => self.unquoted()?,
        };
        self.out.push((key, value));
        Ok(())
    }

    fn unquoted(&mut self) -> Result<String, DotenvError> {
        let start = self.i;
        self.skip_to_line_end();
        let mut value = &self.text[start..self.i];
        if let Some(cut) = value.find(" #") {
            value = &value[..cut];
        }
        let value = value.trim_end();
        self.expand(value, start)
    }

    fn quoted(&mut self, quote: u8) -> Result<String, DotenvError> {
        let open = self.i;
        let mut raw = String::new();
        let mut escaped = false;
        let mut chars = self.text[open + 1..].char_indices();
        let close = loop {
            let Some((offset, c)) = chars.next() else {
                let line = self.text[open..].lines().next().unwrap_or_default();
                return Err(self.error(open, format!("unterminated quoted value {line}")));
            };
            if c != char::from(quote) {
                if !escaped && c == '\\' {
                    escaped = true;
                    continue;
                }
                if escaped {
                    escaped = false;
                    raw.push('\\');
                }
                raw.push(c);
                continue;
            }
            if escaped {
                escaped = false;
                raw.push(c);
                continue;
            }
            break open + 1 + offset;
        };
        self.i = close + 1;
        // After the closing quote: blanks and an optional comment.
        self.skip_blanks();
        if self.bytes.get(self.i) == Some(&b'#') {
            self.skip_to_line_end();
        }
        if quote == b'\'' {
            return Ok(raw);
        }
        self.expand(&expand_escapes(&raw), open + 1)
    }

    /// Substitutes variables: the environment first, then the keys above in this file.
    fn expand(&self, value: &str, at: usize) -> Result<String, DotenvError> {
        let lookup = |name: &str| {
            self.env.var(name).or_else(|| {
                self.out
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        match substitute(value, &lookup) {
            Ok(t) => Ok(t
                .parts()
                .iter()
                .map(|p| match p {
                    Part::Literal(s) => s.clone(),
                    Part::Ref(r) => r.to_string(),
                })
                .collect()),
            Err(errors) => {
                let first = &errors[0];
                // Point at the `$` when the value is spelled on one line as written.
                let verbatim = self.text.get(at..at + value.len()) == Some(value);
                let pos = if verbatim { at + first.offset } else { at };
                Err(self.error(pos, first.kind.to_string()))
            }
        }
    }
}

/// Compose's escapes in double quotes; `\$` becomes `$$` so that substitution leaves a `$`.
fn expand_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(&next) = chars.peek() else {
            out.push('\\');
            break;
        };
        let simple = match next {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'c' => None,
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '"' => Some('"'),
            '\\' => Some('\\'),
            _ => None,
        };
        if let Some(s) = simple {
            chars.next();
            out.push(s);
        } else if next == '$' {
            chars.next();
            out.push_str("$$");
        } else if next == '0' {
            chars.next();
            let mut digits = String::new();
            while digits.len() < 3
                && let Some(&d) = chars.peek()
                && d.is_ascii_digit()
            {
                digits.push(d);
                chars.next();
            }
            match u8::from_str_radix(&digits, 8) {
                Ok(v) if digits.len() == 3 => out.push(char::from(v)),
                _ => {
                    out.push('\\');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push('\\');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".into()),
            "INHERITED" => Some("from-env".into()),
            "OPTION_A" => Some("env-wins".into()),
            _ => None,
        }
    }

    fn parse_ok(text: &str) -> Vec<(String, String)> {
        parse(text, &env).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    fn one(text: &str) -> (String, String) {
        let mut all = parse_ok(text);
        assert_eq!(all.len(), 1, "{text:?}: {all:?}");
        all.remove(0)
    }

    fn value(text: &str) -> String {
        one(text).1
    }

    /// compose-go dotenv `TestParsing`, case by case.
    #[test]
    fn compose_parsing_cases() {
        let cases: &[(&str, &str, &str)] = &[
            ("FOO=bar", "FOO", "bar"),
            ("FOO =bar", "FOO", "bar"),
            ("FOO= bar", "FOO", "bar"),
            (r#"FOO="bar""#, "FOO", "bar"),
            ("FOO='bar'", "FOO", "bar"),
            (r#"FOO="escaped\"bar""#, "FOO", r#"escaped"bar"#),
            (r#"FOO="\"quoted\"""#, "FOO", r#""quoted""#),
            (r#"FOO="'d'""#, "FOO", "'d'"),
            ("OPTION_B: 1", "OPTION_B", "1"),
            ("OPTION_B: Foo=bar", "OPTION_B", "Foo=bar"),
            ("OPTION_B=1:B", "OPTION_B", "1:B"),
            ("export OPTION_B=2", "OPTION_B", "2"),
            (r"export OPTION_B='\n'", "OPTION_B", r"\n"),
            ("export exportFoo=2", "exportFoo", "2"),
            ("exportFOO=2", "exportFOO", "2"),
            ("export_FOO =2", "export_FOO", "2"),
            ("export.FOO= 2", "export.FOO", "2"),
            ("export\tOPTION_B=2", "OPTION_B", "2"),
            ("  export OPTION_B=2", "OPTION_B", "2"),
            ("\texport OPTION_B=2", "OPTION_B", "2"),
            (r#"export OPTION_B="export A""#, "OPTION_B", "export A"),
            (r#"FOO="bar\nbaz""#, "FOO", "bar\nbaz"),
            (r"FOO=a\tb", "FOO", r"a\tb"),
            (r#"FOO="a\tb""#, "FOO", "a\tb"),
            (
                r#"KEY="Z\aZ\bZ\fZ\nZ\rZ\tZ\vZ\\Z\0123Z""#,
                "KEY",
                "Z\u{7}Z\u{8}Z\u{c}Z\nZ\rZ\tZ\u{b}Z\\ZSZ",
            ),
            ("FOO.BAR=foobar", "FOO.BAR", "foobar"),
            ("FOO=foobar=", "FOO", "foobar="),
            ("FOO=bar ", "FOO", "bar"),
            ("FOO=bar # this is foo", "FOO", "bar"),
            ("FOO=bar #this is foo", "FOO", "bar"),
            ("FOO=bar #", "FOO", "bar"),
            (
                "FOO=123#not-an-inline-comment",
                "FOO",
                "123#not-an-inline-comment",
            ),
            (r#"FOO="bar#baz""#, "FOO", "bar#baz"),
            (r##"FOO="bar#baz"#"##, "FOO", "bar#baz"),
            (r#"FOO="bar#baz" # comment"#, "FOO", "bar#baz"),
            ("FOO='bar#baz' # comment", "FOO", "bar#baz"),
            (r#"FOO="bar#baz#bang" # comment"#, "FOO", "bar#baz#bang"),
            (r#"FOO="ba#r""#, "FOO", "ba#r"),
            ("FOO='ba#r'", "FOO", "ba#r"),
            (r#"FOO="bar\n\ b\az""#, "FOO", "bar\n\\ b\u{7}z"),
            (r#"FOO="bar\\\n\ b\az""#, "FOO", "bar\\\n\\ b\u{7}z"),
            (r#"FOO="bar\\r\ b\az""#, "FOO", "bar\\r\\ b\u{7}z"),
            (r#"FOO="bar\nbaz\\""#, "FOO", "bar\nbaz\\"),
            (r#"="value""#, "", "value"),
            (" KEY =value", "KEY", "value"),
            ("   KEY=value", "KEY", "value"),
            ("\tKEY=value", "KEY", "value"),
            (r#"KEY="\0123""#, "KEY", "S"),
            (r#"KEY="\x07""#, "KEY", r"\x07"),
            (r#"KEY="\u12e4""#, "KEY", r"\u12e4"),
            (r#"KEY="\U00101234""#, "KEY", r"\U00101234"),
        ];
        for (text, key, want) in cases {
            assert_eq!(
                one(text),
                ((*key).to_owned(), (*want).to_owned()),
                "{text:?}"
            );
        }
        assert!(parse("lol$wut", &env).is_err());
    }

    /// compose-go `fixtures/quoted.env` (`TestLoadQuotedEnv`), multi-line values included.
    #[test]
    fn compose_quoted_fixture() {
        let text = "OPTION_A='1'\nOPTION_B='2'\nOPTION_C=''\nOPTION_D='\\n'\nOPTION_E=\"1\"\n\
OPTION_F=\"2\"\nOPTION_G=\"\"\nOPTION_H=\"\\n\"\nOPTION_I = \"echo 'asd'\" # Inline comment\n\
OPTION_J = 'first line\nsecond line\nthird line\nand so on'\nOPTION_K='Let\\'s go!'\n\
OPTION_Z = \"last value\"\n# some comments\nfoo=\"\n  a\n  multine\n  value\n\"\n";
        // Parsed without the environment, so OPTION_A is the file's.
        let got = parse(text, &|_: &str| None).unwrap();
        let want = [
            ("OPTION_A", "1"),
            ("OPTION_B", "2"),
            ("OPTION_C", ""),
            ("OPTION_D", "\\n"),
            ("OPTION_E", "1"),
            ("OPTION_F", "2"),
            ("OPTION_G", ""),
            ("OPTION_H", "\n"),
            ("OPTION_I", "echo 'asd'"),
            ("OPTION_J", "first line\nsecond line\nthird line\nand so on"),
            ("OPTION_K", "Let's go!"),
            ("OPTION_Z", "last value"),
            ("foo", "\n  a\n  multine\n  value\n"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    /// compose-go `TestExpanding` and `TestVariableStringValueSeparator`.
    #[test]
    fn compose_expansion_cases() {
        let get = |text: &str, key: &str| {
            parse_ok(text)
                .into_iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        };
        assert_eq!(get("FOO=test\nBAR=$FOO", "BAR").as_deref(), Some("test"));
        assert_eq!(
            get("FOO=test\nBAR=${FOO}bar", "BAR").as_deref(),
            Some("testbar")
        );
        assert_eq!(
            get("FOO=test\nBAR=\"quote $FOO\"", "BAR").as_deref(),
            Some("quote test")
        );
        assert_eq!(
            get("BAR='quote $FOO'", "BAR").as_deref(),
            Some("quote $FOO")
        );
        assert_eq!(get(r#"FOO="foo\$BAR""#, "FOO").as_deref(), Some("foo$BAR"));
        assert_eq!(
            get(r#"FOO="foo\${BAR}""#, "FOO").as_deref(),
            Some("foo${BAR}")
        );
        assert_eq!(
            get("FOO=test\nBAR=\"foo\\${FOO} ${FOO}\"", "BAR").as_deref(),
            Some("foo${FOO} test")
        );
        assert_eq!(
            value("TEST_URLS=\"stratum+tcp://a:3333\nstratum+tcp://a:443\""),
            "stratum+tcp://a:3333\nstratum+tcp://a:443"
        );
        // The same operators as services.yaml, and the environment before the file.
        assert_eq!(
            get("A=${NOPE:-x}${HOME:+/y}\nOPTION_A=file\nB=$OPTION_A", "B").as_deref(),
            Some("env-wins")
        );
        assert_eq!(value("A=${NOPE:-x}${HOME:+/y}"), "x/y");
    }

    /// The deliberate difference: Compose expands an unset variable to "", harness refuses it.
    #[test]
    fn unset_variable_is_an_error_with_its_position() {
        let e = parse("A=1\nBAR=x$FOO", &env).unwrap_err();
        assert_eq!((e.line, e.column), (2, 6));
        assert!(e.message.contains("FOO"), "{e:?}");
    }

    /// compose-go `TestUnterminatedQuotes`.
    #[test]
    fn unterminated_quotes() {
        for text in [
            r#"KEY=""#,
            r#"KEY="value"#,
            r#"KEY="value\""#,
            r#"KEY="value'"#,
            "KEY='",
            "KEY='value",
            r"KEY='value\'",
            r#"KEY='value""#,
        ] {
            let e = parse(text, &env).unwrap_err();
            assert!(
                e.message.contains("unterminated quoted value"),
                "{text}: {e:?}"
            );
            assert_eq!((e.line, e.column), (1, 5), "{text}");
        }
    }

    /// compose-go `TestLinesToIgnore`, `TestUTF8BOM`, inherited variables, invalid lines.
    #[test]
    fn ignored_lines_bom_inheritance_and_errors() {
        assert!(parse_ok("\n\r\n\t\t \n# Comment\n\t # comment\n").is_empty());
        assert_eq!(one("\u{feff}OPTION_A=1"), ("OPTION_A".into(), "1".into()));
        assert_eq!(
            parse_ok("INHERITED\nNOT_SET\nX=1"),
            vec![
                ("INHERITED".to_owned(), "from-env".to_owned()),
                ("X".to_owned(), "1".to_owned())
            ]
        );
        let e = parse("A=1\nINVALID LINE\nzot=qix", &env).unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("space"), "{e:?}");
        let e = parse("A=1\n  bad!key=1", &env).unwrap_err();
        assert_eq!((e.line, e.column), (2, 6));
        // Later entries win.
        assert_eq!(
            parse_ok("A=1\nA=2"),
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("A".to_owned(), "2".to_owned())
            ]
        );
    }
}
