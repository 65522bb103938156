//! Which browser origins may talk to the service, and which `Host` names it answers to.
//!
//! The service's own origin comes from its configuration, never from the request: the bind
//! address, `localhost`, `--public-url` and `--allowed-host`. So a page on another site (or
//! one that rebinds its DNS name to 127.0.0.1) cannot pass for it.

use std::net::SocketAddr;

/// The service's own names and the origins allowed besides them.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Host names (no port) the service answers to, lowercase.
    hosts: Vec<String>,
    /// Its own origins, normalized as `normalize` does.
    own: Vec<(String, String)>,
    /// `--allowed-origin` values, normalized; `*` allows any.
    allowed: Vec<String>,
    any_origin: bool,
    /// Bound to a loopback address: a request naming another host is DNS rebinding.
    loopback: bool,
}

impl Policy {
    pub fn new(
        bound: SocketAddr,
        public_url: Option<&str>,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> Policy {
        let port = bound.port();
        if bound.ip().is_unspecified() && public_url.is_none() && allowed_hosts.is_empty() {
            // Browsers name the service by the address they reached; the page's own writes
            // carry that origin and would be refused.
            tracing::warn!(%bound, "bound to every address, but no --public-url or --allowed-host names this service: pages loaded through any other name cannot upload (403 forbidden_origin)");
        }
        let mut hosts = vec!["localhost".to_owned(), host_of_ip(bound)];
        hosts.extend(
            allowed_hosts
                .iter()
                .map(|h| hostname(&h.to_ascii_lowercase())),
        );
        let mut own: Vec<(String, String)> = hosts
            .iter()
            .map(|h| {
                (
                    "http".to_owned(),
                    without_default_port("http", &format!("{h}:{port}")),
                )
            })
            .collect();
        if let Some((scheme, authority)) = public_url.and_then(origin_of_url) {
            hosts.push(hostname(&authority));
            own.push((scheme, authority));
        }
        Policy {
            hosts,
            own,
            allowed: allowed_origins
                .iter()
                .filter_map(|a| {
                    normalize(a.trim_end_matches('/')).map(|(s, h)| format!("{s}://{h}"))
                })
                .collect(),
            any_origin: allowed_origins.iter().any(|a| a == "*"),
            loopback: bound.ip().is_loopback(),
        }
    }

    /// False when the service is bound to loopback and `host` (a `Host` header) names
    /// something else: a rebinding attempt.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        if !self.loopback {
            return true;
        }
        host.is_some_and(|h| {
            self.hosts
                .contains(&hostname(&h.trim().to_ascii_lowercase()))
        })
    }

    /// The service's own WebSocket origins (`ws://127.0.0.1:8080 ws://localhost:8080 …`), for
    /// the page's `connect-src`: browsers without CSP 3 do not count `ws:` as `'self'`.
    pub fn websocket_sources(&self) -> String {
        self.own
            .iter()
            .filter_map(|(scheme, authority)| match scheme.as_str() {
                "http" => Some(format!("ws://{authority}")),
                "https" => Some(format!("wss://{authority}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether a request carrying this `Origin` may act here. `null` never may.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let Some((scheme, authority)) = normalize(origin) else {
            return false;
        };
        self.any_origin
            || self
                .own
                .iter()
                .any(|(s, a)| *s == scheme && *a == authority)
            || self.allowed.contains(&format!("{scheme}://{authority}"))
    }
}

fn host_of_ip(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    }
}

/// The host name of an authority, without its port (`[::1]:8080` → `[::1]`).
fn hostname(authority: &str) -> String {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority.to_owned(), |(h, _)| format!("{h}]"));
    }
    authority.split(':').next().unwrap_or_default().to_owned()
}

/// The origin of a URL such as `--public-url`'s, whose path (a prefix under a reverse proxy)
/// is no part of it.
fn origin_of_url(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    normalize(&format!("{scheme}://{authority}"))
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
    fn the_policy_knows_its_own_origin_from_its_configuration() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let policy = Policy::new(
            bound,
            Some("https://files.example.com/"),
            &["uploads.internal".to_owned()],
            &["https://app.example".to_owned()],
        );
        for own in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://uploads.internal:8080",
            "https://files.example.com",
            "https://files.example.com:443",
            "https://app.example",
        ] {
            assert!(policy.origin_allowed(own), "{own}");
        }
        for foreign in [
            "null",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8080",
            "http://evil.example",
            "http://files.example.com",
            "",
        ] {
            assert!(!policy.origin_allowed(foreign), "{foreign}");
        }
        for host in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:8080",
            "files.example.com",
        ] {
            assert!(policy.host_allowed(Some(host)), "{host}");
        }
        for host in ["evil.example:8080", "127.0.0.2:8080", ""] {
            assert!(!policy.host_allowed(Some(host)), "{host}");
        }
        assert!(!policy.host_allowed(None));
        let public = Policy::new("0.0.0.0:80".parse().unwrap(), None, &[], &[]);
        assert!(
            public.host_allowed(Some("anything.example")),
            "not bound to loopback"
        );
        let v6 = Policy::new("[::1]:8080".parse().unwrap(), None, &[], &[]);
        assert!(v6.host_allowed(Some("[::1]:8080")));
        assert!(v6.origin_allowed("http://[::1]:8080"));
    }

    #[test]
    fn a_public_url_with_a_path_names_its_origin() {
        let policy = Policy::new(
            "127.0.0.1:8080".parse().unwrap(),
            Some("https://example.com:8443/files/"),
            &[],
            &[],
        );
        assert!(policy.origin_allowed("https://example.com:8443"));
        assert!(!policy.origin_allowed("https://example.com"));
        assert!(policy.host_allowed(Some("example.com")));
        assert_eq!(
            policy.websocket_sources(),
            "ws://localhost:8080 ws://127.0.0.1:8080 wss://example.com:8443"
        );
    }

    #[test]
    fn default_ports_are_the_same_as_none() {
        let policy = Policy::new(
            "127.0.0.1:80".parse().unwrap(),
            None,
            &[],
            &["https://app.example:443".to_owned()],
        );
        assert!(policy.origin_allowed("https://app.example"));
        assert!(policy.origin_allowed("HTTPS://APP.example:443"));
        assert!(!policy.origin_allowed("https://app.example:8443"));
        assert!(!policy.origin_allowed("http://app.example"));
        assert!(policy.origin_allowed("http://localhost"));
        assert!(policy.origin_allowed("http://127.0.0.1:80"));
        assert!(!policy.origin_allowed("http://127.0.0.1:81"));
    }
}
