//! Text that came from outside (an agent, a task definition, the control
//! plane) as the CLIs print it to a terminal.
//!
//! A hostile agent chooses its hostname and the family, reason and status
//! strings of its tasks; printed raw, an escape sequence in them can set the
//! window title, move the cursor, and hide or fake rows. [`escape_control`]
//! shows every control character (C0, DEL, C1) as a visible `\u{..}`
//! escape, so a table shows what was stored and nothing else. JSON output
//! needs no such step: serde_json escapes control characters itself.
//!
//! [`error_chain`] writes an error and its causes on one line, the form every
//! berth error message takes when it passes on a library's error.

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

/// `s` quoted and escaped as Rust debug output, cut to its first 64
/// characters (with the full length in bytes when cut): an untrusted value
/// as an error message may name it, without flooding a log or a terminal.
pub fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}… ({} bytes)", s.len())
    } else {
        format!("{cut:?}")
    }
}

/// An error and its causes on one line, `: `-separated: `client error
/// (Connect): Permission denied`. A cause whose text the line already holds
/// (many errors repeat their source in their own message) is left out.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn an_error_chain_is_one_line_without_repeats() {
        let err = Layer(
            "client error (Connect)",
            Some(Box::new(Layer(
                "Permission denied",
                Some(Box::new(Layer("Permission denied", None))),
            ))),
        );
        assert_eq!(
            error_chain(&err),
            "client error (Connect): Permission denied"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
        let repeats = Layer(
            "transport error: connection refused",
            Some(Box::new(Layer("connection refused", None))),
        );
        assert_eq!(error_chain(&repeats), "transport error: connection refused");
    }

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
