// Failed sign-ins, counted per client address and per role over a sliding window: past
// the limit, sign-ins are refused without trying the database until the window moves.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failure counts.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures of one role (from anywhere) within the window before its sign-ins pause.
pub const PER_ROLE: usize = 5;
/// Failures from one address (any role) within the window before its sign-ins pause.
pub const PER_ADDRESS: usize = 20;

#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

#[derive(Hash, PartialEq, Eq, Clone)]
enum Key {
    Role(String),
    Address(IpAddr),
}

impl Limiter {
    /// How long until `role` from `addr` may try again; None when it may now.
    pub fn blocked(&self, addr: IpAddr, role: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        [
            (Key::Role(role.to_string()), PER_ROLE),
            (Key::Address(addr), PER_ADDRESS),
        ]
        .into_iter()
        .filter_map(|(key, limit)| {
            let times = map.get_mut(&key)?;
            prune(times, now);
            (times.len() >= limit)
                .then(|| times.front().map(|t| WINDOW.saturating_sub(now - *t)))
                .flatten()
        })
        .max()
    }

    /// Count a failed sign-in.
    pub fn failed(&self, addr: IpAddr, role: &str) {
        let now = Instant::now();
        let mut map = self.lock();
        // Keep the map from growing without bound under a spray of made-up role names.
        if map.len() > 10_000 {
            map.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
        }
        for key in [Key::Role(role.to_string()), Key::Address(addr)] {
            let times = map.entry(key).or_default();
            prune(times, now);
            times.push_back(now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times.front().is_some_and(|t| now - *t >= WINDOW) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_pauses_after_its_failures_and_others_do_not() {
        let l = Limiter::default();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..PER_ROLE {
            assert!(l.blocked(a, "alice").is_none());
            l.failed(a, "alice");
        }
        assert!(
            l.blocked(b, "alice").is_some(),
            "per role, from any address"
        );
        assert!(l.blocked(a, "bob").is_none());
        for i in 0..PER_ADDRESS {
            l.failed(b, &format!("r{i}"));
        }
        assert!(l.blocked(b, "carol").is_some(), "per address, any role");
    }
}
