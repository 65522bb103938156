//! Which browser origins may talk to the service across origins (WebSocket and CORS).

/// The request's own host is always allowed; others only when listed (`*` allows any).
pub fn is_allowed(origin: &str, own_host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim();
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let own = own_host.is_some_and(|host| !host.is_empty() && authority.eq_ignore_ascii_case(host));
    own || allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_host_and_listed_origins_are_allowed() {
        let listed = vec!["https://app.example".to_owned()];
        assert!(is_allowed(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(is_allowed("https://app.example", Some("x"), &listed));
        assert!(is_allowed("https://APP.example", None, &listed));
        assert!(!is_allowed(
            "https://evil.example",
            Some("127.0.0.1:8080"),
            &listed
        ));
        assert!(!is_allowed("null", Some("127.0.0.1:8080"), &listed));
        assert!(is_allowed("https://any.example", None, &["*".to_owned()]));
    }
}
