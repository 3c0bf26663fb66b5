//! The last check before anyone sees a rendered file: it must be one well-formed XML 1.0 document. A
//! template can produce anything; a phone that gets a broken file may keep its old configuration or none.

/// Checks that `doc` is one well-formed XML document: legal characters only, an optional XML declaration, one
/// root element, every element closed in order, names and attributes well-formed (no attribute twice), every
/// reference known, comments, processing instructions and CDATA sections closed, no `]]>` in text, no
/// document type declaration (sipcfg's files have none, and it could declare entities).
///
/// A single pass over the bytes that finds markup with `memchr`: the check runs on every render (100,000 of
/// them when a deployment is pre-rendered), and the general XML reader it replaces cost half of a render.
/// The tests hold it to that reader: it never accepts a document the reader refuses.
pub fn check_well_formed(doc: &str) -> Result<(), String> {
    check_chars(doc)?;
    Scanner::new(doc, &[]).document()
}

/// Legal XML characters only.
fn check_chars(doc: &str) -> Result<(), String> {
    if may_hold_illegal_chars(doc.as_bytes())
        && let Some((i, c)) = doc.char_indices().find(|&(_, c)| !is_xml_char(c))
    {
        let line = doc[..i].matches('\n').count() + 1;
        return Err(format!("line {line}: character U+{:04X} is not allowed in XML", c as u32));
    }
    Ok(())
}

/// Document shapes known to stay well-formed whatever escaped text fills their gaps: the check of a rendered
/// file made once per shape instead of once per file.
///
/// A rendered file is the template's own text with escaped values inserted in it. Escaped text holds no `<`,
/// `>`, quote or bare `&` (only whole references: `&amp;`…), so inserted in character data inside the root
/// element or in an attribute value, outside any reference, it cannot open, close or break any markup. The
/// file's *shape*, the template's text with the byte offsets where values go, then decides well-formedness
/// alone: once one file of a shape passed the whole check and every gap of its shape is in such a place, a
/// file of the same shape (XXH3-128 of the text and the offsets) needs only the check of its values' bytes.
/// Values with a `]` (which could make `]]>` with the template's text) and renders that wrote anything
/// unescaped get the whole check every time. A thousand renders of one model cost one whole check, not a thousand.
pub struct ShapeCache {
    /// Shapes seen in a file that passed the whole check, and whether all their gaps are safe: an unsafe
    /// shape's files are checked whole without its gaps being placed again.
    known: std::sync::Mutex<std::collections::HashMap<u128, bool>>,
}

/// Shapes remembered at most; past it the set starts again (a site has a few dozen: models, line and
/// button counts, pools).
const MAX_SHAPES: usize = 4096;

impl Default for ShapeCache {
    fn default() -> Self {
        ShapeCache { known: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }
}

impl ShapeCache {
    /// Shapes known now to be safe (their files skip the whole check).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.known.lock().map_or(0, |known| known.values().filter(|&&safe| safe).count())
    }

    /// Checks `doc` as [`check_well_formed`] does. `values` are the byte ranges of `doc` that hold escaped
    /// values, in order and disjoint; `None` when the render wrote something unescaped (its file is checked
    /// whole).
    pub fn check(&self, doc: &str, values: Option<&[std::ops::Range<usize>]>) -> Result<(), String> {
        let b = doc.as_bytes();
        let Some(values) = values.filter(|v| v.iter().all(|r| doc.get(r.clone()).is_some_and(is_escaped_text))) else {
            return check_well_formed(doc);
        };
        // The shape: the template's text, then (after 0xFF, which UTF-8 never holds) the gaps' offsets in it.
        let mut shape = Vec::with_capacity(b.len() + 1 + 4 * values.len());
        let mut gaps = Vec::with_capacity(values.len());
        let mut at = 0;
        for r in values {
            shape.extend_from_slice(&b[at..r.start]);
            gaps.push(shape.len());
            at = r.end;
        }
        shape.extend_from_slice(&b[at..]);
        let text_len = shape.len();
        shape.push(0xFF);
        for gap in &gaps {
            shape.extend_from_slice(&(*gap as u32).to_le_bytes());
        }
        let key = xxhash_rust::xxh3::xxh3_128(&shape);
        match self.known.lock().ok().and_then(|known| known.get(&key).copied()) {
            // The template's text is that of a file that passed the whole check, characters included; the
            // values' characters were checked above.
            Some(true) => return Ok(()),
            Some(false) => return check_well_formed(doc),
            None => {}
        }
        check_well_formed(doc)?;
        // Values cut at char boundaries: the template's text is UTF-8 too.
        let safe = std::str::from_utf8(&shape[..text_len]).is_ok_and(|text| Scanner::new(text, &gaps).gaps_are_safe());
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_SHAPES {
                known.clear();
            }
            known.insert(key, safe);
        }
        Ok(())
    }
}

