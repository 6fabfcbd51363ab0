//! A fast reader for the plain YAML that manifests are written in.
//!
//! serde-saphyr spends about 130 ns per byte of a manifest (a 113 KB file of
//! 100 Services and their slices: 15 ms), most of it in its event machinery
//! (spans, comment attachment, budget accounting) rather than in YAML itself.
//! [`read`] reads the subset that generated and hand-written manifests use
//! (block mappings and sequences, flow collections, plain and single-line
//! quoted scalars, comments) about ten times faster, into exactly the
//! `serde_json::Value`s serde-saphyr returns for it (null documents left
//! out). Anything outside the subset (anchors, tags, block scalars,
//! multi-line scalars, tabs, non-ASCII text, numbers other than plain
//! decimal integers, duplicate keys, anything malformed...) makes it give up
//! with `None`, and the text is read by serde-saphyr, which also reports the
//! errors: this reader never rejects a text.

use serde_json::{Map, Value};

/// Deeper nesting is left to serde-saphyr (and its depth budget).
const MAX_DEPTH: usize = 64;
/// YAML's limit on the length of an implicit key.
const MAX_KEY: usize = 1024;
/// More documents are left to serde-saphyr (and its document budget).
const MAX_DOCUMENTS: usize = 1_000_000;

/// One document of a text, as [`read`] found it.
#[derive(Debug, PartialEq)]
pub(super) enum Document {
    /// A document read (not null).
    Read(Value),
    /// The text of a document outside the subset (possibly several
    /// documents to another reader: YAML's line breaks are not only `\n`).
    Other(std::ops::Range<usize>),
}

/// The documents of `text` (null and empty ones left out), each read or
/// left to another reader when not in the subset (see the module
/// documentation); `None` when the text cannot be split into documents at
/// its `---` lines (directives, `...`, content after `---`, line breaks
/// other than `\n`).
pub(super) fn read(text: &str) -> Option<Vec<Document>> {
    let b = text.as_bytes();
    let mut docs = Vec::new();
    let mut count = 0usize;
    let mut start = 0;
    let mut line = 0;
    if b.contains(&b'\r') {
        return None;
    }
    while line < b.len() {
        let eol = b[line..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |n| line + n);
        let l = &b[line..eol];
        if l.starts_with(b"---") {
            if !l[3..].iter().all(|&c| c == b' ') {
                return None;
            }
            document(text, start, line, &mut docs);
            count += 1;
            if count >= MAX_DOCUMENTS {
                return None;
            }
            start = (eol + 1).min(b.len());
        } else if l.starts_with(b"...") || l.starts_with(b"%") {
            return None;
        }
        line = eol + 1;
    }
    document(text, start, b.len(), &mut docs);
    Some(docs)
}

/// Reads the document in `text[start..end]`, adding it to `docs` unless null.
fn document(text: &str, start: usize, end: usize, docs: &mut Vec<Document>) {
    match read_document(text, start, end) {
        Some(Some(v)) => docs.push(Document::Read(v)),
        Some(None) => {}
        None => docs.push(Document::Other(start..end)),
    }
}

/// The document in `text[start..end]` (`Some(None)` when null), or `None`
/// when it is not in the subset.
fn read_document(text: &str, start: usize, end: usize) -> Option<Option<Value>> {
    // Printable ASCII and line feeds only: no tabs, BOMs, or characters
    // YAML forbids or reads as line breaks.
    if !text.as_bytes()[start..end]
        .iter()
        .all(|&c| c == b'\n' || (0x20..0x7f).contains(&c))
    {
        return None;
    }
    let mut p = Reader {
        text,
        b: text.as_bytes(),
        pos: start,
        end,
        depth: 0,
    };
    let Some(indent) = p.next_line() else {
        return Some(None);
    };
    p.pos += indent;
    let v = p.block_node(indent, -1)?;
    if p.next_line().is_some() {
        return None;
    }
    Some((!v.is_null()).then_some(v))
}

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    /// The end of the document.
    end: usize,
    depth: usize,
}

fn is_space_or_eol(c: Option<&u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\n'))
}

/// Characters that cannot start a plain scalar (or that this reader does
/// not handle there).
fn is_indicator(c: u8) -> bool {
    matches!(
        c,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'\''
            | b'"'
            | b'%'
            | b'@'
            | b'`'
    )
}

