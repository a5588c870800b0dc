//! How often something asked for "every so often" really happens when it can only happen on a
//! tick: a provider's probe on a round of its chain, a chain-id check on a probe. The interval is
//! rounded up to whole ticks, so nothing is sent more often than configured (the probe budget
//! counts on it), and a tick up to half a tick early still counts, so that timer jitter does not
//! push a 10 s probe in 2 s rounds to 12 s. The exporter schedules by it; the actuator allows a
//! provider probed less often its longer period by the same rounding.

use std::time::Duration;

use crate::config::{ExporterConfig, ProviderConfig};

/// How often `provider` is really probed: its `probe_interval` (else the exporter's) rounded up
/// to whole rounds of `[exporter] probe_interval`.
pub fn probe_period(provider: &ProviderConfig, exporter: &ExporterConfig) -> Duration {
    let round = exporter.probe_interval;
    Cadence::new(provider.probe_interval_or(round), round).period()
}

/// Something due every whole number of ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    tick: Duration,
    period: Duration,
}

impl Cadence {
    /// `every`, asked on each `tick`: at least one tick, `every` rounded up to whole ticks.
    pub fn new(every: Duration, tick: Duration) -> Self {
        let tick_nanos = tick.as_nanos().max(1);
        let ticks = every.as_nanos().div_ceil(tick_nanos).max(1);
        Self {
            tick,
            period: duration_from_nanos(ticks.saturating_mul(tick_nanos)),
        }
    }

    /// The time between two occurrences.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Whether it is due on this tick, its last occurrence `since` ago (`None`: never). Due on
    /// every tick when the period is one tick, so such a thing behaves as if it had no cadence.
    pub fn is_due(&self, since: Option<Duration>) -> bool {
        self.period <= self.tick
            || since.is_none_or(|since| since.saturating_add(self.tick / 2) >= self.period)
    }
}

/// `nanos` as a duration, [`Duration::MAX`] when longer.
fn duration_from_nanos(nanos: u128) -> Duration {
    const PER_SECOND: u128 = 1_000_000_000;
    match u64::try_from(nanos / PER_SECOND) {
        // The remainder of a division by 10⁹ fits in a u32.
        Ok(secs) => Duration::new(secs, (nanos % PER_SECOND) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// The ticks (of `tick` seconds, starting at 0, each `jitter` late or early in turn) on
    /// which something due `every` seconds happens, up to `until`.
    fn occurrences(every: f64, tick: f64, jitter: f64, until: f64) -> Vec<f64> {
        let cadence = Cadence::new(secs(every), secs(tick));
        let mut last: Option<f64> = None;
        let mut happened = Vec::new();
        let mut n = 0.0;
        while n * tick <= until {
            let sign = if (n as u64) % 2 == 0 { 1.0 } else { -1.0 };
            let now = (n * tick + sign * jitter).max(0.0);
            if cadence.is_due(last.map(|l| secs(now - l))) {
                last = Some(now);
                happened.push(n * tick);
            }
            n += 1.0;
        }
        happened
    }

    #[test]
    fn a_ten_second_provider_in_two_second_rounds_is_probed_every_ten_seconds() {
        assert_eq!(
            occurrences(10.0, 2.0, 0.0, 40.0),
            vec![0.0, 10.0, 20.0, 30.0, 40.0]
        );
        assert_eq!(
            occurrences(10.0, 2.0, 0.3, 40.0),
            vec![0.0, 10.0, 20.0, 30.0, 40.0],
            "timer jitter neither delays nor advances it"
        );
        assert_eq!(Cadence::new(secs(10.0), secs(2.0)).period(), secs(10.0));
    }

    #[test]
    fn an_interval_between_ticks_is_rounded_up_never_down() {
        let cadence = Cadence::new(secs(3.0), secs(2.0));
        assert_eq!(cadence.period(), secs(4.0));
        assert_eq!(occurrences(3.0, 2.0, 0.2, 12.0), vec![0.0, 4.0, 8.0, 12.0]);
        assert_eq!(
            Cadence::new(Duration::from_millis(2001), secs(2.0)).period(),
            secs(4.0)
        );
    }

    #[test]
    fn one_tick_or_less_is_due_on_every_tick_however_close_together() {
        for every in [0.0, 1.0, 2.0] {
            let cadence = Cadence::new(secs(every), secs(2.0));
            assert_eq!(cadence.period(), secs(2.0));
            assert!(cadence.is_due(Some(Duration::ZERO)), "every {every}");
        }
    }

    #[test]
    fn the_first_time_is_always_due() {
        assert!(Cadence::new(secs(300.0), secs(2.0)).is_due(None));
    }

    #[test]
    fn half_a_tick_early_is_due_more_is_not() {
        let cadence = Cadence::new(secs(3.0), secs(1.0));
        assert!(!cadence.is_due(Some(secs(2.4))));
        assert!(cadence.is_due(Some(secs(2.5))));
        assert!(cadence.is_due(Some(secs(7.0))), "late is due at once");
    }

    #[test]
    fn absurd_intervals_do_not_overflow() {
        assert_eq!(
            Cadence::new(Duration::MAX, Duration::from_nanos(1)).period(),
            Duration::MAX
        );
        let cadence = Cadence::new(Duration::MAX, Duration::from_secs(u64::MAX / 2));
        assert_eq!(cadence.period(), Duration::MAX, "rounded up past the end");
        assert!(cadence.is_due(Some(Duration::MAX)));
        assert!(!cadence.is_due(Some(Duration::from_secs(u64::MAX / 2))));
        assert_eq!(Cadence::new(secs(1.0), Duration::ZERO).period(), secs(1.0));
    }
}