/// What an escaped value may hold: legal XML characters, no markup character, no quote, no `]`; `&` only as
/// part of the references the escaping wrote (checked with the whole file the first time its shape is seen).
fn is_escaped_text(value: &str) -> bool {
    let suspect = value.bytes().fold(false, |any, c| any | NOT_PLAIN[usize::from(c)]);
    !suspect || (value.chars().all(is_xml_char) && !value.contains(['<', '>', ']', '"', '\'']))
}

/// Bytes an escaped value rarely holds: markup characters, quotes, `]`, and those that may belong to a
/// character XML forbids ([`may_be_illegal`]).
static NOT_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = may_be_illegal(b) || matches!(b, b'<' | b'>' | b']' | b'"' | b'\'');
        c += 1;
    }
    t
};

struct Scanner<'a> {
    doc: &'a str,
    b: &'a [u8],
    /// The document holds a `&` somewhere: references are checked segment by segment.
    amp: bool,
    /// The document holds a `]` somewhere: text is checked for `]]>`.
    bracket: bool,
    /// Offsets where values would be inserted (see [`ShapeCache`]), in order; empty for a plain check.
    gaps: &'a [usize],
    /// The first gap not yet placed.
    next_gap: std::cell::Cell<usize>,
    /// Every gap placed so far is in character data inside the root or in an attribute value, outside any
    /// reference.
    gaps_safe: std::cell::Cell<bool>,
}

