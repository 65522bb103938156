//! What clients describe, checked: file names and declared digests.

/// The name without bidirectional controls, which can make `exe.txt` display as `txt.exe`.
pub fn without_bidi(name: &str) -> String {
    name.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            )
        })
        .collect()
}

/// Validates a client's file name: 1–255 bytes, a base name with no separators or controls.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name must not be empty");
    }
    if name.len() > 255 {
        return Err("name must be at most 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return Err("name must be a base name, without '/' or '\\'");
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters");
    }
    if name == "." || name == ".." {
        return Err("name must not be '.' or '..'");
    }
    Ok(())
}

/// A declared whole-file digest: 64 hex digits, stored lowercase.
pub fn parse_sha256_hex(text: &str) -> Option<String> {
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_base_names() {
        assert!(validate_name("movie.mp4").is_ok());
        assert_eq!(without_bidi("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(without_bidi("\u{2067}a\u{2069}\u{200F}b\u{061C}"), "ab");
        assert_eq!(without_bidi("fête.txt"), "fête.txt");
        assert!(validate_name("fête.txt").is_ok());
        for bad in ["", "../x", "a/b", "a\\b", "a\nb", "a\u{7f}", "..", "."] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn names_and_digests_take_any_text(text in ".{0,300}") {
            if validate_name(&text).is_ok() {
                prop_assert!(!text.is_empty() && text.len() <= 255 && !text.contains('/'));
            }
            if let Some(hex) = parse_sha256_hex(&text) {
                prop_assert_eq!(hex.len(), 64);
            }
        }
    }
}