/// serde-saphyr's reading of a plain scalar into a `serde_json::Value`
/// (null, YAML 1.1 booleans, integers, floats, else a string), or `None`
/// for spellings left to it (floats, signs, radix prefixes, leading zeros,
/// integers past `u64`...).
fn plain_value(s: &str) -> Option<Value> {
    let first = *s.as_bytes().first()?;
    if matches!(s, "~" | "null" | "Null" | "NULL") {
        return Some(Value::Null);
    }
    for (words, b) in [
        (["true", "yes", "y", "on"], true),
        (["false", "no", "n", "off"], false),
    ] {
        if words.iter().any(|w| s.eq_ignore_ascii_case(w)) {
            return Some(Value::Bool(b));
        }
    }
    if first.is_ascii_digit() {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            if s.len() > 1 && first == b'0' {
                return None;
            }
            return s.parse::<u64>().ok().map(Value::from);
        }
        if s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            // `10.0.0.1` is a string, `1.5` a float.
            return match s.parse::<f64>() {
                Ok(_) => None,
                Err(_) => Some(Value::String(s.to_string())),
            };
        }
        // Only these characters make up integers (any radix, underscores)
        // and floats; with any other, the scalar is a string. So is one
        // with a `-` other than an exponent's (a UID, a date).
        let b = s.as_bytes();
        if (1..b.len()).any(|i| b[i] == b'-' && !matches!(b[i - 1], b'e' | b'E')) {
            return Some(Value::String(s.to_string()));
        }
        if s.bytes()
            .all(|c| c.is_ascii_hexdigit() || b"xXoO_.+-".contains(&c))
        {
            return None;
        }
        return Some(Value::String(s.to_string()));
    }
    if matches!(first, b'+' | b'-' | b'.') || is_indicator(first) {
        return None;
    }
    Some(Value::String(s.to_string()))
}