impl<'a> Scanner<'a> {
    fn new(doc: &'a str, gaps: &'a [usize]) -> Scanner<'a> {
        // A rendered file rarely holds a reference or a `]`: one vectorised pass each over the whole
        // document spares a search in each of its hundreds of text and attribute segments.
        let b = doc.as_bytes();
        Scanner {
            doc,
            b,
            amp: memchr::memchr(b'&', b).is_some(),
            bracket: memchr::memchr(b']', b).is_some(),
            gaps,
            next_gap: std::cell::Cell::new(0),
            gaps_safe: std::cell::Cell::new(true),
        }
    }

    /// Whether the document is well-formed and every gap is where an escaped value cannot break it.
    fn gaps_are_safe(&self) -> bool {
        self.document().is_ok() && self.gaps_safe.get() && self.next_gap.get() == self.gaps.len()
    }

    /// Places the gaps up to `hi`: each must be in `lo..=hi`, a span of character data (`text`) or of an
    /// attribute value, outside any reference; `allowed` is false for text outside the root element.
    fn place_gaps(&self, lo: usize, hi: usize, allowed: bool) {
        if self.gaps.is_empty() {
            return;
        }
        let mut n = self.next_gap.get();
        while let Some(&gap) = self.gaps.get(n)
            && gap <= hi
        {
            let in_reference = || {
                memchr::memrchr(b'&', &self.b[lo..gap])
                    .is_some_and(|a| memchr::memchr(b';', &self.b[lo + a..gap]).is_none())
            };
            if gap < lo || !allowed || in_reference() {
                self.gaps_safe.set(false);
            }
            n += 1;
        }
        self.next_gap.set(n);
    }

    fn err(&self, at: usize, what: &str) -> String {
        let line = self.b[..at.min(self.b.len())].iter().filter(|&&c| c == b'\n').count() + 1;
        format!("line {line}: {what}")
    }

    fn document(&self) -> Result<(), String> {
        let b = self.b;
        let mut i = 0;
        if b.starts_with(b"<?xml") && b.get(5).is_some_and(|c| is_space(*c)) {
            i = self.find(i, "?>").ok_or_else(|| self.err(0, "unterminated XML declaration"))? + 2;
        }
        let mut stack: Vec<&'a [u8]> = Vec::with_capacity(16);
        let mut roots = 0usize;
        loop {
            let lt = next_markup(b, i);
            self.text(i, lt, stack.is_empty())?;
            if lt == b.len() {
                break;
            }
            i = lt;
            match b.get(i + 1) {
                Some(b'/') => {
                    // The open element's name was checked: the end tag only has to repeat it, exactly.
                    let start = i + 2;
                    let end = match stack.last() {
                        Some(open)
                            if b.get(start..start + open.len()).is_some_and(|name| same_name(name, open))
                                && b.get(start + open.len())
                                    .is_none_or(|&c| NAME_CLASS[c as usize] & (NAME_CHAR | WIDE) == 0) =>
                        {
                            start + open.len()
                        }
                        _ => {
                            let end = self.name(start)?;
                            let name = String::from_utf8_lossy(&b[start..end]);
                            return Err(match stack.last() {
                                Some(open) => self
                                    .err(i, &format!("end tag </{name}> closes <{}>", String::from_utf8_lossy(open))),
                                None => self.err(i, "end tag without a start tag"),
                            });
                        }
                    };
                    let close = self.skip_space(end);
                    if b.get(close) != Some(&b'>') {
                        return Err(self.err(i, "malformed end tag"));
                    }
                    stack.pop();
                    i = close + 1;
                }
                Some(b'?') => {
                    let end = self.name(i + 2)?;
                    if b[i + 2..end].eq_ignore_ascii_case(b"xml") {
                        return Err(self.err(i, "an XML declaration is only allowed at the very start"));
                    }
                    if !matches!(b.get(end), Some(c) if is_space(*c) || *c == b'?') {
                        return Err(self.err(i, "malformed processing instruction"));
                    }
                    i = self.find(end, "?>").ok_or_else(|| self.err(i, "unterminated processing instruction"))? + 2;
                }
                Some(b'!') => {
                    if b[i..].starts_with(b"<!--") {
                        let end = self.find(i + 4, "--").ok_or_else(|| self.err(i, "unterminated comment"))?;
                        if b.get(end + 2) != Some(&b'>') {
                            return Err(self.err(end, "'--' inside a comment"));
                        }
                        i = end + 3;
                    } else if b[i..].starts_with(b"<![CDATA[") {
                        if stack.is_empty() {
                            return Err(self.err(i, "CDATA outside the root element"));
                        }
                        i = self.find(i + 9, "]]>").ok_or_else(|| self.err(i, "unterminated CDATA section"))? + 3;
                    } else {
                        return Err(self.err(i, "document type declarations and other <! markup are not allowed"));
                    }
                }
                _ => {
                    let (name_end, end, empty) = self.start_tag(i)?;
                    if stack.is_empty() {
                        roots += 1;
                        if roots > 1 {
                            return Err(self.err(i, "more than one root element"));
                        }
                    }
                    if !empty {
                        stack.push(&b[i + 1..name_end]);
                    }
                    i = end;
                }
            }
        }
        if !stack.is_empty() {
            return Err("document ends inside an element".into());
        }
        if roots != 1 {
            return Err("no root element".into());
        }
        Ok(())
    }

    /// Text from `from` to `to`: only white space outside the root element; references known; no `]]>`.
    fn text(&self, from: usize, to: usize, outside: bool) -> Result<(), String> {
        self.place_gaps(from, to, !outside);
        let text = &self.doc[from..to];
        if outside {
            if text.bytes().any(|c| !is_space(c)) {
                return Err(self.err(from, "text outside the root element"));
            }
            return Ok(());
        }
        if self.amp {
            self.references(from, text)?;
        }
        if self.bracket && memchr::memchr(b']', text.as_bytes()).is_some() && text.contains("]]>") {
            return Err(self.err(from, "']]>' in text"));
        }
        Ok(())
    }

    /// Every `&…;` of `text` (which starts at `at`) is a known reference.
    fn references(&self, at: usize, text: &str) -> Result<(), String> {
        let mut rest = text;
        while let Some(amp) = memchr::memchr(b'&', rest.as_bytes()) {
            let after = &rest[amp + 1..];
            let end = after.find(';').ok_or_else(|| self.err(at, "unterminated reference"))?;
            check_reference(&after[..end])?;
            rest = &after[end + 1..];
        }
        Ok(())
    }

    /// A start tag at `lt`: where its name ends, where it ends (after `>`), and whether it is empty (`/>`). Attributes are
    /// checked: `name = "value"` after white space, each name once, values without `<` and with known
    /// references.
    fn start_tag(&self, lt: usize) -> Result<(usize, usize, bool), String> {
        let b = self.b;
        let name_end = self.name(lt + 1)?;
        let mut i = name_end;
        // The attributes' names so far, for "each name once": on the stack for the usual few.
        let mut first: [&[u8]; 8] = [&[]; 8];
        let mut count = 0usize;
        let mut more: Vec<&[u8]> = Vec::new();
        loop {
            let spaced = self.skip_space(i);
            match b.get(spaced) {
                Some(b'>') => return Ok((name_end, spaced + 1, false)),
                Some(b'/') if b.get(spaced + 1) == Some(&b'>') => return Ok((name_end, spaced + 2, true)),
                Some(_) if spaced > i => {
                    let name_end = self.name(spaced)?;
                    let name = &b[spaced..name_end];
                    if first[..count].contains(&name) || more.contains(&name) {
                        return Err(self.err(lt, &format!("attribute {} twice", String::from_utf8_lossy(name))));
                    }
                    match first.get_mut(count) {
                        Some(slot) => {
                            *slot = name;
                            count += 1;
                        }
                        None => more.push(name),
                    }
                    let eq = self.skip_space(name_end);
                    if b.get(eq) != Some(&b'=') {
                        return Err(self.err(lt, "an attribute without '='"));
                    }
                    let open = self.skip_space(eq + 1);
                    let quote = match b.get(open) {
                        Some(q @ (b'"' | b'\'')) => *q,
                        _ => return Err(self.err(lt, "an attribute value without quotes")),
                    };
                    let close = memchr::memchr(quote, &b[open + 1..])
                        .map(|n| open + 1 + n)
                        .ok_or_else(|| self.err(lt, "unterminated attribute value"))?;
                    self.place_gaps(open + 1, close, true);
                    let value = &self.doc[open + 1..close];
                    if value.contains('<') {
                        return Err(self.err(lt, "'<' in an attribute value"));
                    }
                    if self.amp {
                        self.references(lt, value)?;
                    }
                    i = close + 1;
                }
                _ => return Err(self.err(lt, "malformed start tag")),
            }
        }
    }

    /// The end of the XML `Name` at `at`. ASCII through a byte table (names in sipcfg's files are ASCII),
    /// the rest by XML's character classes.
    fn name(&self, at: usize) -> Result<usize, String> {
        let b = self.b;
        let mut i = match b.get(at).map(|&c| NAME_CLASS[c as usize]) {
            Some(c) if c & NAME_START != 0 => at + 1,
            Some(WIDE) => match self.doc[at..].chars().next() {
                Some(ch) if is_name_start(ch) => at + ch.len_utf8(),
                _ => return Err(self.err(at, "a name was expected")),
            },
            _ => return Err(self.err(at, "a name was expected")),
        };
        loop {
            i = skip_letters(b, i);
            while let Some(&c) = b.get(i)
                && NAME_CLASS[c as usize] & NAME_CHAR != 0
            {
                i += 1;
            }
            match b.get(i) {
                Some(&c) if c >= 0x80 => match self.doc[i..].chars().next() {
                    Some(ch) if is_name_char(ch) => i += ch.len_utf8(),
                    _ => return Ok(i),
                },
                _ => return Ok(i),
            }
        }
    }

    fn skip_space(&self, mut at: usize) -> usize {
        while self.b.get(at).is_some_and(|c| is_space(*c)) {
            at += 1;
        }
        at
    }

    fn find(&self, from: usize, needle: &str) -> Option<usize> {
        memchr::memmem::find(self.b.get(from..)?, needle.as_bytes()).map(|n| from + n)
    }
}

