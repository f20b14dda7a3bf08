//! In-memory limits: failed enrollments per source address (IPv6 by /64,
//! [`source_key`]) and per activation id, and the rate of what one instance
//! sends (sessions, messages, renewals) across all its sessions
//! ([`InstanceBuckets`]).
//!
//! Both are deliberately in memory: a restart forgets them, which costs an
//! attacker one restart's worth of attempts (a few per minute), and keeps the
//! store free of per-request writes.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many keys (source addresses, activation ids) are tracked;
/// when full, keys whose failures are all older than the window are
/// forgotten first, then the one with the oldest last failure.
const MAX_TRACKED: usize = 10_000;

/// The key a source address is counted under: an IPv4 address (an
/// IPv4-mapped IPv6 one included) as it is, an IPv6 address by its /64 —
/// one host or one site gets a /64, so a /128 key would give it billions of
/// counters.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !(u128::MAX >> 64);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// A [`source_key`] as messages show it: `192.0.2.1`, `2001:db8::/64`.
pub fn source_text(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// Counts failed attempts per key (a source address, an activation id) in a
/// sliding window.
///
/// An attempt is counted as a failure when it begins ([`FailureLimiter::begin`])
/// and forgiven when it succeeds ([`FailureLimiter::forgive`]), so that
/// concurrent attempts cannot slip past the limit together.
#[derive(Debug)]
pub struct FailureLimiter<K = IpAddr> {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<K, VecDeque<Instant>>>,
}

/// Why an address is refused for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Failures in the window.
    pub failures: u32,
    pub window: Duration,
    /// When the oldest failure in the window leaves it.
    pub retry_after: Duration,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    /// `limit` failures per `window` and key; 0 disables the limit.
    pub fn new(limit: u32, window: Duration) -> FailureLimiter<K> {
        FailureLimiter {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, VecDeque<Instant>>> {
        // Counters only: a panic half-way cannot break an invariant.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Begins an attempt of `key`: `Err` when `key` has used up its
    /// failures in the current window; otherwise the attempt counts as a
    /// failure until [`FailureLimiter::forgive`] is called with the returned
    /// instant.
    pub fn begin(&self, key: &K, now: Instant) -> Result<Instant, Limited> {
        if self.limit == 0 {
            return Ok(now);
        }
        let mut map = self.map();
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            map.retain(|_, times| {
                prune(times, now, self.window);
                !times.is_empty()
            });
            if map.len() >= MAX_TRACKED
                && let Some(stalest) = map
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(k, _)| k.clone())
            {
                map.remove(&stalest);
            }
        }
        let times = map.entry(key.clone()).or_default();
        prune(times, now, self.window);
        let count = u32::try_from(times.len()).unwrap_or(u32::MAX);
        if count >= self.limit {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(Limited {
                failures: count,
                window: self.window,
                retry_after: (oldest + self.window).saturating_duration_since(now),
            });
        }
        times.push_back(now);
        Ok(now)
    }

    /// The attempt of `key` that began at `at` succeeded: it is not a
    /// failure.
    pub fn forgive(&self, key: &K, at: Instant) {
        let mut map = self.map();
        if let Some(times) = map.get_mut(key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Number of addresses tracked (tests).
    pub fn tracked(&self) -> usize {
        self.map().len()
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` 0 disables the limit.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket::with_rate(f64::from(rate), burst, now)
    }

    /// A full bucket refilled at `rate` tokens per second (fractions
    /// allowed: 1/1200 is one every 20 minutes). 0 disables the limit.
    pub fn with_rate(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes one token; `false` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        self.try_take(now).is_ok()
    }

    /// Takes one token, or says how long until the next one.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - self.tokens) / self.rate).min(86_400.0),
            ))
        }
    }

    /// Whether the bucket is full at `now` (then it is the same as a new
    /// one, and forgetting it loses nothing).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.rate == 0.0 || self.tokens + elapsed * self.rate >= self.burst
    }
}

/// At most this many instances have a bucket; when full, buckets that have
/// refilled completely are forgotten (a new one is the same).
const MAX_INSTANCE_BUCKETS: usize = 100_000;

/// One [`TokenBucket`] per instance id, shared by every session of the
/// instance so that reconnecting does not refill it: each Connect, each
/// message and each renewal of the instance takes from the same bucket.
#[derive(Debug)]
pub struct InstanceBuckets {
    rate: f64,
    burst: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Why an instance is refused for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// When the next token is there.
    pub retry_after: Duration,
}

impl InstanceBuckets {
    /// `rate` tokens per second (0: no limit), `burst` at once, per
    /// instance.
    pub fn new(rate: f64, burst: u32) -> InstanceBuckets {
        InstanceBuckets {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `instance_id`'s bucket.
    pub fn take(&self, instance_id: &str, now: Instant) -> Result<(), Exhausted> {
        if self.rate == 0.0 {
            return Ok(());
        }
        // Counters only: a panic half-way cannot break an invariant.
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_INSTANCE_BUCKETS && !map.contains_key(instance_id) {
            map.retain(|_, b| !b.is_full(now));
        }
        map.entry(instance_id.to_owned())
            .or_insert_with(|| TokenBucket::with_rate(self.rate, self.burst, now))
            .try_take(now)
            .map_err(|retry_after| Exhausted { retry_after })
    }

    /// Instances with a bucket (tests).
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn failures_are_limited_per_address_and_window() {
        let l: FailureLimiter = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            l.begin(&IP, t0 + Duration::from_secs(i))
                .unwrap_or_else(|e| panic!("attempt {i}: {e:?}"));
        }
        let limited = l
            .begin(&IP, t0 + Duration::from_secs(10))
            .expect_err("limited");
        assert_eq!(limited.failures, 3);
        assert_eq!(limited.retry_after, Duration::from_secs(50));
        // Another address is not affected.
        let other = l.begin(&OTHER, t0).expect("other address");
        l.forgive(&OTHER, other);
        // Once the first failure leaves the window, one more try is allowed.
        l.begin(&IP, t0 + Duration::from_secs(60))
            .expect("after the window");
        assert!(l.begin(&IP, t0 + Duration::from_millis(60_500)).is_err());
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn successes_are_forgiven() {
        let l: FailureLimiter = FailureLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..10 {
            let at = l
                .begin(&IP, t0 + Duration::from_millis(i))
                .expect("successes never count");
            l.forgive(&IP, at);
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn zero_disables_the_limit() {
        let l: FailureLimiter = FailureLimiter::new(0, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..100 {
            l.begin(&IP, t0).expect("no limit");
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn ipv6_sources_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(other));
        assert_eq!(source_text(source_key(a)), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(source_key(mapped), IP);
        assert_ne!(source_key("::ffff:192.0.2.2".parse().expect("ip")), IP);
        assert_eq!(source_text(IP), "192.0.2.1");
        // One /64 shares one counter.
        let l: FailureLimiter = FailureLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        l.begin(&source_key(a), t0).expect("first");
        l.begin(&source_key(b), t0).expect("second");
        assert!(l.begin(&source_key(a), t0).is_err());
        l.begin(&source_key(other), t0).expect("another /64");
    }

    #[test]
    fn failures_are_counted_per_activation_id_too() {
        let l: FailureLimiter<String> = FailureLimiter::new(2, Duration::from_secs(3600));
        let t0 = Instant::now();
        let id = "a-1".to_string();
        l.begin(&id, t0).expect("first");
        l.begin(&id, t0).expect("second");
        let limited = l.begin(&id, t0).expect_err("locked");
        assert_eq!(limited.failures, 2);
        l.begin(&"a-2".to_string(), t0).expect("another activation");
    }

    #[test]
    fn instance_buckets_survive_across_takes_and_are_per_instance() {
        let t0 = Instant::now();
        let b = InstanceBuckets::new(2.0, 3);
        for _ in 0..3 {
            b.take("i-1", t0).expect("burst");
        }
        let e = b.take("i-1", t0).expect_err("empty");
        assert_eq!(e.retry_after, Duration::from_millis(500));
        // Another instance has its own bucket.
        b.take("i-2", t0).expect("other instance");
        // Half a second later: one more.
        b.take("i-1", t0 + Duration::from_millis(500))
            .expect("refilled");
        assert_eq!(b.tracked(), 2);
        // A fractional rate: one token per 20 minutes.
        let slow = InstanceBuckets::new(1.0 / 1200.0, 1);
        slow.take("i-1", t0).expect("first");
        let e = slow.take("i-1", t0).expect_err("second");
        assert!((e.retry_after.as_secs_f64() - 1200.0).abs() < 0.01, "{e:?}");
        // No limit.
        let none = InstanceBuckets::new(0.0, 1);
        for _ in 0..10 {
            none.take("i-1", t0).expect("unlimited");
        }
        assert_eq!(none.tracked(), 0);
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        // 100 ms later: one more token.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // Long idle: the bucket refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(b.take(later));
        }
        assert!(!b.take(later));
    }
}
