//! Secret redaction (`error::redact`): never a panic (it slices strings by byte offsets), and a
//! token never survives it.
//!
//! A token here is what bearer tokens are made of (letters, digits, `-`, `_`, `.`, `~`, `+`,
//! `/`, `=`) and is not part of the marker `[REDACTED]` itself (a token `"RED"` is still
//! "visible" in every marker). Whether a short token garbles the rest of the message is the
//! caller's concern (see the e2e secret scan): here only the bound that nothing leaks.
//!
//! Input: `token \0 message`.
#![no_main]

use flame_k8s_native_fuzz::error::redact;
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
        assert!(!out.contains(secret), "{secret:?} survives in {out:?}");
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
