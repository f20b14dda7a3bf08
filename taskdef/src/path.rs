//! JSON paths as shown to users: `containerDefinitions[0].dockerLabels["com.example.x"]`.
//!
//! Object keys made of ASCII letters, digits, `_` and `-` are written after a
//! dot (`a.b`); any other key is written as a quoted JSON string in brackets
//! (`dockerLabels["com.example"]`), array indices as `[n]`. The whole document
//! is `$`; the empty string is never a path.

/// The path of the whole document.
pub(crate) const ROOT: &str = "$";

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `base` + the object key `key`.
pub(crate) fn key(base: &str, key: &str) -> String {
    let base = if base == ROOT { "" } else { base };
    if is_plain_key(key) {
        if base.is_empty() {
            key.to_owned()
        } else {
            format!("{base}.{key}")
        }
    } else {
        // A String always serializes; the fallback only keeps this total.
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("\"{key}\""));
        format!("{base}[{quoted}]")
    }
}

/// `base` + the array index `index`.
pub(crate) fn index(base: &str, index: usize) -> String {
    let base = if base == ROOT { "" } else { base };
    format!("{base}[{index}]")
}

/// A path relative to a task definition, placed under `prefix` (the empty
/// string for a definition at the top of the document, `taskDefinition` for
/// the describe-task-definition shape).
pub(crate) fn under(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        return rel.to_owned();
    }
    if rel == ROOT || rel.is_empty() {
        return prefix.to_owned();
    }
    if rel.starts_with('[') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}.{rel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_keys_and_indices() {
        assert_eq!(key("", "family"), "family");
        assert_eq!(key(ROOT, "family"), "family");
        assert_eq!(index("containerDefinitions", 2), "containerDefinitions[2]");
        assert_eq!(key("a[0]", "b"), "a[0].b");
        assert_eq!(
            key("dockerLabels", "com.example.x"),
            "dockerLabels[\"com.example.x\"]"
        );
        assert_eq!(under("taskDefinition", "family"), "taskDefinition.family");
        assert_eq!(under("taskDefinition", ROOT), "taskDefinition");
        assert_eq!(under("", "family"), "family");
    }
}
