//! Does a pod's label set match a label selector string? Only for the one check a shared watch
//! needs: a pod the watch never showed, found by a direct read, that the watch cannot show
//! because its labels do not match (the caller's selector is wrong for that pod).

use std::collections::BTreeMap;

/// `Some(true | false)` for a selector in the Kubernetes syntax (`k=v`, `k==v`, `k!=v`, `k`,
/// `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas); `None` for text this parser does
/// not understand (the API server is the authority: the caller then gets no verdict rather
/// than a wrong one). An empty selector matches everything.
pub fn matches(selector: &str, labels: &BTreeMap<String, String>) -> Option<bool> {
    let mut all = true;
    for requirement in split_requirements(selector)? {
        let requirement = requirement.trim();
        if requirement.is_empty() {
            if selector.trim().is_empty() {
                continue;
            }
            return None;
        }
        all &= requirement_matches(requirement, labels)?;
    }
    Some(all)
}

/// Split at the commas outside parentheses (those inside separate the values of a set).
fn split_requirements(selector: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                parts.push(selector.get(start..i)?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    parts.push(selector.get(start..)?);
    Some(parts)
}

fn requirement_matches(req: &str, labels: &BTreeMap<String, String>) -> Option<bool> {
    if let Some(key) = req.strip_prefix('!') {
        let key = valid_key(key.trim())?;
        return Some(!labels.contains_key(key));
    }
    if let Some((key, value)) = req.split_once("!=") {
        let key = valid_key(key.trim())?;
        return Some(labels.get(key).map(String::as_str) != Some(value.trim()));
    }
    if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
        let key = valid_key(key.trim())?;
        return Some(labels.get(key).map(String::as_str) == Some(value.trim()));
    }
    if let Some(open) = req.find('(') {
        let (head, set) = req.split_at(open);
        let values: Vec<&str> = set
            .strip_prefix('(')?
            .strip_suffix(')')?
            .split(',')
            .map(str::trim)
            .collect();
        let mut words = head.split_whitespace();
        let (key, op) = (valid_key(words.next()?)?, words.next()?);
        if words.next().is_some() {
            return None;
        }
        let value = labels.get(key).map(String::as_str);
        return match op {
            "in" => Some(value.is_some_and(|v| values.contains(&v))),
            "notin" => Some(!value.is_some_and(|v| values.contains(&v))),
            _ => None,
        };
    }
    valid_key(req).map(|key| labels.contains_key(key))
}

/// A label key has no spaces or operator characters; anything else is not understood here.
fn valid_key(key: &str) -> Option<&str> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
