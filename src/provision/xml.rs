//! The last check before anyone sees a rendered file: it must be one well-formed XML 1.0 document. A
//! template can produce anything; a phone that gets a broken file may keep its old configuration or none.

/// Checks that `doc` is one well-formed XML document: legal characters only, one root element, every
/// element closed in order, attributes well-formed, every reference known.
pub fn check_well_formed(doc: &str) -> Result<(), String> {
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

/// False when `doc` (UTF-8) certainly holds only XML `Char`s: no control byte but tab, newline and carriage
/// return, and no 0xEF, the lead byte of U+FFFE and U+FFFF (surrogates cannot occur in a `str`). Branch-free
/// over 64-byte blocks so that it vectorizes: rendered files are almost always clean, and decoding every
/// `char` was a quarter of the well-formedness check.
fn may_hold_illegal_chars(doc: &[u8]) -> bool {
    let bad = |c: u8| (c < 0x20) & (c != b'\t') & (c != b'\n') & (c != b'\r') | (c == 0xEF);
    doc.chunks(64).any(|block| block.iter().fold(false, |acc, &c| acc | bad(c)))
}

/// XML 1.0 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(check_well_formed(bad).is_err(), "{bad:?} passed");
        }
    }
}
