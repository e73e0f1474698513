//! Throttling keyed by client input: client addresses and emails that name no account.
//!
//! - **Password attempts** are reserved before the hash runs and settled after it
//!   ([`Attempts`]): per client address here, per account in the user's actor (so the count
//!   follows the account, not the spelling that named it), and, for an email that names no
//!   account, in a table here that behaves exactly like an account's (a `429` must not tell
//!   which accounts exist).
//! - **Rates** (registrations, code requests, MFA challenges, passkey ceremonies begun per
//!   client address) use `governor`'s keyed GCRA limiters.
//!
//! Every table is of fixed size: a key's keyed hash picks its slot, so an attacker naming
//! endless addresses or emails cannot grow memory, and colliding keys share a count, which errs
//! towards throttling. The governor limiters are keyed by the same slot numbers, so they hold at
//! most `max_tracked_addresses` keys; [`Throttle::prune`] drops the ones back at rest.
//!
//! The client address is the TCP peer, unless the peer is a trusted proxy, in which case the
//! right-most untrusted `X-Forwarded-For` entry names it. IPv6 addresses count by their prefix
//! (a /64 is one subscriber's network; counting single addresses would give each attacker 2^64).

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::slots::Slots;
use crate::config::{RateLimitConfig, ServerConfig};
use crate::domain::backoff::{AttemptRules, Attempts, Backoff, Settled};
use crate::domain::time::Timestamp;
use crate::domain::DomainError;

/// A per-address rate, keyed by the address's slot.
pub struct Rate {
    limiter: DefaultKeyedRateLimiter<u32>,
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

    fn check(&self, slot: u32) -> Result<(), DomainError> {
        self.limiter.check_key(&slot).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            DomainError::RateLimited {
                retry_after: wait.as_secs() + 1,
            }
        })
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// Every throttle of the server.
pub struct Throttle {
    enabled: bool,
    rules: AttemptRules,
    address_rule: Backoff,
    addresses: Slots<Attempts>,
    unknown_accounts: Slots<Attempts>,
    registrations: Rate,
    codes: Rate,
    mfa: Rate,
    passkey_starts: Rate,
    oidc_starts: Rate,
    trusted_proxies: Vec<IpAddr>,
    ipv6_prefix: u8,
}

impl Throttle {
    pub fn new(rate: &RateLimitConfig, server: &ServerConfig, max_in_flight: u32) -> Self {
        let w = rate.window_seconds;
        let slots = rate.max_tracked_addresses;
        Self {
            enabled: rate.enabled,
            rules: AttemptRules::new(
                rate.enabled,
                rate.login_failures_per_account,
                rate.mfa_failures_per_account,
                w,
                max_in_flight,
            ),
            address_rule: Backoff {
                limit: rate.login_failures_per_ip,
                window: w,
            },
            addresses: Slots::new(slots),
            unknown_accounts: Slots::new(slots),
            registrations: Rate::new(rate.registrations_per_ip, w),
            // Per-user code limits hold regardless; this only stops one address from driving
            // codes for many accounts.
            codes: Rate::new(rate.login_failures_per_ip.max(1), w),
            mfa: Rate::new(rate.login_failures_per_ip.max(1), w),
            // Each begun ceremony holds a slot of a bounded table until it is answered or
            // expires; this keeps one address from displacing everyone else's. A passkey login
            // is two requests and fails rarely, hence more room than for password failures.
            passkey_starts: Rate::new(rate.login_failures_per_ip.max(1).saturating_mul(4), w),
            // Each begun sign-in holds a pending entry in the store (a bounded number across
            // nodes) for up to 10 minutes: as much room as passkey ceremonies.
            oidc_starts: Rate::new(rate.login_failures_per_ip.max(1).saturating_mul(4), w),
            trusted_proxies: server.trusted_proxies.clone(),
            ipv6_prefix: rate.ipv6_prefix,
        }
    }

    pub fn rules(&self) -> AttemptRules {
        self.rules
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

    /// The slot a client address counts in: IPv4 alone, IPv6 by its prefix.
    fn address_slot(&self, ip: IpAddr) -> usize {
        self.addresses.index(&counted_as(ip, self.ipv6_prefix))
    }

    /// Reserves a password attempt for the client address (the account's is reserved
    /// separately). `None` (no peer address, as in tests) is not counted.
    pub fn reserve_address(
        &self,
        ip: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Reserved<'_>, DomainError> {
        let slot = match (self.enabled, ip) {
            (true, Some(ip)) => self.address_slot(ip),
            _ => return Ok(Reserved::nothing()),
        };
        let rule = self.address_rule;
        self.addresses
            .with(slot, |a| a.reserve(Some(&rule), u32::MAX, now))?;
        Ok(Reserved {
            table: Some((&self.addresses, slot)),
            rule,
            // A success by one user behind an address does not clear its other failures.
            on_success: Settled::Released,
            settled: false,
        })
    }

    /// Reserves a password attempt for an email that names no account (`key` is what the input
    /// parses to), by exactly the rules an account's attempts follow.
    pub fn reserve_unknown(&self, key: &str, now: Timestamp) -> Result<Reserved<'_>, DomainError> {
        let slot = self.unknown_accounts.index(&key);
        let rules = self.rules;
        self.unknown_accounts.with(slot, |a| {
            a.reserve(rules.account.as_ref(), rules.max_in_flight, now)
        })?;
        Ok(Reserved {
            table: Some((&self.unknown_accounts, slot)),
            rule: rules.account_or_unlimited(),
            on_success: Settled::Succeeded,
            settled: false,
        })
    }

