//! Which browser origins may talk to the service across origins (WebSocket and CORS).

/// The request's own host is always allowed; others only when listed (`*` allows any).
/// Origins are compared as RFC 6454 says: case-insensitively, with a scheme's default port
/// the same as no port (`http://h:80` is `http://h`).
pub fn is_allowed(origin: &str, own_host: Option<&str>, allowed: &[String]) -> bool {
    let Some((scheme, authority)) = normalize(origin) else {
        return false;
    };
    let own = own_host
        .filter(|host| !host.is_empty())
        .is_some_and(|host| authority == without_default_port(&scheme, &host.to_ascii_lowercase()));
    own || allowed.iter().any(|a| {
        a == "*" || normalize(a.trim_end_matches('/')) == Some((scheme.clone(), authority.clone()))
    })
}

/// `scheme://authority` lowercased, with the default port dropped; `None` for anything else
/// (`null`, a path, no scheme).
fn normalize(origin: &str) -> Option<(String, String)> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    if scheme.is_empty() || authority.is_empty() || authority.contains('/') {
        return None;
    }
    let authority = without_default_port(scheme, authority);
    Some((scheme.to_owned(), authority))
}

fn without_default_port(scheme: &str, authority: &str) -> String {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => "",
    };
    match authority.strip_suffix(default) {
        Some(bare) if !default.is_empty() => bare.to_owned(),
        _ => authority.to_owned(),
    }
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

    #[test]
    fn default_ports_are_the_same_as_none() {
        let listed = vec!["https://app.example:443".to_owned()];
        assert!(is_allowed("https://app.example", None, &listed));
        assert!(is_allowed("https://app.example:443", None, &listed));
        assert!(!is_allowed("https://app.example:8443", None, &listed));
        assert!(is_allowed(
            "http://files.example:80",
            Some("files.example"),
            &[]
        ));
        assert!(is_allowed(
            "http://files.example",
            Some("files.example:80"),
            &[]
        ));
        assert!(!is_allowed(
            "http://files.example:81",
            Some("files.example"),
            &[]
        ));
        assert!(!is_allowed(
            "https://app.example",
            None,
            &["http://app.example".to_owned()]
        ));
    }
}
