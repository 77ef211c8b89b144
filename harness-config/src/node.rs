//! A YAML document as a tree of spanned nodes.
//!
//! The tree is built in one pass from the YAML parser's event stream (granit-parser, the parser
//! under serde-saphyr), with limits on aliases, alias expansion, nesting depth and node count,
//! rather than deserialized into the model, so that decoding can report *every* problem with its
//! position instead of stopping at the first one, as a derived `Deserialize` would. Plain
//! scalars are resolved as serde-saphyr resolves them for an untyped value (YAML 1.2 core schema,
//! strict booleans), so that `config show` output, written by serde-saphyr, loads back the same.

use std::borrow::Cow;
use std::collections::HashMap;

use rustc_hash::FxHashSet;

use granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// Where a node starts in the source: 24 bytes, as every node and every recorded field path
/// carries one (files are at most [`crate::MAX_FILE_BYTES`], so offsets fit 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// Byte offset into the source, when known.
    pub offset: Option<u32>,
    /// Length in bytes, when known.
    pub len: u32,
    /// Which of the loaded files (0: the first `-f`; later ones are override files).
    pub file: u16,
}

/// A byte offset as stored in [`Pos`] (`None` past 4 GiB, which no loaded file reaches).
pub(crate) fn offset32(offset: Option<usize>) -> Option<u32> {
    offset.and_then(|o| u32::try_from(o).ok())
}

impl Pos {
    pub(crate) fn from_span(span: &Span, file: u16) -> Self {
        let (start, end) = (span.start.byte_offset(), span.end.byte_offset());
        Pos {
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            column: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
            offset: offset32(start),
            len: match (start, end) {
                (Some(s), Some(e)) => u32::try_from(e.saturating_sub(s)).unwrap_or(u32::MAX),
                _ => 0,
            },
            file,
        }
    }
}

/// One YAML node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// The kinds of YAML nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What the user wrote, in words, for "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A scalar key as text, borrowed when it is a string (no copy for the common case).
    pub fn key_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            other => other.scalar_text().map(Cow::Owned),
        }
    }

    /// The scalar as text, for fields that take strings: YAML `8080` or `true` is fine there.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(format!("{f:?}")),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Limits on hostile input, checked while the tree is built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Deepest nesting of sequences and mappings.
    pub max_depth: usize,
    /// Most parser events (nodes) in the document.
    pub max_nodes: usize,
    /// Most alias (`*name`) uses.
    pub max_aliases: usize,
    /// Most nodes copied from anchors by aliases (bounds alias bombs).
    pub max_alias_expansion: usize,
}

/// A parse failure: where, when known, and what.
pub(crate) type ParseError = (Option<Pos>, String);

/// Parses one YAML document into the spanned tree, every node tagged with `file`.
/// An empty text is a null node.
pub(crate) fn parse(text: &str, file: u16, limits: Limits) -> Result<Node, ParseError> {
    let mut builder = Builder {
        file,
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        events: 0,
        aliases: 0,
        expanded: 0,
    };
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => builder.event(event, &span)?,
            Err(e) => {
                let m = e.marker();
                let pos = Pos {
                    line: u32::try_from(m.line()).unwrap_or(u32::MAX),
                    column: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
                    offset: offset32(m.byte_offset()),
                    len: 0,
                    file,
                };
                let info = e.info();
                let lower = info.to_ascii_lowercase();
                // The scanner's own limit on flow nesting can come before the builder's.
                let message = if ["recursion", "nesting", "depth"]
                    .iter()
                    .any(|w| lower.contains(w))
                {
                    format!(
                        "the YAML nests deeper than {} levels, which services.yaml never needs ({info})",
                        builder.limits.max_depth
                    )
                } else {
                    info
                };
                return Err((Some(pos).filter(|p| p.line > 0), message));
            }
        }
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        pos: Pos {
            file,
            ..Pos::default()
        },
    }))
}

/// An open sequence or mapping.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// The last key was `<<`: the next value is merged.
        merge_next: bool,
        merges: Vec<Merge>,
    },
}

/// The value of a `<<` key.
enum Merge {
    /// Written in place (`<<: {a: 1}`, `<<: [*a, *b]`).
    Node(Node),
    /// An alias (`<<: *defaults`), used where written: its entries are copied only for the
    /// keys the mapping does not set itself.
    Alias(usize, Pos),
}