/// Where the next `<` is at or after `from` (the end of `b` without one). Most text between two tags is a
/// line's indentation or a short value: a plain loop finds the `<` of those sooner than a call to the
/// vectorised search, which takes over past the first 16 bytes.
fn next_markup(b: &[u8], from: usize) -> usize {
    let near = b.len().min(from + 16);
    match b[from.min(near)..near].iter().position(|&c| c == b'<') {
        Some(n) => from + n,
        None => memchr::memchr(b'<', &b[near..]).map_or(b.len(), |n| near + n),
    }
}

/// Whether two element names are the same bytes, eight at a time: names are short, and the general
/// comparison (a call to the C library's `memcmp`) cost more than the comparing.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    let words_equal = (&mut x).zip(&mut y).all(|(p, q)| word(p) == word(q));
    words_equal && x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

/// Eight bytes as one integer (`chunk` holds exactly eight).
fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]))
}

/// The first index at or after `from` that does not start eight ASCII letters: names are mostly letters,
/// and eight are tested in a few operations (bytes folded to lower case, then each checked to be in
/// `a..=z` by the carries of two additions, which cannot cross bytes once the high bits are known clear).
fn skip_letters(b: &[u8], mut from: usize) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(from..from + 8) {
        let x = word(chunk);
        let folded = x | (0x20 * LOW);
        let at_least_a = folded.wrapping_add((0x80 - 0x61) * LOW);
        let past_z = folded.wrapping_add((0x80 - 0x7B) * LOW);
        if x & HIGH != 0 || (at_least_a & !past_z & HIGH) != HIGH {
            break;
        }
        from += 8;
    }
    from
}

