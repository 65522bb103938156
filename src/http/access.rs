//! Who may create uploads: with `--token`, only holders of a bearer token. An upload's id
//! stays the capability for that one upload, as API.md says.

use actix_web::http::header;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// The accepted tokens, kept only as SHA-256 digests.
#[derive(Default)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl Tokens {
    pub fn new<S: AsRef<str>>(tokens: &[S]) -> Tokens {
        Tokens {
            digests: tokens
                .iter()
                .map(|t| t.as_ref().trim())
                .filter(|t| !t.is_empty())
                .map(digest)
                .collect(),
        }
    }

    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Passes when no token is configured or the request's bearer token is one of them.
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if !self.required() {
            return Ok(());
        }
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            // The scheme is case-insensitive (RFC 9110, section 11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| digest(t.trim()));
        // Comparing digests, every byte, of every token: the time taken says nothing about
        // how much of a guess was right (or how long the real tokens are).
        let matched = presented.is_some_and(|p| {
            let found = self
                .digests
                .iter()
                .fold(Choice::from(0), |found, d| found | d[..].ct_eq(&p[..]));
            bool::from(found)
        });
        if matched {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn bearer_tokens_are_checked_when_configured() {
        let open = Tokens::new::<&str>(&[]);
        assert!(open
            .check(&TestRequest::default().to_http_request())
            .is_ok());
        let tokens = Tokens::new(&["s3cret", "other", " "]);
        let with = |value: &str| {
            TestRequest::default()
                .insert_header((header::AUTHORIZATION, value))
                .to_http_request()
        };
        assert!(tokens.check(&with("Bearer s3cret")).is_ok());
        assert!(tokens.check(&with("Bearer other")).is_ok());
        assert!(tokens.check(&with("BEARER s3cret")).is_ok());
        assert!(tokens.check(&with("bEaReR  s3cret")).is_ok());
        assert!(tokens.check(&with("Bearer s3cre")).is_err());
        assert!(tokens.check(&with("Basic s3cret")).is_err());
        assert!(tokens
            .check(&TestRequest::default().to_http_request())
            .is_err());
    }
}