struct Builder {
    file: u16,
    limits: Limits,
    stack: Vec<Frame>,
    /// Anchored nodes by the parser's anchor id, with their node counts.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    events: usize,
    aliases: usize,
    expanded: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), ParseError> {
        let pos = Pos::from_span(span, self.file);
        self.events += 1;
        if self.events > self.limits.max_nodes {
            return Err((
                Some(pos),
                format!(
                    "the YAML has more than {} nodes: it exceeds the parser's limits for hostile input",
                    self.limits.max_nodes
                ),
            ));
        }
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err((
                        Some(pos),
                        "a services file holds one YAML document; found a second (`---`)"
                            .to_owned(),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if style == ScalarStyle::Plain
                    && tag.is_none()
                    && text == "<<"
                    && let Some(Frame::Map {
                        key: None,
                        merge_next: merge_next @ false,
                        ..
                    }) = self.stack.last_mut()
                {
                    *merge_next = true;
                    return Ok(());
                }
                let value = resolve(text, style, tag.as_deref(), pos)?;
                let node = Node { value, pos };
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.attach(node)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                self.open(pos)?;
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(_, anchor, _) => {
                self.open(pos)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    merge_next: false,
                    merges: Vec::new(),
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { pos, anchor, items }) = self.stack.pop() {
                    self.close(
                        Node {
                            value: Value::Seq(items),
                            pos,
                        },
                        anchor,
                    )?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    merges,
                    ..
                }) = self.stack.pop()
                {
                    let entries = finish_map(entries, merges, &self.anchors)?;
                    self.close(
                        Node {
                            value: Value::Map(entries),
                            pos,
                        },
                        anchor,
                    )?;
                }
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > self.limits.max_aliases {
                    return Err((
                        Some(pos),
                        format!(
                            "too many aliases (more than {}): refused to expand more (a YAML alias bomb?)",
                            self.limits.max_aliases
                        ),
                    ));
                }
                let Some((node, size)) = self.anchors.get(&id) else {
                    return Err((
                        Some(pos),
                        "this alias refers to its own anchor (a recursive alias), which services.yaml cannot use"
                            .to_owned(),
                    ));
                };
                self.expanded += size;
                if self.expanded > self.limits.max_alias_expansion {
                    return Err((
                        Some(pos),
                        format!(
                            "too many alias expansions (more than {} nodes copied; a YAML alias bomb?): refused to expand more",
                            self.limits.max_alias_expansion
                        ),
                    ));
                }
                // A `<<: *alias` merge copies what it adds when the mapping closes.
                if let Some(Frame::Map {
                    merge_next: merge_next @ true,
                    merges,
                    ..
                }) = self.stack.last_mut()
                {
                    *merge_next = false;
                    merges.push(Merge::Alias(id, pos));
                    return Ok(());
                }
                // The copy answers to where it is used; its inside to where it was written.
                let mut node = node.clone();
                node.pos = Pos {
                    file: self.file,
                    ..pos
                };
                self.attach(node)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A collection opens: checks the depth limit.
    fn open(&self, pos: Pos) -> Result<(), ParseError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err((
                Some(pos),
                format!(
                    "the YAML nests deeper than {} levels, which services.yaml never needs",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(())
    }

    /// A collection closed: records its anchor and attaches it to its parent.
    fn close(&mut self, node: Node, anchor: usize) -> Result<(), ParseError> {
        if anchor != 0 {
            let size = count(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        self.attach(node)
    }

    fn attach(&mut self, node: Node) -> Result<(), ParseError> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                key,
                merge_next,
                merges,
                ..
            }) => {
                if *merge_next {
                    *merge_next = false;
                    merges.push(Merge::Node(node));
                } else if let Some(k) = key.take() {
                    entries.push((k, node));
                } else {
                    *key = Some(node);
                }
            }
        }
        Ok(())
    }
}

/// Nodes in a tree (the cost of copying it for an alias).
fn count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| count(k) + count(v)).sum(),
        _ => 0,
    }
}

/// A scalar key's identity, for duplicate and merge checks.
#[derive(Hash, PartialEq, Eq)]
enum KeyId<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(u64),
    Str(&'a str),
}

fn key_id(value: &Value) -> Option<KeyId<'_>> {
    Some(match value {
        Value::Null => KeyId::Null,
        Value::Bool(b) => KeyId::Bool(*b),
        Value::Int(i) => KeyId::Int(*i),
        Value::Float(f) => KeyId::Float(f.to_bits()),
        Value::Str(s) => KeyId::Str(s),
        Value::Seq(_) | Value::Map(_) => return None,
    })
}

/// Mappings with at most this many entries are checked for duplicate keys without hashing.
const SMALL_MAP: usize = 8;

