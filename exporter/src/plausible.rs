//! Which block numbers the chain can have reached. A provider that answers a block far ahead of
//! the others (a bug, a fork, a different network behind the same chain id, or `u64::MAX`) must
//! not become the chain head: in a pool of one or two that would make every honest provider look
//! behind and send all traffic to the one that is wrong. A chain makes blocks at a bounded rate,
//! so since a head the exporter has seen, only so many more can exist.

use std::time::{Duration, Instant};

/// The shortest time between two blocks assumed of any chain: 4 blocks a second, as fast as the
/// fastest EVM chains in wide use (Arbitrum's 0.25 s; most take 1 to 12 s), so that an honest
/// provider is not judged implausible by it. A chain that is faster for longer than
/// [`SLACK_BLOCKS`] allows needs a smaller value.
pub const MIN_BLOCK_TIME: Duration = Duration::from_millis(250);

/// Blocks allowed beyond the rate: the head a reference was taken from may have been a few
/// seconds old when it was seen (propagation, a slow answer), and replicas differ by a block or
/// two.
pub const SLACK_BLOCKS: u64 = 10;

/// A reference older than this is no bound: judging starts afresh. Its age is counted from its
/// block's timestamp (chain time), so a head the providers agree on but that stopped long ago (a
/// frozen majority) bounds nothing, and a reference is never renewed at the same number: only an
/// agreed head higher than it replaces it. Dropping an old one also bounds how long honest answers
/// can be judged against a wrong one (a chain faster than [`MIN_BLOCK_TIME`]).
pub const REFERENCE_LIFETIME: Duration = Duration::from_secs(60);

/// How far ahead of this host's clock a block's timestamp may be before it is reported as clock
/// skew: a few seconds of drift between honest clocks are common, tens are not.
pub const FUTURE_TOLERANCE_SECONDS: f64 = 15.0;

/// A head the providers agreed on: its number, its block's timestamp (Unix seconds, no later than
/// when it was seen) and when the exporter saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    pub number: u64,
    pub timestamp: f64,
    pub seen: Instant,
}

impl Reference {
    /// Seconds the chain has had to make blocks since the reference: since its block was made,
    /// and never less than since it was seen (a timestamp ahead of the clock gains nothing).
    fn elapsed(&self, now: Instant, now_unix: f64) -> f64 {
        let seen = now.saturating_duration_since(self.seen).as_secs_f64();
        (now_unix - self.timestamp).max(seen)
    }
}

/// `Ok` if the chain can have reached block `number` by `now` (`now_unix` in Unix seconds), else
/// why not. Without a live reference the only bound is one that needs no history: no chain has
/// made blocks faster than [`MIN_BLOCK_TIME`] since the Unix epoch (which still rules out
/// `u64::MAX` and its like).
pub fn check_number(
    number: u64,
    reference: Option<Reference>,
    now: Instant,
    now_unix: f64,
) -> Result<(), String> {
    let epoch_limit = (now_unix.max(0.0) / MIN_BLOCK_TIME.as_secs_f64()) as u64;
    if number > epoch_limit {
        return Err(format!(
            "block {number} is more than any chain can have made since 1970 ({epoch_limit})"
        ));
    }
    let Some(reference) = reference else {
        return Ok(());
    };
    let elapsed = reference.elapsed(now, now_unix);
    if elapsed > REFERENCE_LIFETIME.as_secs_f64() {
        return Ok(());
    }
    let made = (elapsed / MIN_BLOCK_TIME.as_secs_f64()) as u64;
    let limit = reference
        .number
        .saturating_add(made)
        .saturating_add(SLACK_BLOCKS);
    if number > limit {
        return Err(format!(
            "block {number} is beyond {limit}, the most the chain can have reached {:.1} s \
             after the agreed head {}",
            elapsed, reference.number
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_UNIX: f64 = 1_750_000_000.0;

    /// A reference to block `number`, made and seen `secs_ago`.
    fn reference(number: u64, secs_ago: f64, now: Instant) -> Option<Reference> {
        Some(Reference {
            number,
            timestamp: NOW_UNIX - secs_ago,
            seen: now - Duration::from_secs_f64(secs_ago),
        })
    }

    #[test]
    fn a_block_beyond_the_rate_since_the_reference_is_implausible() {
        let now = Instant::now();
        let check = |number, ago| check_number(number, reference(1000, ago, now), now, NOW_UNIX);
        assert!(check(1000 + SLACK_BLOCKS, 0.0).is_ok());
        assert!(check(1001 + SLACK_BLOCKS, 0.0).is_err());
        assert!(
            check(1000 + 8 + SLACK_BLOCKS, 2.0).is_ok(),
            "4 blocks a second"
        );
        assert!(check(1000 + 9 + SLACK_BLOCKS, 2.0).is_err());
        assert!(check(1050, 1.0).is_err(), "head + 50 a second later");
        assert!(check(u64::MAX, 1.0).is_err());
        assert!(check(3, 1.0).is_ok(), "behind is never implausible");
    }

    #[test]
    fn without_a_live_reference_only_the_epoch_bounds() {
        let now = Instant::now();
        let epoch_limit = (NOW_UNIX * 4.0) as u64;
        assert!(check_number(epoch_limit, None, now, NOW_UNIX).is_ok());
        let err = check_number(u64::MAX, None, now, NOW_UNIX).unwrap_err();
        assert!(err.contains("since 1970"), "{err}");
        let old = reference(1000, REFERENCE_LIFETIME.as_secs_f64() + 1.0, now);
        assert!(check_number(1_000_000, old, now, NOW_UNIX).is_ok());
        assert!(check_number(u64::MAX, old, now, NOW_UNIX).is_err());
    }

    #[test]
    fn a_reference_ages_with_its_block_not_with_when_it_was_seen() {
        let now = Instant::now();
        // Seen just now, but its block was made an hour ago (a frozen majority agreeing): the
        // advancing provider's block far beyond it is plausible.
        let frozen = Some(Reference {
            number: 1000,
            timestamp: NOW_UNIX - 3600.0,
            seen: now,
        });
        assert!(check_number(1300, frozen, now, NOW_UNIX).is_ok());
        // A timestamp ahead of the clock does not make the reference younger than its sighting.
        let future = Some(Reference {
            number: 1000,
            timestamp: NOW_UNIX + 600.0,
            seen: now - Duration::from_secs(2),
        });
        assert!(check_number(1000 + 8 + SLACK_BLOCKS, future, now, NOW_UNIX).is_ok());
        assert!(check_number(1000 + 9 + SLACK_BLOCKS, future, now, NOW_UNIX).is_err());
    }
}
