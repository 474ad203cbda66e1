//! Secret redaction (`error::redact`): never a panic (it slices strings by byte offsets), a
//! token never survives it, and a short token never garbles the message.
//!
//! A token here is what bearer tokens are made of (letters, digits, `-`, `_`, `.`, `~`, `+`,
//! `/`, `=`) and is not part of the marker `[REDACTED]` itself (a token `"RED"` is still
//! "visible" in every marker). One of `MIN_REDACTED_LEN` or more never survives; a shorter one
//! never survives where it stands alone (here: quoted), and a message where it only occurs
//! inside words is left as it is.
//!
//! Input: `token \0 message`.
#![no_main]

use flame_k8s_native_fuzz::error::{redact, MIN_REDACTED_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (secret, message) = text.split_once('\0').unwrap_or(("", text));
    let out = redact(message, Some(secret));
    let plain = redact(message, None);

    let token_like = !secret.is_empty()
        && secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c));
    if token_like && !"[REDACTED]".contains(secret) {
        if secret.len() >= MIN_REDACTED_LEN {
            assert!(!out.contains(secret), "{secret:?} survives in {out:?}");
        } else {
            let quoted = format!("\"{secret}\"");
            let probe = redact(&format!("{message} {quoted}"), Some(secret));
            assert!(
                !probe.ends_with(&quoted),
                "{secret:?} survives in {probe:?}"
            );
        }
    }
    // A short token that occurs only glued to letters or digits garbles nothing.
    if !secret.is_empty() && secret.len() < MIN_REDACTED_LEN && only_inside_words(message, secret) {
        assert_eq!(out, plain, "{secret:?} garbled {message:?}");
    }
    // Whatever followed "Bearer " is gone, with or without a known secret.
    for rest in plain.to_ascii_lowercase().split("bearer ").skip(1) {
        let word: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && !"\"',".contains(*c))
            .collect();
        assert!(
            word.is_empty() || word == "[redacted]",
            "{word:?} in {plain:?}"
        );
    }
});

/// Every occurrence of `secret` in `message`, overlapping ones included, has a letter or digit
/// right before or after it.
fn only_inside_words(message: &str, secret: &str) -> bool {
    let glued = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    message
        .char_indices()
        .filter(|(at, _)| message.get(*at..).is_some_and(|m| m.starts_with(secret)))
        .all(|(at, _)| {
            let before = message.get(..at).and_then(|b| b.chars().next_back());
            let after = message
                .get(at + secret.len()..)
                .and_then(|a| a.chars().next());
            glued(before) || glued(after)
        })
}