fn duplicate_key(k: &Node) -> ParseError {
    let name = k.value.scalar_text().unwrap_or_default();
    (
        Some(k.pos),
        format!("duplicate mapping key `{name}`: each key may appear once in a mapping"),
    )
}

/// Keys seen in one mapping: a list for the usual handful, a hash set for more.
enum Seen<'a> {
    Few(Vec<KeyId<'a>>),
    Many(FxHashSet<KeyId<'a>>),
}

impl<'a> Seen<'a> {
    fn with_capacity(n: usize) -> Self {
        if n <= 2 * SMALL_MAP {
            Seen::Few(Vec::with_capacity(n))
        } else {
            Seen::Many(FxHashSet::with_capacity_and_hasher(n, Default::default()))
        }
    }

    /// Adds `id`; false if it was there.
    fn insert(&mut self, id: KeyId<'a>) -> bool {
        match self {
            Seen::Few(ids) if ids.contains(&id) => false,
            Seen::Few(ids) if ids.len() < 2 * SMALL_MAP => {
                ids.push(id);
                true
            }
            Seen::Few(ids) => {
                let mut set: FxHashSet<KeyId<'a>> = ids.drain(..).collect();
                let added = set.insert(id);
                *self = Seen::Many(set);
                added
            }
            Seen::Many(set) => set.insert(id),
        }
    }
}

/// Refuses duplicate keys, then adds the entries of `<<` merges that no explicit key (and no
/// earlier merge) set, after the explicit entries, as YAML's merge key says.
fn finish_map(
    mut entries: Vec<(Node, Node)>,
    merges: Vec<Merge>,
    anchors: &HashMap<usize, (Node, usize)>,
) -> Result<Vec<(Node, Node)>, ParseError> {
    // Most mappings are small and merge nothing: their keys are compared pairwise, without
    // building a hash set.
    if merges.is_empty() && entries.len() <= SMALL_MAP {
        for (i, (k, _)) in entries.iter().enumerate() {
            if let Some(id) = key_id(&k.value)
                && entries[..i]
                    .iter()
                    .any(|(earlier, _)| key_id(&earlier.value).as_ref() == Some(&id))
            {
                return Err(duplicate_key(k));
            }
        }
        return Ok(entries);
    }
    let mut taken: Vec<(Node, Node)> = Vec::new();
    {
        let mut seen = Seen::with_capacity(entries.len() + 4 * merges.len());
        for (k, _) in &entries {
            if let Some(id) = key_id(&k.value)
                && !seen.insert(id)
            {
                return Err(duplicate_key(k));
            }
        }
        for merge in &merges {
            let (pos, value) = match merge {
                Merge::Node(node) => (node.pos, &node.value),
                Merge::Alias(id, pos) => match anchors.get(id) {
                    Some((node, _)) => (*pos, &node.value),
                    None => return Err((Some(*pos), "an alias without its anchor".to_owned())),
                },
            };
            let sources: Vec<&Vec<(Node, Node)>> = match value {
                Value::Map(more) => vec![more],
                Value::Seq(items) => items
                    .iter()
                    .map(|item| match &item.value {
                        Value::Map(more) => Ok(more),
                        other => Err((
                            Some(item.pos),
                            format!("a `<<` merge takes mappings; found {}", other.kind_name()),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err((
                        Some(pos),
                        format!(
                            "a `<<` merge takes a mapping or a list of mappings; found {}",
                            other.kind_name()
                        ),
                    ));
                }
            };
            for more in sources {
                for (k, v) in more {
                    if key_id(&k.value).is_none_or(|id| seen.insert(id)) {
                        taken.push((k.clone(), v.clone()));
                    }
                }
            }
        }
    }
    entries.append(&mut taken);
    Ok(entries)
}

/// The value of a scalar, as serde-saphyr resolves it for an untyped value with strict
/// booleans: quoted scalars are strings; plain ones null, a boolean, an integer, a float or a
/// string, in that order; a core-schema tag (`!!str`, `!!int`...) decides instead.
fn resolve(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
) -> Result<Value, ParseError> {
    let invalid = |what: &str| {
        Err((
            Some(pos),
            format!("`{text}` is tagged {what} but is not one"),
        ))
    };
    if let Some(tag) = tag {
        if tag.handle() == "tag:yaml.org,2002:" {
            match tag.suffix() {
                "str" => return Ok(Value::Str(text.into_owned())),
                "null" => return Ok(Value::Null),
                "bool" => {
                    return match yaml_bool(&text) {
                        Some(b) => Ok(Value::Bool(b)),
                        None => invalid("a boolean"),
                    };
                }
                "int" => {
                    return match yaml_int(&text) {
                        Some(i) => Ok(Value::Int(i)),
                        None => invalid("an integer"),
                    };
                }
                "float" => {
                    return match yaml_float(&text) {
                        Some(Ok(f)) => Ok(Value::Float(f)),
                        Some(Err(())) => non_finite(&text, pos),
                        None => match yaml_int(&text) {
                            Some(i) => Ok(Value::Float(i as f64)),
                            None => invalid("a number"),
                        },
                    };
                }
                _ => {}
            }
        } else if tag.handle() == "!" && tag.suffix().is_empty() {
            return Ok(Value::Str(text.into_owned()));
        }
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.into_owned()));
    }
    // Only these first bytes can start a null, a boolean or a number (names, paths and URLs
    // are strings at once).
    if let Some(first) = text.as_bytes().first()
        && !matches!(
            first,
            b'0'..=b'9'
                | b'+'
                | b'-'
                | b'.'
                | b'~'
                | b'n'
                | b'N'
                | b't'
                | b'T'
                | b'f'
                | b'F'
                | b'i'
                | b'I'
                | b' '
                | b'\t'
                | b'\r'
                | b'\n'
        )
    {
        return Ok(Value::Str(text.into_owned()));
    }
    if matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = yaml_bool(&text) {
        return Ok(Value::Bool(b));
    }
    if let Some(i) = yaml_int(&text) {
        return Ok(Value::Int(i));
    }
    match yaml_float(&text) {
        Some(Ok(f)) => Ok(Value::Float(f)),
        Some(Err(())) => non_finite(&text, pos),
        None => Ok(Value::Str(text.into_owned())),
    }
}

fn non_finite(text: &str, pos: Pos) -> Result<Value, ParseError> {
    Err((
        Some(pos),
        format!("`{text}` is not a finite number; quote it if it is meant as text"),
    ))
}

fn yaml_bool(t: &str) -> Option<bool> {
    match t.trim_matches([' ', '\t', '\r', '\n']) {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A YAML 1.2 core integer that fits 64 bits (`-` signed, else unsigned): decimal without a
/// leading zero, `0x`, `0o` or `0b`, with `_` between digits.
fn yaml_int(s: &str) -> Option<i128> {
    let t = s.trim_matches([' ', '\t', '\r', '\n']);
    let (negative, rest) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (radix, digits) = if let Some(d) = rest.strip_prefix("0x").or(rest.strip_prefix("0X")) {
        (16, d)
    } else if let Some(d) = rest.strip_prefix("0o").or(rest.strip_prefix("0O")) {
        (8, d)
    } else if let Some(d) = rest.strip_prefix("0b").or(rest.strip_prefix("0B")) {
        (2, d)
    } else {
        if rest.starts_with('0') && rest != "0" {
            return None;
        }
        (10, rest)
    };
    let bytes = digits.as_bytes();
    let mut magnitude: u128 = 0;
    let mut saw = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let prev_ok = i > 0 && bytes[i - 1] != b'_';
            let next_ok = i + 1 < bytes.len() && bytes[i + 1] != b'_';
            if !prev_ok || !next_ok {
                return None;
            }
            continue;
        }
        let d = char::from(b).to_digit(radix)?;
        magnitude = magnitude
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(d))?;
        saw = true;
    }
    if !saw {
        return None;
    }
    if negative {
        let value = -i128::try_from(magnitude).ok()?;
        (value >= i128::from(i64::MIN)).then_some(value)
    } else {
        i128::try_from(magnitude)
            .ok()
            .filter(|_| magnitude <= u128::from(u64::MAX))
    }
}

/// A YAML 1.2 float: `Ok` when finite, `Err` for `.inf`/`.nan` spellings and numerals that
/// overflow, `None` when the text is no number.
fn yaml_float(s: &str) -> Option<Result<f64, ()>> {
    let t = s.trim_matches([' ', '\t', '\r', '\n']);
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if matches!(
        unsigned,
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF"
    ) {
        return Some(Err(()));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Some(Ok(v)),
        Ok(v) if v.is_infinite() && unsigned.as_bytes().first().is_some_and(u8::is_ascii_digit) => {
            Some(Err(()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_depth: 64,
        max_nodes: 1_000_000,
        max_aliases: 10_000,
        max_alias_expansion: 100_000,
    };

    #[test]
    fn keys_and_values_carry_positions() {
        let node = parse("a:\n  bb: [1, x]\n", 0, LIMITS).unwrap();
        let Value::Map(top) = &node.value else {
            panic!("not a map: {node:?}")
        };
        let (k, v) = &top[0];
        assert_eq!(k.value, Value::Str("a".into()));
        assert_eq!((k.pos.line, k.pos.column), (1, 1));
        let Value::Map(inner) = &v.value else {
            panic!("not a map")
        };
        assert_eq!((inner[0].0.pos.line, inner[0].0.pos.column), (2, 3));
        assert_eq!(inner[0].0.pos.offset, Some(5));
        let Value::Seq(items) = &inner[0].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[0].value, Value::Int(1));
        assert_eq!((items[1].pos.line, items[1].pos.column), (2, 11));
    }

    fn map(node: &Node) -> Vec<(String, &Node)> {
        let Value::Map(entries) = &node.value else {
            panic!("not a map: {node:?}")
        };
        entries
            .iter()
            .map(|(k, v)| (k.value.scalar_text().unwrap_or_default(), v))
            .collect()
    }

    #[test]
    fn scalars_resolve_as_serde_saphyr_resolves_them() {
        let node = parse(
            "a: 1\nb: -2\nc: 0x1F\nd: 1_000\ne: 0123\nf: 1.5\ng: true\nh: yes\ni: ~\nj: '1'\nk: !!str 2\nl: inf\nm: 1e5\nn:\n",
            3,
            LIMITS,
        )
        .unwrap();
        let values: Vec<Value> = map(&node)
            .into_iter()
            .map(|(_, v)| v.value.clone())
            .collect();
        assert_eq!(
            values,
            vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Int(31),
                Value::Int(1000),
                Value::Float(123.0),
                Value::Float(1.5),
                Value::Bool(true),
                Value::Str("yes".into()),
                Value::Null,
                Value::Str("1".into()),
                Value::Str("2".into()),
                Value::Str("inf".into()),
                Value::Float(100_000.0),
                Value::Null,
            ]
        );
        assert_eq!(node.pos.file, 3);
        assert!(parse("a: .inf\n", 0, LIMITS).is_err());
    }

    #[test]
    fn merge_keys_fill_in_what_is_not_set_and_duplicates_are_refused() {
        let text = "x: &d {a: 1, b: 2}\ny: &e {c: 3}\ns:\n  <<: [*d, *e]\n  b: 9\n";
        let node = parse(text, 0, LIMITS).unwrap();
        let top = map(&node);
        let s: Vec<(String, Value)> = map(top[2].1)
            .into_iter()
            .map(|(k, v)| (k, v.value.clone()))
            .collect();
        assert_eq!(
            s,
            vec![
                ("b".into(), Value::Int(9)),
                ("a".into(), Value::Int(1)),
                ("c".into(), Value::Int(3)),
            ]
        );
        let (pos, message) = parse("a: 1\nb: 2\na: 3\n", 0, LIMITS).unwrap_err();
        assert!(message.contains("duplicate"), "{message}");
        assert_eq!(pos.map(|p| p.line), Some(3));
        let (_, message) = parse("a: &a [*a]\n", 0, LIMITS).unwrap_err();
        assert!(message.contains("alias"), "{message}");
    }

    /// `<<: *alias` copies the anchor's entries when the mapping closes: only the keys it does
    /// not set, with the positions where the anchor wrote them, from the definition the alias
    /// named (an anchor name defined again later is another anchor).
    #[test]
    fn alias_merges_take_the_anchor_named_and_keep_its_positions() {
        let text = "a: &d {x: 1, y: 2}\nb:\n  <<: *d\n  y: 3\nc: &d {x: 9}\ne:\n  <<: *d\n";
        let node = parse(text, 0, LIMITS).unwrap();
        let top = map(&node);
        let b: Vec<(String, Value, u32)> = map(top[1].1)
            .into_iter()
            .map(|(k, v)| (k, v.value.clone(), v.pos.line))
            .collect();
        assert_eq!(
            b,
            vec![
                ("y".into(), Value::Int(3), 4),
                ("x".into(), Value::Int(1), 1)
            ]
        );
        let e: Vec<(String, Value)> = map(top[3].1)
            .into_iter()
            .map(|(k, v)| (k, v.value.clone()))
            .collect();
        assert_eq!(e, vec![("x".into(), Value::Int(9))]);
        // A merge of something that is not a mapping is refused where the alias is.
        let (pos, message) = parse("a: &s text\nb:\n  <<: *s\n", 0, LIMITS).unwrap_err();
        assert!(message.contains("`<<` merge"), "{message}");
        assert_eq!(pos.map(|p| (p.line, p.column)), Some((3, 7)));
    }
}
