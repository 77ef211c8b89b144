//! An upper bound on the length of a value written as YAML by serde-saphyr (default options)
//! and then escaped as the contents of a JSON string, computed without writing it.
//!
//! `validate` reports the error `start` would give for a project over the daemon's request
//! limit. Writing the YAML only to count it is a quarter of `validate`'s time on a large file,
//! and almost every project is far below the limit: when this bound is below it, the exact
//! length cannot be over it and the YAML need not be written at all.
//!
//! The bound is conservative by construction rather than a copy of serde-saphyr's choices:
//! - every line costs at most its indentation (two spaces per nesting level: one level more
//!   than serde-saphyr indents), a `- ` or `: ` indicator and an escaped newline (`\n`);
//! - a string is counted as written plain only when it cannot need quotes (it starts with a
//!   letter, holds only letters, digits, `_ - . /` (and `:` in values), is short and is no
//!   YAML 1.1 boolean or null word; or it is a duration such as `500ms`); any other string is
//!   counted as double-quoted with every byte at its longest escape, as a block scalar whose
//!   line breaks and spaces may each start an indented line.
//!
//! The tests compare the bound with serde-saphyr's real output for every string shape it
//! treats specially and for the example projects, so a serde-saphyr upgrade that writes
//! longer output fails them.

use serde::ser::{self, Serialize};

/// Strings longer than this may be folded (serde-saphyr folds above 80 characters).
const MAY_FOLD: usize = 64;

/// The bound for `value`, or `None` if it cannot be serialized (serde-saphyr would fail too).
pub fn json_escaped_yaml_len_bound<T: Serialize + ?Sized>(value: &T) -> Option<usize> {
    let mut bound = Bound {
        len: 64,
        depth: 0,
        text: String::new(),
    };
    value.serialize(&mut bound).ok()?;
    Some(bound.len)
}

struct Bound {
    len: usize,
    depth: usize,
    /// Reused for values written with `Display` (no allocation per value).
    text: String,
}

#[derive(Debug)]
struct Error;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot bound")
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Error
    }
}

/// Whether serde-saphyr writes `s` plain for sure (a subset of what it writes plain): a word
/// of letters, digits, `_ - . /` (and `:` inside values) starting with a letter, or a
/// duration such as `500ms` (digits and letters with an `m`, `s` or `h`, which no YAML number,
/// boolean or date has).
fn surely_plain(s: &str, key: bool) -> bool {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if bytes.len() > MAY_FOLD {
        return false;
    }
    if first.is_ascii_digit() {
        return bytes.iter().all(u8::is_ascii_alphanumeric)
            && bytes.iter().any(|b| matches!(b, b'm' | b's' | b'h'));
    }
    if !first.is_ascii_alphabetic() {
        return false;
    }
    if bytes.len() <= 5
        && [
            "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
        ]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
    {
        return false;
    }
    bytes.last() != Some(&b':')
        && bytes.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'-' | b'.' | b'/')
                || (b == b':' && !key)
        })
}

impl Bound {
    /// Indentation of a line at the current depth: serde-saphyr indents each nesting level by
    /// at most two spaces from none at the top (lists in mappings not at all), so this is one
    /// level more than it can be.
    fn indent(&self) -> usize {
        2 * self.depth
    }

    /// A new line: indentation, an indicator (`- ` or `: `) and the escaped newline.
    fn line(&mut self) {
        self.len += self.indent() + 4;
    }

    fn string(&mut self, s: &str, key: bool) {
        if surely_plain(s, key) {
            self.len += s.len();
            return;
        }
        // A line break (in a block scalar, or a fold) costs an escaped newline and an
        // indentation one level deeper.
        let wrap = 2 + self.indent() + 2;
        let may_fold = s.len() > MAY_FOLD;
        let block = may_fold || s.contains('\n');
        // Escaped quotes; a block scalar's header (`|2-`) and first line break instead; a key
        // that is not plain may be written as `? key`.
        let mut len = 4 + if block { 8 + wrap } else { 0 } + if key { 4 } else { 0 };
        for &b in s.as_bytes() {
            len += match b {
                b'"' | b'\\' => 4,
                b'\n' => wrap.max(3),
                b' ' if may_fold => wrap,
                b'\'' => 2,
                0x00..=0x1f | 0x7f => 5,
                0x20..=0x7e => 1,
                _ => 3,
            };
        }
        self.len += len;
    }

    fn scalar(&mut self, n: usize) {
        self.len += n;
    }

