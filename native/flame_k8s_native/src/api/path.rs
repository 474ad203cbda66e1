//! Paths into JSON documents, formatted like `spec.containers[0].name`.
//!
//! Used by the term converter and by manifest validation so that both name the offending
//! field the same way.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path from the document root. The empty path displays as `root` unless a root name is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path {
    root: Option<String>,
    segments: Vec<Segment>,
}

impl Path {
    pub fn new() -> Self {
        Self::default()
    }

    /// A path whose empty form displays as `name` (e.g. the NIF argument name).
    pub fn named(name: &str) -> Self {
        Path {
            root: Some(name.to_string()),
            segments: Vec::new(),
        }
    }

    pub fn push_key(&mut self, key: &str) {
        self.segments.push(Segment::Key(key.to_string()));
    }

    pub fn push_index(&mut self, index: usize) {
        self.segments.push(Segment::Index(index));
    }

    pub fn pop(&mut self) {
        self.segments.pop();
    }

    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Keys made of these characters print bare; others print as `["key"]`.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str(self.root.as_deref().unwrap_or("root"));
        }
        let mut first = true;
        for seg in &self.segments {
            match seg {
                Segment::Key(k) if is_plain_key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => {
                    // JSON string quoting can't fail for a &str.
                    let quoted = serde_json::to_string(k).unwrap_or_else(|_| format!("{k:?}"));
                    write!(f, "[{quoted}]")?;
                }
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

impl From<&serde_path_to_error::Path> for Path {
    fn from(p: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let mut out = Path::new();
        for seg in p.iter() {
            match seg {
                S::Seq { index } => out.push_index(*index),
                S::Map { key } => out.push_key(key),
                S::Enum { variant } => out.push_key(variant),
                S::Unknown => out.push_key("?"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_keys_and_indexes() {
        let mut p = Path::new();
        assert_eq!(p.to_string(), "root");
        p.push_key("spec");
        p.push_key("containers");
        p.push_index(0);
        p.push_key("name");
        assert_eq!(p.to_string(), "spec.containers[0].name");
        p.pop();
        p.pop();
        assert_eq!(p.to_string(), "spec.containers");
        assert_eq!(p.depth(), 2);
    }

    #[test]
    fn quotes_keys_with_dots_or_slashes() {
        let mut p = Path::new();
        p.push_key("metadata");
        p.push_key("labels");
        p.push_key("app.kubernetes.io/name");
        assert_eq!(
            p.to_string(),
            r#"metadata.labels["app.kubernetes.io/name"]"#
        );
        let mut q = Path::new();
        q.push_key("");
        assert_eq!(q.to_string(), r#"[""]"#);
    }

    #[test]
    fn named_root() {
        let mut p = Path::named("manifest");
        assert_eq!(p.to_string(), "manifest");
        p.push_index(3);
        assert_eq!(p.to_string(), "[3]");
    }
}
