//! Throttling of guessable endpoints, keyed by account and by client address.
//!
//! - **Login failures** back off rather than lock, by the rule of `domain::backoff`:
//!   `login_failures_per_account` per account and `login_failures_per_ip` per client inside
//!   the window. The windows are kept here, in a map keyed by account and by address.
//! - **Rates** (registrations, code requests, MFA challenges per client address) use
//!   `governor`'s keyed GCRA limiters.
//!
//! The client address is the TCP peer, unless the peer is a trusted proxy, in which case the
//! right-most untrusted `X-Forwarded-For` entry names it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::HttpRequest;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{RateLimitConfig, ServerConfig};
use crate::domain::backoff::{Backoff, FailureWindow};
use crate::domain::time::Timestamp;
use crate::domain::DomainError;

/// Failures per key, each in its window (the rule is [`Backoff`]'s).
struct FailureWindows {
    rule: Backoff,
    entries: DashMap<String, FailureWindow>,
}

impl FailureWindows {
    fn new(limit: u32, window: u64) -> Self {
        Self {
            rule: Backoff { limit, window },
            entries: DashMap::new(),
        }
    }

    /// `Err(RateLimited)` while `key` is over its limit.
    fn check(&self, key: &str, now: Timestamp) -> Result<(), DomainError> {
        let entry = self.entries.get(key).map(|e| *e);
        self.rule.check(entry.as_ref(), now)
    }

    fn fail(&self, key: &str, now: Timestamp) {
        let mut e = self
            .entries
            .entry(key.to_string())
            .or_insert(Backoff::first(now));
        self.rule.record(&mut e, now);
        drop(e);
        // Keep memory proportional to recent failures.
        if self.entries.len() > 100_000 {
            self.entries.retain(|_, w| !self.rule.is_over(w, now));
        }
    }

    fn reset(&self, key: &str) {
        self.entries.remove(key);
    }
}

/// A per-address rate.
pub struct Rate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Rate {
    /// `count` events per `window` seconds, all of which may come at once.
    fn new(count: u32, window: u64) -> Self {
        let count = NonZeroU32::new(count.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs(window.max(1)) / count.get();
        let quota = Quota::with_period(period.max(Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_second(count))
            .allow_burst(count);
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    fn check(&self, ip: IpAddr) -> Result<(), DomainError> {
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            DomainError::RateLimited {
                retry_after: wait.as_secs() + 1,
            }
        })
    }
}

/// Every throttle of the server.
pub struct Throttle {
    enabled: bool,
    login_accounts: FailureWindows,
    login_ips: FailureWindows,
    registrations: Rate,
    codes: Rate,
    mfa: Rate,
    trusted_proxies: Vec<IpAddr>,
}

impl Throttle {
    pub fn new(rate: &RateLimitConfig, server: &ServerConfig) -> Self {
        let w = rate.window_seconds;
        Self {
            enabled: rate.enabled,
            login_accounts: FailureWindows::new(rate.login_failures_per_account.min(100), w),
            login_ips: FailureWindows::new(rate.login_failures_per_ip, w),
            registrations: Rate::new(rate.registrations_per_ip, w),
            // Per-user code limits hold regardless; this only stops one address from driving
            // codes for many accounts.
            codes: Rate::new(rate.login_failures_per_ip.max(1), w),
            mfa: Rate::new(rate.login_failures_per_ip.max(1), w),
            trusted_proxies: server.trusted_proxies.clone(),
        }
    }

    /// The client's address, honouring `X-Forwarded-For` only from trusted proxies.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr().map(|a| a.ip())?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        Some(
            forwarded
                .iter()
                .rev()
                .find(|ip| !self.trusted_proxies.contains(ip))
                .copied()
                .unwrap_or(peer),
        )
    }

    /// Before a login: refuse if the account or the address is backing off.
    pub fn login_allowed(
        &self,
        account: &str,
        ip: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !self.enabled {
            return Ok(());
        }
        self.login_accounts.check(account, now)?;
        if let Some(ip) = ip {
            self.login_ips.check(&ip.to_string(), now)?;
        }
        Ok(())
    }

    pub fn login_failed(&self, account: &str, ip: Option<IpAddr>, now: Timestamp) {
        if !self.enabled {
            return;
        }
        self.login_accounts.fail(account, now);
        if let Some(ip) = ip {
            self.login_ips.fail(&ip.to_string(), now);
        }
    }

    pub fn login_succeeded(&self, account: &str) {
        self.login_accounts.reset(account);
    }

    fn rate(&self, rate: &Rate, ip: Option<IpAddr>) -> Result<(), DomainError> {
        match (self.enabled, ip) {
            (true, Some(ip)) => rate.check(ip),
            _ => Ok(()),
        }
    }

    pub fn registration(&self, ip: Option<IpAddr>) -> Result<(), DomainError> {
        self.rate(&self.registrations, ip)
    }

    pub fn code_request(&self, ip: Option<IpAddr>) -> Result<(), DomainError> {
        self.rate(&self.codes, ip)
    }

    pub fn mfa_attempt(&self, ip: Option<IpAddr>) -> Result<(), DomainError> {
        self.rate(&self.mfa, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    #[test]
    fn backs_off_after_the_limit_until_the_window_passes() {
        let w = FailureWindows::new(3, 900);
        for _ in 0..3 {
            assert!(w.check("a", T0).is_ok());
            w.fail("a", T0);
        }
        assert_eq!(
            w.check("a", T0.plus(100)),
            Err(DomainError::RateLimited { retry_after: 800 })
        );
        assert!(w.check("b", T0).is_ok(), "other accounts are unaffected");
        assert!(w.check("a", T0.plus(900)).is_ok());
    }

    #[test]
    fn success_resets() {
        let w = FailureWindows::new(2, 900);
        w.fail("a", T0);
        w.reset("a");
        w.fail("a", T0);
        assert!(w.check("a", T0).is_ok());
    }

    #[test]
    fn rates_allow_a_burst_then_refuse() {
        let r = Rate::new(3, 900);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(r.check(ip).is_ok());
        }
        assert!(
            matches!(r.check(ip), Err(DomainError::RateLimited { retry_after }) if retry_after > 0)
        );
    }
}
