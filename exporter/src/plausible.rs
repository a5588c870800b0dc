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

/// A reference older than this is dropped and judging starts afresh. Rounds renew it; it grows
/// old only when no round agreed on a head for this long, and then it may be what is wrong (a
/// chain faster than [`MIN_BLOCK_TIME`], time the host spent suspended, which the monotonic clock
/// does not count): dropping it bounds how long honest answers can be judged against it.
pub const REFERENCE_LIFETIME: Duration = Duration::from_secs(60);

/// How far ahead of this host's clock a block's timestamp may be before it is reported as clock
/// skew: a few seconds of drift between honest clocks are common, tens are not.
pub const FUTURE_TOLERANCE_SECONDS: f64 = 15.0;

/// A head the providers agreed on, and when the exporter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    pub number: u64,
    pub at: Instant,
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
    let elapsed = now.saturating_duration_since(reference.at);
    if elapsed > REFERENCE_LIFETIME {
        return Ok(());
    }
    let made = (elapsed.as_secs_f64() / MIN_BLOCK_TIME.as_secs_f64()) as u64;
    let limit = reference
        .number
        .saturating_add(made)
        .saturating_add(SLACK_BLOCKS);
    if number > limit {
        return Err(format!(
            "block {number} is beyond {limit}, the most the chain can have reached {:.1} s \
             after the agreed head {}",
            elapsed.as_secs_f64(),
            reference.number
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_UNIX: f64 = 1_750_000_000.0;

    fn reference(number: u64, secs_ago: f64, now: Instant) -> Option<Reference> {
        Some(Reference {
            number,
            at: now - Duration::from_secs_f64(secs_ago),
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
}