/// Each byte's part in an XML `Name`: [`NAME_START`] and [`NAME_CHAR`] bits for ASCII (`NameStartChar`,
/// `NameChar`), [`WIDE`] for the bytes of other characters, decided by their `char`.
static NAME_CLASS: [u8; 256] = name_classes();
const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;
const WIDE: u8 = 4;

const fn name_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b >= 0x80 {
            WIDE
        } else if b == b':' || b == b'_' || b.is_ascii_alphabetic() {
            NAME_START | NAME_CHAR
        } else if b == b'-' || b == b'.' || b.is_ascii_digit() {
            NAME_CHAR
        } else {
            0
        };
        c += 1;
    }
    t
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// XML 1.0 `NameStartChar`.
fn is_name_start(c: char) -> bool {
    matches!(c, ':' | 'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}'
        | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 `NameChar`.
fn is_name_char(c: char) -> bool {
    is_name_start(c) || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

fn check_reference(text: &str) -> Result<(), String> {
    if let Some(num) = text.strip_prefix('#') {
        let code = match num.strip_prefix('x') {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => num.parse(),
        }
        .map_err(|_| format!("bad character reference &{text};"))?;
        return match char::from_u32(code) {
            Some(c) if is_xml_char(c) => Ok(()),
            _ => Err(format!("character reference &{text}; is not allowed in XML")),
        };
    }
    match text {
        "lt" | "gt" | "amp" | "apos" | "quot" => Ok(()),
        _ => Err(format!("unknown entity &{text};")),
    }
}

/// False when `doc` (UTF-8) certainly holds only XML `Char`s: no control byte but tab, newline and carriage
/// return, and no 0xEF, the lead byte of U+FFFE and U+FFFF (surrogates cannot occur in a `str`). Branch-free
/// over 64-byte blocks so that it vectorizes: rendered files are almost always clean, and decoding every
/// `char` was a quarter of the well-formedness check.
fn may_hold_illegal_chars(doc: &[u8]) -> bool {
    doc.chunks(64).any(|block| block.iter().fold(false, |acc, &c| acc | may_be_illegal(c)))
}

/// A byte that may belong to a character XML forbids: a control byte but tab, newline and carriage return,
/// or 0xEF (see [`may_hold_illegal_chars`]).
const fn may_be_illegal(c: u8) -> bool {
    (c < 0x20) & (c != b'\t') & (c != b'\n') & (c != b'\r') | (c == 0xEF)
}

/// XML 1.0 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every `&…;` in an attribute value.
    fn check_references(value: &str) -> Result<(), String> {
        let mut rest = value;
        while let Some(start) = rest.find('&') {
            let after = &rest[start + 1..];
            let end = after.find(';').ok_or("unterminated reference in an attribute")?;
            check_reference(&after[..end])?;
            rest = &after[end + 1..];
        }
        if value.contains('<') {
            return Err("'<' in an attribute value".into());
        }
        Ok(())
    }

    /// The general XML reader's verdict, which the scanner is held to.
    fn quick_xml_check(doc: &str) -> Result<(), String> {
        use quick_xml::events::Event;

        if may_hold_illegal_chars(doc.as_bytes())
            && let Some((i, c)) = doc.char_indices().find(|&(_, c)| !is_xml_char(c))
        {
            let line = doc[..i].matches('\n').count() + 1;
            return Err(format!("line {line}: character U+{:04X} is not allowed in XML", c as u32));
        }
        let mut reader = quick_xml::Reader::from_str(doc);
        reader.config_mut().check_end_names = true;
        let mut depth = 0usize;
        let mut roots = 0usize;
        loop {
            let event = reader.read_event().map_err(|e| format!("at byte {}: {e}", reader.error_position()))?;
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if depth == 0 {
                        roots += 1;
                        if roots > 1 {
                            return Err("more than one root element".into());
                        }
                    }
                    for attr in e.attributes() {
                        let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
                        check_references(&attr.value)?;
                    }
                    if matches!(event, Event::Start(_)) {
                        depth += 1;
                    }
                }
                Event::End(_) => depth = depth.saturating_sub(1),
                Event::Text(ref t) if depth == 0 && !t.trim().is_empty() => {
                    return Err("text outside the root element".into());
                }
                Event::GeneralRef(ref r) => {
                    if depth == 0 {
                        return Err("reference outside the root element".into());
                    }
                    check_reference(r)?;
                }
                Event::CData(_) if depth == 0 => return Err("CDATA outside the root element".into()),
                Event::Eof => break,
                _ => {}
            }
        }
        if depth != 0 {
            return Err("document ends inside an element".into());
        }
        if roots != 1 {
            return Err("no root element".into());
        }
        Ok(())
    }

    #[test]
    fn well_formed_documents_pass() {
        for ok in [
            "<device/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device a=\"x &amp; y\"><n>&lt;&#x41;&#65;</n></device>\n",
            "<device><![CDATA[<x>]]><!-- c --></device>",
        ] {
            assert_eq!(check_well_formed(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn malformed_documents_fail() {
        for bad in [
            "",
            "<device>",
            "<device></devices>",
            "<a/><b/>",
            "text<device/>",
            "<device>\u{1}</device>",
            "<device>&#1;</device>",
            "<device>&nbsp;</device>",
            "<device a=\"&bogus;\"/>",
            "<device a=\"1\" a=\"2\"/>",
            "<device><a></device></a>",
            "<device>]]></device>",
            "<!DOCTYPE device><device/>",
            "<device><?xml version=\"1.0\"?></device>",
            "<device><!-- a -- b --></device>",
            "<device a=\"1\"b=\"2\"/>",
            "<device a=1/>",
            "<1device/>",
            "<device><a></a ></device",
            // A repeated attribute past the first eight (kept on the stack) and among the ones after.
            "<d a=\"\" b=\"\" c=\"\" e=\"\" f=\"\" g=\"\" h=\"\" i=\"\" j=\"\" a=\"\"/>",
            "<d a=\"\" b=\"\" c=\"\" e=\"\" f=\"\" g=\"\" h=\"\" i=\"\" j=\"\" k=\"\" j=\"\"/>",
            // A reference or ']]>' in a document that has only one of them.
            "<device>a]]></device>",
            "<device>&bogus;</device>",
        ] {
            assert!(check_well_formed(bad).is_err(), "{bad:?} passed");
        }
        let many = "<d a=\"\" b=\"\" c=\"\" e=\"\" f=\"\" g=\"\" h=\"\" i=\"\" j=\"\" k=\"&amp;\"/>";
        assert_eq!(check_well_formed(many), Ok(()));
    }

    /// The eight-at-a-time letter scan stops exactly where the byte-by-byte definition says it may: every
    /// byte it skipped is an ASCII letter, and the eight after its stop hold one that is not (or run out).
    #[test]
    fn the_letter_scan_skips_only_letters() {
        let letters = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for at in 0..letters.len() {
            for c in 0..=255u8 {
                let mut b = letters.to_vec();
                b[at] = c;
                for from in [0, 3] {
                    let stop = skip_letters(&b, from);
                    assert_eq!((stop - from) % 8, 0);
                    assert!(b[from..stop].iter().all(u8::is_ascii_alphabetic), "{c:#x} at {at}: past a non-letter");
                    if let Some(next) = b.get(stop..stop + 8) {
                        assert!(!next.iter().all(u8::is_ascii_alphabetic), "{c:#x} at {at}: stopped early");
                    }
                }
            }
        }
    }

    /// Names of every length, with digits, `-`, `.` and non-ASCII letters anywhere in them: an element
    /// closed by its own name passes, closed by a name one byte or one character different fails, as the
    /// general reader decides.
    #[test]
    fn long_names_are_read_to_their_end() {
        let base: Vec<char> = "sipOAuthMRAPortAndSomeMoreLetters".chars().collect();
        for len in 1..base.len() {
            for at in 0..len {
                for c in ['z', '7', '-', '.', '_', ':', 'é', '\u{4E2D}', ' ', '/', '>'] {
                    let mut name = base[..len].to_vec();
                    name[at] = c;
                    let name: String = name.into_iter().collect();
                    // White space may end a tag: `<s >` is the element `s`.
                    let core = name.strip_suffix(' ').unwrap_or(&name);
                    let mut chars = core.chars();
                    let is_name = chars.next().is_some_and(is_name_start) && chars.all(is_name_char);
                    let ok = format!("<{name}></{name}>");
                    assert_eq!(check_well_formed(&ok).is_ok(), is_name, "{ok}");
                    let other: String = base[..len].iter().collect();
                    let mixed = format!("<{name}></{other}>");
                    assert_eq!(check_well_formed(&mixed).is_ok(), is_name && core == other, "{mixed}");
                    if is_name {
                        assert_eq!(quick_xml_check(&ok), Ok(()), "{ok}");
                    }
                    let longer = format!("<{name}></{name}x>");
                    assert!(check_well_formed(&longer).is_err(), "{longer}");
                }
            }
        }
    }

    /// Every document the scanner accepts, the general reader accepts too: the rendered files of the
    /// example, and many mutations of one (bytes deleted, doubled, replaced by markup characters).
    #[test]
    fn the_scanner_accepts_nothing_the_reader_refuses() {
        let samples = [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device a=\"x &amp; y\" b='2'>\n  <n>&lt;&#x41;&#65;</n>\n  \
             <![CDATA[<x>]]><!-- c --><?pi data?><e/><f g = \"1\" /></device>\n",
            "<device><sipLines><line button=\"1\" lineIndex=\"1\"><featureLabel>A &amp; B</featureLabel></line></sipLines></device>",
        ];
        let marks = [b'<', b'>', b'&', b'/', b'"', b'\'', b'=', b' ', b';', b'!', b'?', b'-', b']', b'#', b'x'];
        let mut checked = 0;
        for sample in samples {
            assert_eq!(check_well_formed(sample), Ok(()), "{sample}");
            assert_eq!(quick_xml_check(sample), Ok(()), "{sample}");
            let bytes = sample.as_bytes();
            for i in 0..bytes.len() {
                let mut variants: Vec<Vec<u8>> = Vec::new();
                let mut deleted = bytes.to_vec();
                deleted.remove(i);
                variants.push(deleted);
                let mut doubled = bytes.to_vec();
                doubled.insert(i, bytes[i]);
                variants.push(doubled);
                for m in marks {
                    let mut replaced = bytes.to_vec();
                    replaced[i] = m;
                    variants.push(replaced);
                    let mut inserted = bytes.to_vec();
                    inserted.insert(i, m);
                    variants.push(inserted);
                }
                for v in variants {
                    let Ok(text) = String::from_utf8(v) else { continue };
                    checked += 1;
                    if check_well_formed(&text).is_ok() {
                        assert_eq!(
                            quick_xml_check(&text),
                            Ok(()),
                            "the scanner accepted what the reader refuses: {text:?}"
                        );
                    }
                }
            }
        }
        assert!(checked > 5000, "{checked}");
    }
}
