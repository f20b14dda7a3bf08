//! Text that came from outside (an agent, a task definition, the control
//! plane) as the CLIs print it to a terminal.
//!
//! A hostile agent chooses its hostname and the family, reason and status
//! strings of its tasks; printed raw, an escape sequence in them can set the
//! window title, move the cursor, and hide or fake rows. [`escape_control`]
//! shows every control character (C0, DEL, C1) as a visible `\u{..}`
//! escape, so a table shows what was stored and nothing else. JSON output
//! needs no such step: serde_json escapes control characters itself.

use std::borrow::Cow;

/// Whether `c` is a control character a terminal may act on: C0 (tab and
/// newline included: they break table rows), DEL, C1.
fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// `s` with every control character written as `\u{XX}` (ESC is
/// `\u{1b}`); `s` itself when it has none.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert!(matches!(escape_control("web-1 ok"), Cow::Borrowed(_)));
        assert_eq!(escape_control("日本 ✓"), "日本 ✓");
        let hostile = "evil\x1b]0;pwned-title\x07\x1b[2K\x1b[1A\x1b[31mOK\x1b[0m";
        let shown = escape_control(hostile);
        assert_eq!(
            shown,
            "evil\\u{1b}]0;pwned-title\\u{7}\\u{1b}[2K\\u{1b}[1A\\u{1b}[31mOK\\u{1b}[0m"
        );
        assert!(!shown.chars().any(is_control));
        assert_eq!(
            escape_control("a\tb\nc\rd\0"),
            "a\\u{9}b\\u{a}c\\u{d}d\\u{0}"
        );
        assert_eq!(escape_control("del\x7f"), "del\\u{7f}");
        // C1: the 8-bit CSI (U+009B) and friends.
        assert_eq!(escape_control("x\u{9b}2Jy\u{85}"), "x\\u{9b}2Jy\\u{85}");
        // Just outside the ranges: printed as they are.
        assert_eq!(escape_control(" ~\u{a0}"), " ~\u{a0}");
    }
}
