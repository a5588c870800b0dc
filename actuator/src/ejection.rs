//! Escalating ejection, after Envoy's outlier detection: a server that relapses soon after it
//! returned stays out longer each time. Unlike Envoy, the hold counts from the server's last
//! breach, not from its ejection: a server returns only once it has been healthy for the whole
//! hold, so a provider that flaps faster than the hold never comes back while it flaps.

use common::config::PolicyConfig;

/// What the policy remembers of a server's ejections between cycles (caller's clock, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EjectionMemory {
    /// Recent ejections; decays by one per `base_ejection` the server stays in the pool.
    pub count: u32,
    /// When a gate was last breached.
    pub last_breach: Option<f64>,
    /// Start of the current decay period, while the server is in the pool with a count.
    pub decay_from: Option<f64>,
}

/// The most `count` can reach: past it the hold is `max_ejection` anyway, and a lower cap
/// lets a recovered server's count decay in bounded time.
fn max_count(policy: &PolicyConfig) -> u32 {
    let base = policy.base_ejection.as_secs_f64();
    if base <= 0.0 {
        return 1;
    }
    let steps = (policy.max_ejection.as_secs_f64() / base).ceil();
    if steps >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (steps as u32).max(1)
    }
}

impl EjectionMemory {
    /// How long the server must stay healthy before it may return: `base_ejection` × count,
    /// at most `max_ejection`.
    pub fn hold(&self, policy: &PolicyConfig) -> f64 {
        let hold = policy.base_ejection.as_secs_f64() * f64::from(self.count);
        hold.min(policy.max_ejection.as_secs_f64())
    }

    /// The earliest time the server may return (it must also pass `readmit_after` cycles).
    pub fn earliest_return(&self, policy: &PolicyConfig) -> Option<f64> {
        self.last_breach.map(|at| at + self.hold(policy))
    }

    /// A gate was breached at `now`; `newly` when the server was in the pool until now.
    pub fn breached(self, policy: &PolicyConfig, now: f64, newly: bool) -> Self {
        let count = if newly {
            self.count.saturating_add(1).min(max_count(policy))
        } else {
            self.count
        };
        Self {
            count,
            last_breach: Some(now),
            decay_from: None,
        }
    }

    /// True when an ejected, healthy server has served its hold.
    pub fn hold_served(&self, policy: &PolicyConfig, now: f64) -> bool {
        self.earliest_return(policy).is_none_or(|at| now >= at)
    }

    /// A server in the pool and healthy at `now`: one ejection forgotten per `base_ejection`.
    pub fn decayed(self, policy: &PolicyConfig, now: f64) -> Self {
        let base = policy.base_ejection.as_secs_f64();
        if self.count == 0 || base <= 0.0 {
            return Self {
                count: 0,
                decay_from: None,
                ..self
            };
        }
        let from = self.decay_from.unwrap_or(now);
        let periods = ((now - from).max(0.0) / base).floor();
        let forgotten = if periods >= f64::from(self.count) {
            self.count
        } else {
            periods as u32
        };
        let count = self.count - forgotten;
        Self {
            count,
            decay_from: (count > 0).then_some(from + f64::from(forgotten) * base),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> PolicyConfig {
        PolicyConfig {
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn hold_escalates_with_the_count_up_to_the_cap() {
        let p = policy();
        let mut m = EjectionMemory::default();
        let mut holds = Vec::new();
        for t in 0..4 {
            m = m.breached(&p, f64::from(t), true);
            holds.push(m.hold(&p));
        }
        assert_eq!(holds, [10.0, 20.0, 25.0, 25.0]);
        assert_eq!(m.count, 3, "capped at ceil(max / base)");
    }

    #[test]
    fn a_breach_while_out_renews_the_hold_without_counting() {
        let p = policy();
        let m = EjectionMemory::default().breached(&p, 0.0, true);
        let m = m.breached(&p, 7.0, false);
        assert_eq!(m.count, 1);
        assert_eq!(m.earliest_return(&p), Some(17.0));
        assert!(!m.hold_served(&p, 16.9));
        assert!(m.hold_served(&p, 17.0));
    }

    #[test]
    fn the_count_decays_one_per_base_ejection_in_the_pool() {
        let p = policy();
        let m = EjectionMemory {
            count: 3,
            last_breach: Some(0.0),
            decay_from: None,
        };
        let m = m.decayed(&p, 100.0);
        assert_eq!((m.count, m.decay_from), (3, Some(100.0)));
        let m = m.decayed(&p, 109.9);
        assert_eq!(m.count, 3);
        let m = m.decayed(&p, 121.0);
        assert_eq!((m.count, m.decay_from), (1, Some(120.0)));
        let m = m.decayed(&p, 200.0);
        assert_eq!((m.count, m.decay_from), (0, None));
    }

    #[test]
    fn zero_base_ejection_means_no_hold() {
        let p = PolicyConfig {
            base_ejection: Duration::ZERO,
            ..policy()
        };
        let m = EjectionMemory::default().breached(&p, 5.0, true);
        assert!(m.hold_served(&p, 5.0));
        assert_eq!(m.decayed(&p, 6.0).count, 0);
    }
}
