//! Creation is rate-limited per client address: a token bucket per address, refilled at
//! `--create-rate` up to `--create-burst`. A few dozen lines and a mutex cost less than a
//! limiter crate's dependency tree, and buckets are kept only for addresses that are not full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ApiError;

/// Addresses remembered before full buckets are forgotten.
const PRUNE_ABOVE: usize = 10_000;

pub struct CreateRate {
    /// Creates per second; `None` is no limit.
    per_second: Option<f64>,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl CreateRate {
    pub fn new(per_second: Option<f64>, burst: u32) -> CreateRate {
        CreateRate {
            per_second: per_second.filter(|r| *r > 0.0),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one create from `client`'s bucket, or says how long to wait (429).
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(rate), Some(client)) = (self.per_second, client) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let burst = self.burst;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        // Rounded up: a client that waits exactly this long finds a token. In f64 (saturating
        // on the cast), so a very slow rate cannot overflow a Duration.
        let wait = (1.0 - *tokens) / rate;
        Err(ApiError::RateLimited {
            retry_after: (wait.ceil() as u64).max(1),
        })
    }
}

/// `--create-rate`: `N/s`, `N/m` or `N/h` (a bare number is per second); `0` is no limit.
pub fn parse_rate(text: &str) -> Result<Option<f64>, String> {
    let text = text.trim();
    let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
    let count: f64 = count
        .trim()
        .parse()
        .ok()
        .filter(|c: &f64| c.is_finite() && *c >= 0.0)
        .ok_or_else(|| format!("`{text}` is not a rate such as 20/s, 300/m or 0 (off)"))?;
    let seconds = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("`{other}` is not a time unit: use s, m or h")),
    };
    Ok((count > 0.0).then_some(count / seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limit = CreateRate::new(Some(1.0), 3);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(Some(one)).is_ok());
        }
        match limit.check(Some(one)) {
            Err(ApiError::RateLimited { retry_after }) => assert_eq!(retry_after, 1),
            other => panic!("{other:?}"),
        }
        assert!(
            limit.check(Some(other)).is_ok(),
            "addresses are counted apart"
        );
        assert!(CreateRate::new(None, 1).check(Some(one)).is_ok());
    }

    #[test]
    fn a_very_slow_rate_answers_instead_of_panicking() {
        let limit = CreateRate::new(parse_rate("1e-30/h").unwrap(), 1);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(limit.check(Some(one)).is_ok());
        match limit.check(Some(one)) {
            Err(ApiError::RateLimited { retry_after }) => assert_eq!(retry_after, u64::MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("20/s"), Ok(Some(20.0)));
        assert_eq!(parse_rate("120/m"), Ok(Some(2.0)));
        assert_eq!(parse_rate("5"), Ok(Some(5.0)));
        assert_eq!(parse_rate("0"), Ok(None));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5/d").is_err());
        assert!(parse_rate("-1/s").is_err());
    }
}