    fn open(&mut self) {
        // `[]` or `{}` when empty; else the contents are one level deeper.
        self.len += 2;
        self.depth += 1;
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

type Result<T = ()> = std::result::Result<T, Error>;

impl ser::Serializer for &mut Bound {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> Result {
        self.scalar(5);
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result {
        self.scalar(4);
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result {
        self.scalar(6);
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result {
        self.scalar(11);
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result {
        self.scalar(20);
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result {
        self.scalar(40);
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result {
        self.scalar(3);
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result {
        self.scalar(5);
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result {
        self.scalar(10);
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result {
        self.scalar(20);
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result {
        self.scalar(40);
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result {
        self.scalar(32);
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Result {
        self.scalar(32);
        Ok(())
    }
    fn serialize_char(self, c: char) -> Result {
        self.string(c.encode_utf8(&mut [0; 4]), false);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result {
        self.string(v, false);
        Ok(())
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result {
        use std::fmt::Write;
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        write!(text, "{value}").map_err(|_| Error)?;
        self.string(&text, false);
        self.text = text;
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        // As a list of numbers, one a line (or less as base64).
        self.len += 2 + v.len() * (self.indent() + 2 + 4 + 3);
        Ok(())
    }
    fn serialize_none(self) -> Result {
        self.scalar(4);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        self.scalar(4);
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result {
        self.scalar(4);
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        self.string(variant, false);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        self.open();
        self.line();
        self.string(variant, true);
        value.serialize(&mut *self)?;
        self.close();
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self> {
        self.open();
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self> {
        self.open();
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self> {
        self.open();
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self> {
        self.open();
        self.line();
        self.string(variant, true);
        self.open();
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self> {
        self.open();
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self> {
        self.open();
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self> {
        self.open();
        self.line();
        self.string(variant, true);
        self.open();
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Bound {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.line();
        value.serialize(&mut **self)
    }
    fn end(self) -> Result {
        self.close();
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Bound {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for &mut Bound {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for &mut Bound {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result {
        self.close();
        self.close();
        Ok(())
    }
}

/// A key in a mapping: written as a key (or, if complex, as `? ` and its own lines).
struct Key<'b>(&'b mut Bound);

impl ser::SerializeMap for &mut Bound {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.line();
        key.serialize(KeySerializer(Key(self)))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Bound {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.line();
        self.string(key, true);
        value.serialize(&mut **self)
    }
    fn skip_field(&mut self, _: &'static str) -> Result {
        Ok(())
    }
    fn end(self) -> Result {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Bound {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result {
        self.close();
        self.close();
        Ok(())
    }
}

/// Serializes a mapping key: strings are judged as keys (no `:` when plain); anything else is
/// bounded as a value, after room for a complex key's `? ` and line.
struct KeySerializer<'b>(Key<'b>);

macro_rules! key_as_value {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result {
            ser::Serializer::$method(self.complex(), v)
        })*
    };
}

impl<'b> KeySerializer<'b> {
    /// The bound for a key that is no string: room for `? ` and a line of its own.
    fn complex(self) -> &'b mut Bound {
        let bound = self.0.0;
        bound.len += bound.indent() + 4;
        bound
    }
}

impl<'b> ser::Serializer for KeySerializer<'b> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = &'b mut Bound;
    type SerializeTuple = &'b mut Bound;
    type SerializeTupleStruct = &'b mut Bound;
    type SerializeTupleVariant = &'b mut Bound;
    type SerializeMap = &'b mut Bound;
    type SerializeStruct = &'b mut Bound;
    type SerializeStructVariant = &'b mut Bound;

    key_as_value!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
    );

    fn serialize_str(self, v: &str) -> Result {
        self.0.0.string(v, true);
        Ok(())
    }
    fn serialize_none(self) -> Result {
        ser::Serializer::serialize_none(self.complex())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        ser::Serializer::serialize_unit(self.complex())
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result {
        ser::Serializer::serialize_unit_struct(self.complex(), name)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        self.0.0.string(variant, true);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        ser::Serializer::serialize_newtype_variant(self.complex(), name, index, variant, value)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<&'b mut Bound> {
        ser::Serializer::serialize_seq(self.complex(), len)
    }
    fn serialize_tuple(self, len: usize) -> Result<&'b mut Bound> {
        ser::Serializer::serialize_tuple(self.complex(), len)
    }
    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<&'b mut Bound> {
        ser::Serializer::serialize_tuple_struct(self.complex(), name, len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<&'b mut Bound> {
        ser::Serializer::serialize_tuple_variant(self.complex(), name, index, variant, len)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<&'b mut Bound> {
        ser::Serializer::serialize_map(self.complex(), len)
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<&'b mut Bound> {
        ser::Serializer::serialize_struct(self.complex(), name, len)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<&'b mut Bound> {
        ser::Serializer::serialize_struct_variant(self.complex(), name, index, variant, len)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// serde-saphyr's YAML of `value`, as long as serde_json makes it inside a string.
    fn exact<T: Serialize>(value: &T) -> usize {
        let yaml = serde_saphyr::to_string(value).unwrap();
        serde_json::to_string(&yaml).unwrap().len() - 2
    }

    #[derive(serde::Serialize)]
    enum Kind {
        Unit,
        New(String),
        Tuple(u8, String),
        Struct { a: Vec<String>, b: Option<u32> },
    }

    #[derive(serde::Serialize)]
    struct Sample {
        name: String,
        list: Vec<String>,
        nested: Vec<BTreeMap<String, Vec<String>>>,
        kinds: Vec<Kind>,
        bytes: Vec<u8>,
        float: f64,
        none: Option<String>,
        empty: Vec<String>,
        empty_map: BTreeMap<String, String>,
        odd_keys: BTreeMap<String, u64>,
    }

    /// Strings serde-saphyr writes plain, quoted, escaped, as literal and as folded blocks.
    fn strings() -> Vec<String> {
        let long_words = "word ".repeat(40);
        vec![
            "plain".into(),
            "with-dash_and.dot/slash".into(),
            "http://127.0.0.1:8080/".into(),
            "".into(),
            "yes".into(),
            "No".into(),
            "null".into(),
            "~".into(),
            "20000".into(),
            "1.5".into(),
            "2001-01-01".into(),
            "500ms".into(),
            "a: b".into(),
            "trailing:".into(),
            " lead".into(),
            "- x".into(),
            "#comment".into(),
            "a #b".into(),
            "quote\"and\\back".into(),
            "it's".into(),
            "tab\there".into(),
            "ctl\u{1}\u{7f}\u{85}\u{feff}\u{2028}".into(),
            "é字🙂".into(),
            "line1\nline2\n".into(),
            "  indented\nblock\n\n".into(),
            "multi\r\nline".into(),
            long_words.clone(),
            format!("{long_words}\nand more"),
            "x".repeat(200),
            format!("{}:", "y".repeat(100)),
            "&anchor".into(),
            "*".into(),
            ",".into(),
            "?".into(),
            "---".into(),
            "<<".into(),
            "=".into(),
            ".inf".into(),
            "0x1F".into(),
            "1:30".into(),
        ]
    }

    #[test]
    fn the_bound_is_never_below_the_escaped_yaml() {
        let strings = strings();
        let deep = |depth: usize| {
            let mut v = serde_json::json!(strings);
            for i in 0..depth {
                v = serde_json::json!({ format!("level{i}"): [v, {"k": strings}] });
            }
            v
        };
        let sample = Sample {
            name: "sample".into(),
            list: strings.clone(),
            nested: vec![
                strings
                    .iter()
                    .map(|s| (s.clone(), strings.clone()))
                    .collect(),
            ],
            kinds: vec![
                Kind::Unit,
                Kind::New("new".into()),
                Kind::New("20".into()),
                Kind::Tuple(7, "seven".into()),
                Kind::Struct {
                    a: strings.clone(),
                    b: None,
                },
                Kind::Struct {
                    a: Vec::new(),
                    b: Some(u32::MAX),
                },
            ],
            bytes: vec![0, 1, 255],
            float: -1.234_567_890_123e-300,
            none: None,
            empty: Vec::new(),
            empty_map: BTreeMap::new(),
            odd_keys: strings
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u64 * 1_000_000_007))
                .collect(),
        };
        let cases: Vec<(String, usize, usize)> = vec![
            (
                "sample".into(),
                exact(&sample),
                json_escaped_yaml_len_bound(&sample).unwrap(),
            ),
            (
                "deep 8".into(),
                exact(&deep(8)),
                json_escaped_yaml_len_bound(&deep(8)).unwrap(),
            ),
        ]
        .into_iter()
        .chain(strings.iter().map(|s| {
            let one = BTreeMap::from([(s.clone(), vec![s.clone()])]);
            (
                format!("{s:?}"),
                exact(&one),
                json_escaped_yaml_len_bound(&one).unwrap(),
            )
        }))
        .collect();
        for (name, exact, bound) in cases {
            assert!(bound >= exact, "{name}: bound {bound} < exact {exact}");
        }
    }

    /// The example projects (every kind of service, hosts, networks, health checks).
    #[test]
    fn the_bound_holds_for_the_example_projects() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for file in [
            "services.yaml",
            "adr007-compat.yaml",
            "adr007/services.yaml",
            "adr007/docker.yaml",
            "adr007/wireguard.yaml",
        ] {
            let loaded = harness_config::load(&examples.join(file));
            let project = loaded
                .project
                .unwrap_or_else(|| panic!("{file}: {:?}", loaded.errors));
            let (exact, bound) = (
                exact(&project),
                json_escaped_yaml_len_bound(&project).unwrap(),
            );
            assert!(bound >= exact, "{file}: bound {bound} < exact {exact}");
            checked += 1;
        }
        assert_eq!(checked, 5);
    }
}