/// Whether `s` is a plain mapping key this reader takes as its text.
fn plain_key(s: &str) -> bool {
    let Some(&first) = s.as_bytes().first() else {
        return false;
    };
    if s == "." {
        return true;
    }
    s.len() <= MAX_KEY
        && !is_indicator(first)
        && !first.is_ascii_digit()
        && !matches!(first, b'+' | b'.' | b'~' | b'<' | b'=')
        // `f:spec`, `k:{"port":80}` (managedFields); not `a:1` (sexagesimal?)
        && (first.is_ascii_alphabetic() || !s.contains(':'))
        && !s.ends_with(' ')
        && !matches!(s, "null" | "Null" | "NULL")
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<&u8> {
        self.b[..self.end].get(self.pos)
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// From the start of a line, skips blank and comment lines; the
    /// indentation of the next line, left unconsumed.
    fn next_line(&mut self) -> Option<usize> {
        loop {
            let mut i = self.pos;
            while i < self.end && self.b[i] == b' ' {
                i += 1;
            }
            match self.b[..self.end].get(i) {
                None => {
                    self.pos = self.end;
                    return None;
                }
                Some(b'\n') => self.pos = i + 1,
                Some(b'#') => self.pos = self.eol(i) + 1,
                Some(_) => return Some(i - self.pos),
            }
        }
    }

    /// The end of the line holding `i`.
    fn eol(&self, i: usize) -> usize {
        self.b[i..self.end]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(self.end, |n| i + n)
    }

    /// After a node: only spaces and a comment may follow on the line;
    /// moves to the next line.
    fn finish_line(&mut self) -> Option<()> {
        let start = self.pos;
        while self.peek() == Some(&b' ') {
            self.pos += 1;
        }
        match self.peek() {
            None => {}
            Some(b'\n') => self.pos += 1,
            Some(b'#') if self.pos > start => self.pos = (self.eol(self.pos) + 1).min(self.end),
            Some(_) => return None,
        }
        Some(())
    }

    /// After a scalar or flow node of a block collection indented `parent`:
    /// the next line must not be indented more (a continuation).
    fn after_scalar(&mut self, parent: isize) -> Option<()> {
        match self.next_line() {
            Some(i) if i as isize > parent => None,
            _ => Some(()),
        }
    }

    /// Whether a block sequence entry (`- ` or a lone `-`) starts at `i`.
    fn is_seq_entry(&self, i: usize) -> bool {
        self.b[i] == b'-' && is_space_or_eol(self.b[..self.end].get(i + 1))
    }

    /// Whether the line from here holds `key:` (a colon followed by a space
    /// or the end of the line, before any comment).
    fn line_has_key(&self) -> bool {
        let b = &self.b[..self.end];
        let mut i = self.pos;
        while i < b.len() && b[i] != b'\n' {
            match b[i] {
                b':' if is_space_or_eol(b.get(i + 1)) => return true,
                b'#' if i > self.pos && b[i - 1] == b' ' => return false,
                _ => {}
            }
            i += 1;
        }
        false
    }

    /// The column of the current position.
    fn column(&self) -> usize {
        self.pos
            - self.b[..self.pos]
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |n| n + 1)
    }

    /// A node in block context starting here, at column `col`, inside a
    /// block collection indented `parent` (-1: the document).
    fn block_node(&mut self, col: usize, parent: isize) -> Option<Value> {
        self.enter()?;
        let v = match *self.peek()? {
            b'-' if self.is_seq_entry(self.pos) => self.block_seq(col)?,
            b'[' | b'{' => {
                let v = self.flow_node(parent)?;
                self.finish_line()?;
                self.after_scalar(parent)?;
                v
            }
            b'"' | b'\'' => {
                let start = self.pos;
                let s = self.quoted()?;
                if self.peek() == Some(&b':')
                    && is_space_or_eol(self.b[..self.end].get(self.pos + 1))
                {
                    self.pos = start;
                    self.block_map(col)?
                } else {
                    self.finish_line()?;
                    self.after_scalar(parent)?;
                    Value::String(s)
                }
            }
            _ if self.line_has_key() => self.block_map(col)?,
            _ => {
                let v = self.block_plain()?;
                self.finish_line()?;
                self.after_scalar(parent)?;
                v
            }
        };
        self.depth -= 1;
        Some(v)
    }

    /// A value on the line of its key (mapping indented `parent`).
    fn inline_value(&mut self, parent: isize) -> Option<Value> {
        let v = match *self.peek()? {
            b'|' => return self.literal(parent),
            b'[' | b'{' => self.flow_node(parent)?,
            b'"' | b'\'' => Value::String(self.quoted()?),
            _ => self.block_plain()?,
        };
        self.finish_line()?;
        self.after_scalar(parent)?;
        Some(v)
    }

    /// A literal block scalar (`|`, or `|-` to strip the last line break)
    /// as the value of a key of a mapping indented `parent`, from its
    /// header; ends at the start of the first line after it. Gives up on
    /// indentation indicators, `+`, comments after the header, leading blank
    /// lines, blank lines with more spaces than the content's indentation,
    /// empty scalars, and a last line without a line break.
    fn literal(&mut self, parent: isize) -> Option<Value> {
        let b = &self.b[..self.end];
        self.pos += 1;
        let strip = self.peek() == Some(&b'-');
        if strip {
            self.pos += 1;
        }
        while self.peek() == Some(&b' ') {
            self.pos += 1;
        }
        if self.peek() != Some(&b'\n') {
            return None;
        }
        self.pos += 1;
        let mut out = String::new();
        let mut indent: Option<usize> = None;
        let mut blank = 0;
        while self.pos < self.end {
            let start = self.pos;
            let eol = self.eol(start);
            let line = &b[start..eol];
            let spaces = line.iter().take_while(|&&c| c == b' ').count();
            if spaces == line.len() {
                if indent.is_none_or(|n| spaces > n) || eol == self.end {
                    return None;
                }
                blank += 1;
                self.pos = eol + 1;
                continue;
            }
            let n = *indent.get_or_insert(spaces);
            if spaces < n {
                break;
            }
            if n as isize <= parent || eol == self.end {
                return None;
            }
            for _ in 0..blank {
                out.push('\n');
            }
            blank = 0;
            out.push_str(&self.text[start + n..eol]);
            out.push('\n');
            self.pos = eol + 1;
        }
        if out.is_empty() {
            return None;
        }
        if strip {
            out.pop();
        }
        Some(Value::String(out))
    }

    /// A plain scalar in block context, up to the end of the line or a
    /// comment.
    fn block_plain(&mut self) -> Option<Value> {
        let b = &self.b[..self.end];
        let start = self.pos;
        let mut i = start;
        while i < b.len() && b[i] != b'\n' {
            match b[i] {
                b'#' if i > start && b[i - 1] == b' ' => break,
                b':' if is_space_or_eol(b.get(i + 1)) => return None,
                _ => {}
            }
            i += 1;
        }
        let mut e = i;
        while e > start && b[e - 1] == b' ' {
            e -= 1;
        }
        self.pos = e;
        plain_value(&self.text[start..e])
    }

    /// A block mapping whose keys are at column `m`; starts at its first key.
    fn block_map(&mut self, m: usize) -> Option<Value> {
        let mut map = Map::new();
        loop {
            let key = self.block_key()?;
            let mut spaces = 0;
            while self.peek() == Some(&b' ') {
                self.pos += 1;
                spaces += 1;
            }
            let value = match self.peek() {
                None | Some(b'\n') => None,
                Some(b'#') if spaces > 0 => None,
                Some(_) if spaces == 0 => return None,
                Some(_) => Some(self.inline_value(m as isize)?),
            };
            let value = match value {
                Some(v) => v,
                None => {
                    self.pos = (self.eol(self.pos) + 1).min(self.end);
                    match self.next_line() {
                        Some(i) if i > m || (i == m && self.is_seq_entry(self.pos + i)) => {
                            self.pos += i;
                            self.block_node(i, m as isize)?
                        }
                        _ => Value::Null,
                    }
                }
            };
            if map.insert(key, value).is_some() {
                return None;
            }
            match self.next_line() {
                Some(i) if i == m => {
                    self.pos += i;
                    if self.is_seq_entry(self.pos) {
                        return None;
                    }
                }
                Some(i) if i > m => return None,
                _ => break,
            }
        }
        Some(Value::Object(map))
    }

    /// A block mapping key and its `:`.
    fn block_key(&mut self) -> Option<String> {
        let key = match *self.peek()? {
            b'"' | b'\'' => self.quoted()?,
            _ => {
                let b = &self.b[..self.end];
                let start = self.pos;
                let mut i = start;
                while i < b.len() && !(b[i] == b':' && is_space_or_eol(b.get(i + 1))) {
                    if b[i] == b'\n' || b[i] == b'#' {
                        return None;
                    }
                    i += 1;
                }
                let key = &self.text[start..i];
                if !plain_key(key) {
                    return None;
                }
                self.pos = i;
                key.to_string()
            }
        };
        if self.peek() != Some(&b':') || !is_space_or_eol(self.b[..self.end].get(self.pos + 1)) {
            return None;
        }
        self.pos += 1;
        Some(key)
    }

    /// A block sequence whose `-` are at column `s`; starts at the first.
    fn block_seq(&mut self, s: usize) -> Option<Value> {
        let mut seq = Vec::new();
        loop {
            self.pos += 1;
            let mut spaces = 0;
            while self.peek() == Some(&b' ') {
                self.pos += 1;
                spaces += 1;
            }
            let item = match self.peek() {
                Some(b'#') if spaces == 0 => return None,
                None | Some(b'\n' | b'#') => {
                    self.pos = (self.eol(self.pos) + 1).min(self.end);
                    match self.next_line() {
                        Some(i) if i > s => {
                            self.pos += i;
                            self.block_node(i, s as isize)?
                        }
                        _ => Value::Null,
                    }
                }
                Some(_) if self.is_seq_entry(self.pos) => return None,
                Some(_) => {
                    let col = self.column();
                    self.block_node(col, s as isize)?
                }
            };
            seq.push(item);
            match self.next_line() {
                Some(i) if i == s && self.is_seq_entry(self.pos + i) => self.pos += i,
                Some(i) if i > s => return None,
                _ => break,
            }
        }
        Some(Value::Array(seq))
    }

    /// Spaces and line breaks inside a flow collection of a block
    /// collection indented `parent`: continuation lines must be indented
    /// more; no comments.
    fn flow_space(&mut self, parent: isize) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ') => self.pos += 1,
                Some(b'\n') => {
                    self.pos += 1;
                    let mut indent = 0;
                    while self.peek() == Some(&b' ') {
                        self.pos += 1;
                        indent += 1;
                    }
                    if !is_space_or_eol(self.peek()) && indent as isize <= parent {
                        return None;
                    }
                }
                Some(b'#') => return None,
                _ => return Some(()),
            }
        }
    }

    /// A flow node (collection or scalar), inside a block collection
    /// indented `parent`.
    fn flow_node(&mut self, parent: isize) -> Option<Value> {
        self.enter()?;
        let v = match *self.peek()? {
            b'[' => {
                self.pos += 1;
                let mut seq = Vec::new();
                loop {
                    self.flow_space(parent)?;
                    if self.peek() == Some(&b']') {
                        self.pos += 1;
                        break;
                    }
                    seq.push(self.flow_node(parent)?);
                    self.flow_space(parent)?;
                    match *self.peek()? {
                        b',' => self.pos += 1,
                        b']' => {
                            self.pos += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
                Value::Array(seq)
            }
            b'{' => {
                self.pos += 1;
                let mut map = Map::new();
                loop {
                    self.flow_space(parent)?;
                    if self.peek() == Some(&b'}') {
                        self.pos += 1;
                        break;
                    }
                    let key = match *self.peek()? {
                        b'"' | b'\'' => self.quoted()?,
                        _ => {
                            let key = self.flow_key()?;
                            if !is_space_or_eol(self.b[..self.end].get(self.pos + 1)) {
                                return None;
                            }
                            key
                        }
                    };
                    if self.peek() != Some(&b':') {
                        return None;
                    }
                    self.pos += 1;
                    self.flow_space(parent)?;
                    if matches!(self.peek(), None | Some(b',' | b'}')) {
                        return None;
                    }
                    let value = self.flow_node(parent)?;
                    if map.insert(key, value).is_some() {
                        return None;
                    }
                    self.flow_space(parent)?;
                    match *self.peek()? {
                        b',' => self.pos += 1,
                        b'}' => {
                            self.pos += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
                Value::Object(map)
            }
            b'"' | b'\'' => Value::String(self.quoted()?),
            _ => {
                let s = self.flow_plain()?;
                if self.peek() == Some(&b':') {
                    return None;
                }
                plain_value(s)?
            }
        };
        self.depth -= 1;
        Some(v)
    }

    /// A plain scalar in a flow collection, up to a flow indicator, a colon
    /// followed by a space, a line break or a flow indicator, or the end of
    /// the line (trailing spaces dropped); `None` at a comment.
    fn flow_plain(&mut self) -> Option<&'a str> {
        let b = &self.b[..self.end];
        let text = self.text;
        let start = self.pos;
        let mut i = start;
        while i < b.len() {
            match b[i] {
                b',' | b'[' | b']' | b'{' | b'}' | b'\n' => break,
                b':' if matches!(
                    b.get(i + 1),
                    None | Some(b' ' | b'\n' | b',' | b'[' | b']' | b'{' | b'}')
                ) =>
                {
                    break;
                }
                b'#' => return None,
                _ => i += 1,
            }
        }
        let mut e = i;
        while e > start && b[e - 1] == b' ' {
            e -= 1;
        }
        self.pos = i;
        Some(&text[start..e])
    }

    /// A plain key in a flow mapping, up to its `:`.
    fn flow_key(&mut self) -> Option<String> {
        let start = self.pos;
        let key = self.flow_plain()?;
        if !plain_key(key) || start + key.len() != self.pos || self.peek() != Some(&b':') {
            return None;
        }
        Some(key.to_string())
    }

    /// A single- or double-quoted scalar on one line (double-quoted: JSON's
    /// escapes only).
    fn quoted(&mut self) -> Option<String> {
        let b = &self.b[..self.end];
        let q = b[self.pos];
        let mut i = self.pos + 1;
        let mut out = String::new();
        let mut run = i;
        loop {
            let c = *b.get(i)?;
            if c == b'\n' {
                return None;
            }
            if c == q {
                out.push_str(&self.text[run..i]);
                if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                    out.push('\'');
                    i += 2;
                    run = i;
                    continue;
                }
                self.pos = i + 1;
                return Some(out);
            }
            if c == b'\\' && q == b'"' {
                out.push_str(&self.text[run..i]);
                let e = *b.get(i + 1)?;
                i += 2;
                out.push(match e {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hex = self.text.get(i..i + 4)?;
                        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                            return None;
                        }
                        i += 4;
                        char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                    }
                    _ => return None,
                });
                run = i;
                continue;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn saphyr(text: &str) -> Result<Vec<Value>, String> {
        serde_saphyr::from_multiple_with_options(text, super::super::documents::yaml_options())
            .map_err(|e| e.to_string())
    }

    /// Every document read, or `None`.
    fn whole(text: &str) -> Option<Vec<Value>> {
        read(text)?
            .into_iter()
            .map(|d| match d {
                Document::Read(v) => Some(v),
                Document::Other(_) => None,
            })
            .collect()
    }

    /// The documents read, and the others by serde-saphyr one by one (when
    /// it reads them all), are what serde-saphyr reads of the whole text.
    fn mixed_agrees(text: &str) {
        let Some(docs) = read(text) else { return };
        let mut out = Vec::new();
        for d in docs {
            match d {
                Document::Read(v) => out.push(v),
                Document::Other(r) => match saphyr(&text[r]) {
                    Ok(v) => out.extend(v),
                    Err(_) => return,
                },
            }
        }
        assert_eq!(Ok(out), saphyr(text), "{text:?}");
    }

    /// The fast reader either gives up or agrees with serde-saphyr.
    fn check(text: &str) -> bool {
        match whole(text) {
            None => false,
            Some(fast) => {
                assert_eq!(Ok(&fast), saphyr(text).as_ref(), "{text:?}");
                true
            }
        }
    }

    #[test]
    fn reads_manifests_as_serde_saphyr_does() {
        let texts = [
            "",
            "---\n---\n",
            "# only a comment\n",
            "~\n---\nnull\n---\na: 1\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
             spec:\n  clusterIP: 10.96.000.010\n  externalIPs: [192.0.2.1, not-an-ip]\n  \
             ports: [{name: http, port: 80, targetPort: 8080}]\n",
            "a:\n- x\n- y: 1\n  z: [a, 'b''c', \"d\\\"e\\u00e9\"]\nb: yes\nc: No\nd: ~\ne:\n",
            "a:   # c\n  b: 1\n# c\n  c: http://x/y#z  # comment\n",
            "- a:\n  - x\n  b: 1\n-\n- {}\n- []\n",
            "{\"a\": [1, 2, {\"b\": null}],\n\"c\": \"d\"}\n",
            "a: 10Gi\nb: 5m\nc: 2024-01-01T00:00:00Z\nd: 1:20\ne: 0\nf: 18446744073709551615\n",
            "  a: 1\n  b: [x,\n    y]\n",
            "a: b,c]\nb: ~x\nc: Y\n\"d e\": 'f'\n",
            "a: [a\n  , b]\n",
            "- x\n- - y\n",
            "a: {b: 1\n}\n",
            "kind: List\nitems:\n- kind: Service\n  metadata:\n    labels:\n      app: web\n",
            "a: fd00::1\nb: [fd00::1, 2001:db8::1, a:1]\nc: {d: 2001:db8::/64}\n",
            // What kubectl prints: block scalars, managedFields, UIDs.
            "metadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n      \
             {\"apiVersion\":\"v1\",\"kind\":\"Service\"}\n  managedFields:\n  - fieldsV1:\n      \
             f:metadata:\n        .: {}\n        k:{\"port\":80,\"protocol\":\"TCP\"}:\n          \
             f:port: {}\n    time: \"2024-05-29T07:42:43Z\"\n  \
             uid: 17f43ff9-16fe-4507-a593-ede1a29a1255\n",
            "a: |-\n  x\n\n  y\n\n\nb: |\n   two\n    three\n # c\nc: 1\n",
        ];
        let read: Vec<bool> = texts.iter().map(|t| check(t)).collect();
        // The last-but-two and last-but-one are valid YAML outside the subset.
        assert_eq!(
            read,
            [
                true, true, true, true, true, true, true, true, true, true, true, true, true,
                false, false, true, true, true, true
            ]
        );
    }

    #[test]
    fn gives_up_per_document() {
        let text = "a: 1\n---\nb: &x 1\nc: *x\n---\n\n---\nd: [2]\n";
        let docs = read(text).expect("split into documents");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0], Document::Read(serde_json::json!({"a": 1})));
        assert_eq!(docs[1], Document::Other(9..23));
        assert_eq!(&text[9..23], "b: &x 1\nc: *x\n");
        assert_eq!(docs[2], Document::Read(serde_json::json!({"d": [2]})));
        mixed_agrees(text);
        // What cannot be split is left whole.
        for text in [
            "a: 1\r\n---\r\nb: 2\r\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: 1\n--- b\n",
        ] {
            assert_eq!(read(text), None, "{text:?}");
        }
    }

    #[test]
    fn gives_up_on_what_it_does_not_read() {
        for text in [
            "a: 1\na: 2\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: >\n  x\n",
            "a: |2\n  x\n",
            "a: |\n\n  x\n",
            "a: |\n  x",
            "a: b\n  c\n",
            "a: \"b\n  c\"\n",
            "a:\tb\n",
            "a: é\n",
            "a: 1.5\n",
            "a: -1\n",
            "a: 0777\n",
            "a: 0x1F\n",
            "a: 1e3\n",
            "a: .inf\n",
            "a: 18446744073709551616\n",
            "<<: {a: 1}\n",
            "? a\n: b\n",
            "a: b: c\n",
            "a: [b, c]]\n",
            "a: [b, c] x\n",
            "  a: 1\nb: 2\n",
            "a:\n  b: 1\n c: 2\n",
            "--- a: 1\n",
            "a: 1\n...\n",
            "%YAML 1.2\n---\na: 1\n",
            "\"a\":1\n",
            "a: {b:1}\n",
            "a: [b: c]\n",
            "a: [b # c\n]\n",
        ] {
            assert_eq!(whole(text), None, "{text:?}");
            // serde-saphyr decides (and reports errors).
            let _ = saphyr(text);
        }
    }

    /// Random texts from pieces of manifests and of what trips YAML readers
    /// up: whatever the fast reader accepts, serde-saphyr reads the same.
    #[test]
    fn random_texts_agree_with_serde_saphyr() {
        const KEYS: &[&str] = &[
            "a",
            "b",
            "name",
            "kubernetes.io/service-name",
            "\"q k\"",
            "'s k'",
            "y",
            "on",
            "x y",
            "null",
            "80",
            "<<",
            "a:b",
            "-a",
            "~",
            "f:spec",
            "k:{\"port\":80,\"protocol\":\"TCP\"}",
            ".",
            "..",
            "f:a:1",
        ];
        const SCALARS: &[&str] = &[
            "x",
            "10.0.0.1",
            "80",
            "0",
            "007",
            "1.5",
            "1e3",
            "-1",
            "+1",
            ".5",
            "true",
            "No",
            "Y",
            "off",
            "~",
            "null",
            "NULL",
            "\"s\"",
            "'t''u'",
            "\"a\\\"b\\n\\u0041\"",
            "\"\\x41\"",
            "http://h/p",
            "a b",
            "a #b",
            "a#b",
            "a: b",
            "a,b",
            "[a]",
            "{a: 1}",
            "[]",
            "{}",
            "[a, [b, {c: d}]]",
            "{a: [1, 2], b: c}",
            "10Gi",
            "0x1F",
            "1_000",
            ".inf",
            ".nan",
            "inf",
            "nan",
            "&a x",
            "*a",
            "!t x",
            "|",
            ">",
            "@x",
            "`x",
            "%x",
            "?",
            "? x",
            "-",
            "- x",
            ":",
            ":x",
            "x:",
            "2024-05-29T07:42:43Z",
            "18446744073709551616",
            "1:20",
            "é",
            "[a,]",
            "fd00::1",
            "[::1, a::]",
            "{a: b:c}",
            "[a:b]",
            "2001:db8::1",
            "{a: 1,}",
            "1.",
            "1..2",
            "1.2.3.4/24",
            "=",
            "<<",
            "${X}",
            "a  b",
            "y",
            "On",
            "[a\n  , b]",
            "{\"a\":1}",
            "{a:1}",
            "17f43ff9-16fe-4507-a593-ede1a29a1255",
            "00000001-0000-4000-8000-000000000000",
            "2002-12-14",
            "1e-5",
            "1E-5",
            "1-e5",
            "0x1-2",
            "1_0-0",
            "12-",
            "|\n  x\n",
            "|-\n  x\n\n  y\n",
            "|\n  {\"a\":1}\n",
            "|\n   a\n  b\n",
            "|\n\n  a\n",
            "|2\n  a\n",
            "|+\n  a\n\n",
            "| # c\n  a\n",
            "|\n  a\n   \n  b\n",
            "|\n  # a\n",
        ];
        let mut rng = Rng(7);
        let mut accepted = 0;
        for _ in 0..4000 {
            let mut text = String::new();
            let mut indent: Vec<usize> = vec![0];
            for _ in 0..rng.below(12) {
                let ind = indent[rng.below(indent.len())];
                let pad = " ".repeat(ind);
                let key = KEYS[rng.below(KEYS.len())];
                let scalar = SCALARS[rng.below(SCALARS.len())];
                let line = match rng.below(12) {
                    0..=3 => format!("{pad}{key}: {scalar}\n"),
                    4 => {
                        indent.push(ind + 2);
                        format!("{pad}{key}:\n")
                    }
                    5 => {
                        indent.push(ind + 2);
                        format!("{pad}- {key}: {scalar}\n")
                    }
                    6 => format!("{pad}- {scalar}\n"),
                    7 => format!("{pad}{key}:\n{pad}- {scalar}\n"),
                    8 => "---\n".to_string(),
                    9 => format!("{pad}# comment {scalar}\n"),
                    10 => format!("{pad}{scalar}\n"),
                    _ => format!("{pad}{key}:  {scalar}  # c\n"),
                };
                text.push_str(&line);
                if rng.below(5) == 0 {
                    indent.truncate(1.max(indent.len() - 1));
                }
            }
            mixed_agrees(&text);
            if check(&text) {
                accepted += 1;
            }
        }
        // The subset is not empty: a good part of the texts are read.
        assert!(accepted > 400, "{accepted}");
    }

    /// Manifests (YAML, flow style, JSON) with random edits: whatever the
    /// fast reader accepts, serde-saphyr reads the same.
    #[test]
    fn edited_manifests_agree_with_serde_saphyr() {
        let base = [
            r#"apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  clusterIP: 172.16.0.2
  clusterIPs: [172.16.0.2]
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-abc, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.0.0.10], conditions: {ready: true}, nodeName: node-0},{addresses: [10.0.0.11], conditions: {ready: true}, nodeName: node-1}]
"#,
            r#"apiVersion: v1
items:
- apiVersion: v1
  kind: Service
  metadata:
    labels:
      app: nginx
    name: nginx-service
    namespace: default
    resourceVersion: "412201"
  spec:
    clusterIP: 10.96.95.164
    ports:
    - nodePort: 31234
      port: 80
      protocol: TCP
      targetPort: 80
    selector:
      app: nginx
  status:
    loadBalancer: {}
kind: List
metadata:
  resourceVersion: ""
"#,
            r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {
    "name": "a",
    "annotations": {"x": "{\"a\":1}\n"}
  },
  "spec": {"ports": [{"port": 80}], "x": [true, false, null]}
}
"#,
        ];
        let pieces: &[&str] = &[
            " ", "  ", "\n", "-", "- ", ":", ": ", "#", " #", "'", "\"", "[", "]", "{", "}", ",",
            "?", "&", "*", "!", "|", ">", "---\n", "\\", "\\\"", "0", "1", ".", "a", "~", "\n  ",
            "\n- ", "\t", "é", "''", "\\u0041", "\\x41", "e", "x", "::", "fd00::1", ":1",
        ];
        let mut accepted = 0;
        let mut total = 0;
        for seed in 0..4u64 {
            let mut rng = Rng(seed * 7919 + 1);
            for _ in 0..1500 {
                let mut t = base[rng.below(base.len())].to_string();
                for _ in 0..1 + rng.below(6) {
                    let mut at = rng.below(t.len() + 1);
                    while !t.is_char_boundary(at) {
                        at -= 1;
                    }
                    match rng.below(3) {
                        0 => t.insert_str(at, pieces[rng.below(pieces.len())]),
                        1 => {
                            let mut e = (at + 1 + rng.below(3)).min(t.len());
                            while !t.is_char_boundary(e) {
                                e += 1;
                            }
                            t.replace_range(at..e, "");
                        }
                        _ => {
                            let mut e = (at + 1).min(t.len());
                            while !t.is_char_boundary(e) {
                                e += 1;
                            }
                            t.replace_range(at..e, pieces[rng.below(pieces.len())]);
                        }
                    }
                }
                total += 1;
                mixed_agrees(&t);
                if let Some(fast) = whole(&t) {
                    accepted += 1;
                    assert_eq!(Ok(&fast), saphyr(&t).as_ref(), "{t:?}");
                }
            }
        }
        assert!(accepted > total / 10, "{accepted} of {total}");
    }
}
