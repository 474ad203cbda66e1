//! Label selector strings parsed into kube-core's `Selector`, to match a pod's labels.
//!
//! kube-core builds a `Selector` from expressions or a `LabelSelector` but parses no string, so
//! the string syntax is read here, into kube-core's `Expression`s; matching is kube-core's
//! (`SelectorExt::matches`). The API server stays the authority on what a selector means: this
//! serves the one check a shared watch needs, a pod found by a direct read that the watch cannot
//! show because its labels do not match the caller's selector.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// A selector in the Kubernetes syntax (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`, joined by commas); an empty one selects everything. The error names the
/// requirement that could not be read and why.
pub fn parse(selector: &str) -> Result<Selector, String> {
    if selector.trim().is_empty() {
        return Ok(Selector::default());
    }
    split_requirements(selector)?
        .into_iter()
        .map(|requirement| {
            expression(requirement.trim())
                .map_err(|why| format!("label selector requirement {requirement:?}: {why}"))
        })
        .collect()
}

/// Split at the commas outside parentheses (those inside separate the values of a set).
fn split_requirements(selector: &str) -> Result<Vec<&str>, String> {
    let unbalanced = || format!("label selector {selector:?}: unbalanced parentheses");
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(unbalanced)?,
            ',' if depth == 0 => {
                parts.extend(selector.get(start..i));
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced());
    }
    parts.extend(selector.get(start..));
    Ok(parts)
}

fn expression(req: &str) -> Result<Expression, String> {
    if req.is_empty() {
        return Err("empty".into());
    }
    if let Some(key) = req.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key.trim())?));
    }
    if let Some((key, value)) = req.split_once("!=") {
        return Ok(Expression::NotEqual(
            key_of(key.trim())?,
            value.trim().into(),
        ));
    }
    if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(Expression::Equal(key_of(key.trim())?, value.trim().into()));
    }
    if let Some(open) = req.find('(') {
        let (head, set) = req.split_at(open);
        let values: BTreeSet<String> = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or("expected a set of values in parentheses at its end")?
            .split(',')
            .map(|v| v.trim().to_string())
            .collect();
        let mut words = head.split_whitespace();
        let key = key_of(words.next().unwrap_or_default())?;
        let op = words.next().unwrap_or_default();
        if words.next().is_some() {
            return Err("expected `key in (...)` or `key notin (...)`".into());
        }
        return match op {
            "in" => Ok(Expression::In(key, values)),
            "notin" => Ok(Expression::NotIn(key, values)),
            _ => Err(format!(
                "unknown set operator {op:?} (expected in or notin)"
            )),
        };
    }
    Ok(Expression::Exists(key_of(req)?))
}

/// A label key has no spaces or operator characters.
fn key_of(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("{key:?} is not a label key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::SelectorExt;
    use std::collections::BTreeMap;

    /// The verdict of `selector` on `labels`; `None` when it cannot be read.
    fn matches(selector: &str, labels: &BTreeMap<String, String>) -> Option<bool> {
        parse(selector).ok().map(|s| s.matches(labels))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn equality() {
        let l = labels(&[
            ("app.kubernetes.io/managed-by", "flame_k8s_backend"),
            ("flame-k8s-backend.io/parent-uid", "u1"),
        ]);
        let sel =
            "app.kubernetes.io/managed-by=flame_k8s_backend,flame-k8s-backend.io/parent-uid=u1";
        assert_eq!(matches(sel, &l), Some(true));
        let other =
            "app.kubernetes.io/managed-by=flame_k8s_backend,flame-k8s-backend.io/parent-uid=u2";
        assert_eq!(matches(other, &l), Some(false));
        assert_eq!(matches("a==1", &labels(&[("a", "1")])), Some(true));
        assert_eq!(matches("a != 1", &labels(&[("a", "2")])), Some(true));
        assert_eq!(matches("a!=1", &labels(&[])), Some(true));
        assert_eq!(matches("a!=1", &labels(&[("a", "1")])), Some(false));
        assert_eq!(matches("", &labels(&[])), Some(true));
    }

    #[test]
    fn existence_and_sets() {
        let l = labels(&[("a", "1"), ("tier", "x")]);
        assert_eq!(matches("a", &l), Some(true));
        assert_eq!(matches("!a", &l), Some(false));
        assert_eq!(matches("!b, a", &l), Some(true));
        assert_eq!(matches("tier in (x, y),a", &l), Some(true));
        assert_eq!(matches("tier notin (x,y)", &l), Some(false));
        assert_eq!(matches("b notin (x)", &l), Some(true));
        assert_eq!(matches("b in (x)", &l), Some(false));
    }

    #[test]
    fn what_is_not_understood_gets_no_verdict() {
        let l = labels(&[("a", "1")]);
        for bad in [
            "a=1,",
            "(",
            "a in (1",
            "a in 1)",
            "a gt (1)",
            "a b",
            "a in (1) x",
            ",",
            "=1",
        ] {
            assert_eq!(matches(bad, &l), None, "{bad}");
        }
    }

    #[test]
    fn errors_name_the_requirement_and_why() {
        assert_eq!(
            parse("a=1,b c").unwrap_err(),
            r#"label selector requirement "b c": "b c" is not a label key"#
        );
        assert_eq!(
            parse("a gt (1)").unwrap_err(),
            r#"label selector requirement "a gt (1)": unknown set operator "gt" (expected in or notin)"#
        );
        assert_eq!(
            parse("a in (1").unwrap_err(),
            r#"label selector "a in (1": unbalanced parentheses"#
        );
        assert_eq!(
            parse("a=1,").unwrap_err(),
            r#"label selector requirement "": empty"#
        );
    }

    #[test]
    fn parses_into_kube_core_expressions() {
        let s = parse("a=1, b!=2, c, !d, e in (x,y), f notin (z)").unwrap();
        let expected: Selector = [
            Expression::Equal("a".into(), "1".into()),
            Expression::NotEqual("b".into(), "2".into()),
            Expression::Exists("c".into()),
            Expression::DoesNotExist("d".into()),
            Expression::In("e".into(), ["x".into(), "y".into()].into()),
            Expression::NotIn("f".into(), ["z".into()].into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(s, expected);
        assert!(parse(" ").unwrap().selects_all());
    }
}
