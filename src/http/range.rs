//! The `Range` header of a download (RFC 9110 §14): one byte range, or the whole file.

/// What to send for a `Range` header against a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range (absent, malformed, or several ranges): send the whole file.
    Whole,
    /// Send bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// A well-formed range that does not overlap the file.
    Unsatisfiable,
}

pub fn resolve(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        // Multipart/byteranges answers are optional; the whole file is a correct answer.
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeAnswer::Whole,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (start, end) => {
            let Some(start) = number(start) else {
                return RangeAnswer::Whole;
            };
            let end = match end {
                "" => u64::MAX,
                text => match number(text) {
                    Some(end) if end >= start => end,
                    _ => return RangeAnswer::Whole,
                },
            };
            if start >= len {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAnswer::*;

    #[test]
    fn single_ranges_resolve_against_the_length() {
        assert_eq!(resolve(None, 100), Whole);
        assert_eq!(
            resolve(Some("bytes=0-9"), 100),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            resolve(Some("bytes=90-"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            resolve(Some("bytes=90-500"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            resolve(Some("bytes=-10"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            resolve(Some("bytes=-500"), 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(resolve(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_mean_the_whole_file() {
        for header in [
            "items=0-1",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=0-1,5-6",
            "bytes=",
            "bytes=-",
        ] {
            assert_eq!(resolve(Some(header), 100), Whole, "{header}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_range_header_resolves_inside_the_file(header in "(bytes=)?[-0-9, a-z]{0,30}", len in 0u64..10_000) {
            if let RangeAnswer::Partial { start, end } = resolve(Some(&header), len) {
                prop_assert!(start <= end && end < len, "{header} on {len}: {start}-{end}");
            }
        }
    }
}