    /// Drops rate-limiter keys back at rest; run on a timer.
    pub fn prune(&self) {
        for rate in [
            &self.registrations,
            &self.codes,
            &self.mfa,
            &self.passkey_starts,
        ] {
            rate.prune();
        }
    }

    fn rate(&self, rate: &Rate, ip: Option<IpAddr>) -> Result<(), DomainError> {
        match (self.enabled, ip) {
            (true, Some(ip)) => rate.check(self.address_slot(ip) as u32),
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

    /// A passkey login ceremony begun (`passkeys/login/start`, `mfa/passkey/start`).
    pub fn passkey_start(&self, ip: Option<IpAddr>) -> Result<(), DomainError> {
        self.rate(&self.passkey_starts, ip)
    }

    /// An OpenID Connect sign-in or link begun (`oidc/{name}/start`, `oidc/{name}/link`).
    pub fn oidc_start(&self, ip: Option<IpAddr>) -> Result<(), DomainError> {
        self.rate(&self.oidc_starts, ip)
    }
}

/// What an address counts as: an IPv4 address (also when written IPv4-mapped) alone, an IPv6
/// address by its first `prefix` bits.
fn counted_as(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        },
    }
}

/// An attempt reserved in one of this module's tables; settled with its outcome, or as a
/// failure if dropped unsettled (a caller that went away mid-hash must not get its attempt back).
pub struct Reserved<'a> {
    table: Option<(&'a Slots<Attempts>, usize)>,
    rule: Backoff,
    on_success: Settled,
    settled: bool,
}

impl Reserved<'_> {
    fn nothing() -> Self {
        Self {
            table: None,
            rule: Backoff {
                limit: u32::MAX,
                window: 1,
            },
            on_success: Settled::Released,
            settled: true,
        }
    }

    pub fn settle(mut self, outcome: Settled, now: Timestamp) {
        self.finish(outcome, now);
    }

    fn finish(&mut self, outcome: Settled, now: Timestamp) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let outcome = match outcome {
            Settled::Succeeded => self.on_success,
            other => other,
        };
        if let Some((table, slot)) = self.table {
            table.with(slot, |a| a.settle(&self.rule, outcome, now));
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.finish(Settled::Failed, crate::clock::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000);

    fn throttle(tweak: impl FnOnce(&mut RateLimitConfig)) -> Throttle {
        let mut rate = RateLimitConfig::default();
        tweak(&mut rate);
        Throttle::new(&rate, &ServerConfig::default(), 2)
    }

    #[test]
    fn unknown_emails_back_off_like_accounts() {
        let t = throttle(|r| r.login_failures_per_account = 3);
        for _ in 0..3 {
            t.reserve_unknown("ghost@example.com", T0)
                .unwrap()
                .settle(Settled::Failed, T0);
        }
        assert!(matches!(
            t.reserve_unknown("ghost@example.com", T0.plus(100)),
            Err(DomainError::RateLimited { retry_after: 800 })
        ));
        assert!(t.reserve_unknown("ghost@example.com", T0.plus(900)).is_ok());
    }

    #[test]
    fn in_flight_attempts_are_capped_and_dropped_ones_count() {
        let t = throttle(|_| {});
        let a = t.reserve_unknown("ghost@example.com", T0).unwrap();
        let b = t.reserve_unknown("ghost@example.com", T0).unwrap();
        assert!(t.reserve_unknown("ghost@example.com", T0).is_err());
        drop(a);
        b.settle(Settled::Released, T0);
        let slot = t.unknown_accounts.index(&"ghost@example.com");
        let quiet = t
            .unknown_accounts
            // The drop settles at the wall clock's now.
            .with(slot, |a| {
                a.is_quiet(&t.rules.account_or_unlimited(), crate::clock::now())
            });
        assert!(!quiet, "the dropped attempt counted as a failure");
    }

    #[test]
    fn the_cap_in_flight_holds_with_limits_off() {
        let t = throttle(|r| r.enabled = false);
        let _a = t.reserve_unknown("x", T0).unwrap();
        let _b = t.reserve_unknown("x", T0).unwrap();
        assert!(t.reserve_unknown("x", T0).is_err());
        assert!(
            t.reserve_address(Some("10.0.0.1".parse().unwrap()), T0)
                .is_ok(),
            "address limits follow rate_limit.enabled"
        );
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(counted_as(a, 64), counted_as(b, 64));
        assert_ne!(counted_as(a, 64), counted_as(c, 64));
        assert_eq!(counted_as(a, 128), a);
        assert_eq!(
            counted_as("::ffff:192.0.2.7".parse().unwrap(), 64),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let t = throttle(|r| r.login_failures_per_ip = 2);
        for ip in [a, b] {
            t.reserve_address(Some(ip), T0)
                .unwrap()
                .settle(Settled::Failed, T0);
        }
        assert!(t.reserve_address(Some(a), T0).is_err());
        assert!(t.reserve_address(Some(c), T0).is_ok());
    }

    #[test]
    fn tables_and_limiters_stay_within_their_slots() {
        let t = throttle(|r| {
            r.max_tracked_addresses = 64;
            r.registrations_per_ip = 1_000;
        });
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = t.registration(Some(ip));
            if let Ok(r) = t.reserve_unknown(&format!("u{i}@example.com"), T0) {
                r.settle(Settled::Failed, T0);
            }
        }
        assert!(t.registrations.len() <= 64);
        assert_eq!(t.unknown_accounts.capacity(), 64);
    }

    #[test]
    fn rates_allow_a_burst_then_refuse() {
        let r = Rate::new(3, 900);
        for _ in 0..3 {
            assert!(r.check(7).is_ok());
        }
        assert!(
            matches!(r.check(7), Err(DomainError::RateLimited { retry_after }) if retry_after > 0)
        );
    }
}
