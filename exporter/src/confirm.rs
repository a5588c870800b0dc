//! Telling a provider's noise from its failure: a request fails only when a second attempt
//! confirms it. Healthy paid providers answer a few requests per thousand with a 502, a reset or
//! a hang; one such answer must not eject them, yet a provider that is really down or erroring
//! must still be reported down within the same probe. A timeout is the weakest evidence of all
//! (a heavy latency tail makes two slow attempts in a row a matter of time), so it takes a third:
//! attempts still unanswered at the deadline get one more beside them, and half the timeout more.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::reason::Reason;
use crate::rpc::ProbeError;

/// How a confirmed request ended.
#[derive(Debug)]
pub struct Confirmed<T> {
    pub result: Result<T, ProbeError>,
    /// Attempts that failed or hung and were retried or hedged: 0, 1, or 2 for a hang.
    pub retries: u64,
}

/// When an attempt still unanswered gets a hedge: half the time left, so that the hedge has as
/// long as the first attempt had before it.
pub fn hedge_at(now: Instant, deadline: Instant) -> Instant {
    now + deadline.saturating_duration_since(now) / 2
}

/// Runs `attempt` up to three times. A transient failure of the first attempt is retried at once;
/// a first attempt still unanswered at the hedge time ([`hedge_at`]) gets a second one beside it;
/// attempts still unanswered at `deadline` get a third beside them, and all may answer until half
/// the timeout after `deadline`. The first success wins; the result is an error only when every
/// attempt made failed (the last failure). So two fast failures fail at once, while a timeout is
/// reported only after three attempts hung, each for at least half the timeout. A deliberate
/// answer (a 429, a 4xx) is not retried.
pub async fn confirm<T, F, Fut>(deadline: Instant, mut attempt: F) -> Confirmed<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProbeError>>,
{
    let start = Instant::now();
    let hedge = hedge_at(start, deadline);
    let last = deadline + deadline.saturating_duration_since(start) / 2;
    let mut running = FuturesUnordered::new();
    running.push(bounded(last, attempt()));
    let mut made: u64 = 1;
    loop {
        // The next attempt starts then unless something settles first.
        let next = match made {
            1 => Some(hedge),
            2 => Some(deadline),
            _ => None,
        };
        tokio::select! {
            biased;
            Some(settled) = running.next() => match settled {
                Ok(value) => {
                    return Confirmed {
                        result: Ok(value),
                        retries: made - 1,
                    }
                }
                Err(e) if made == 1 && e.transient => {
                    running.push(bounded(last, attempt()));
                    made = 2;
                }
                Err(e) if running.is_empty() => {
                    return Confirmed {
                        result: Err(e),
                        retries: made - 1,
                    }
                }
                Err(_) => {}
            },
            () = sleep_until(next.unwrap_or(last)), if next.is_some() => {
                running.push(bounded(last, attempt()));
                made += 1;
            }
            // Not reached: a failure that leaves nothing running returns above.
            else => {
                return Confirmed {
                    result: Err(timed_out()),
                    retries: made - 1,
                }
            }
        }
    }
}

/// `attempt`, failing with [`Reason::Timeout`] at `deadline`.
async fn bounded<T>(
    deadline: Instant,
    attempt: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    timeout_at(deadline, attempt)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

fn timed_out() -> ProbeError {
    ProbeError::new(
        Reason::Timeout,
        "no complete answer from three attempts within 1.5 times the probe timeout",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(400);

    /// What one scripted attempt does.
    #[derive(Clone, Copy)]
    enum Step {
        Answer,
        Fail(Reason),
        /// Answers after this long.
        Slow(Duration),
        Hang,
    }

    /// Runs [`confirm`] over attempts that follow `script` in turn; returns the outcome, the
    /// attempts made and how long it took.
    async fn run(script: &[Step]) -> (Confirmed<usize>, usize, Duration) {
        let made = AtomicUsize::new(0);
        let start = Instant::now();
        let confirmed = confirm(start + TIMEOUT, || {
            let n = made.fetch_add(1, Ordering::SeqCst);
            let step = script[n];
            async move {
                match step {
                    Step::Answer => Ok(n),
                    Step::Fail(reason) => Err(ProbeError::new(reason, format!("attempt {n}"))),
                    Step::Slow(wait) => {
                        tokio::time::sleep(wait).await;
                        Ok(n)
                    }
                    Step::Hang => std::future::pending().await,
                }
            }
        })
        .await;
        (confirmed, made.load(Ordering::SeqCst), start.elapsed())
    }

    #[test]
    fn the_hedge_starts_at_half_the_time_left() {
        let now = Instant::now();
        assert_eq!(hedge_at(now, now + TIMEOUT), now + TIMEOUT / 2);
        assert_eq!(hedge_at(now, now), now);
        assert_eq!(
            hedge_at(now + TIMEOUT, now),
            now + TIMEOUT,
            "past the deadline"
        );
    }

    #[tokio::test]
    async fn a_success_needs_one_attempt() {
        let (c, made, _) = run(&[Step::Answer]).await;
        assert_eq!((c.result.ok(), c.retries, made), (Some(0), 0, 1));
    }

    #[tokio::test]
    async fn a_fast_failure_is_retried_at_once_and_absorbed() {
        let (c, made, _) = run(&[Step::Fail(Reason::HttpStatus), Step::Answer]).await;
        assert_eq!((c.result.ok(), c.retries, made), (Some(1), 1, 2));
    }

    #[tokio::test]
    async fn two_fast_failures_fail_with_the_second() {
        let (c, made, elapsed) =
            run(&[Step::Fail(Reason::Connect), Step::Fail(Reason::RpcError)]).await;
        assert_eq!(c.result.unwrap_err().detail, "attempt 1");
        assert_eq!((c.retries, made), (1, 2));
        assert!(
            elapsed < TIMEOUT / 2,
            "confirmed without waiting: {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn a_deliberate_answer_is_not_retried() {
        for reason in [Reason::RateLimited, Reason::WrongChain] {
            let (c, made, _) = run(&[Step::Fail(reason), Step::Answer]).await;
            assert_eq!(c.result.unwrap_err().reason, reason);
            assert_eq!((c.retries, made), (0, 1), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_hang_is_hedged_and_the_hedge_wins() {
        let (c, made, elapsed) = run(&[Step::Hang, Step::Answer]).await;
        assert_eq!((c.result.ok(), c.retries, made), (Some(1), 1, 2));
        assert!(elapsed >= TIMEOUT / 2, "the hedge waits half the timeout");
    }

    #[tokio::test]
    async fn a_slow_first_answer_still_wins_over_a_slower_hedge() {
        let (c, made, _) = run(&[Step::Slow(TIMEOUT * 3 / 4), Step::Hang]).await;
        assert_eq!((c.result.ok(), c.retries, made), (Some(0), 1, 2));
    }

    #[tokio::test]
    async fn a_hedge_failing_fast_leaves_the_first_attempt_running() {
        let (c, _, _) = run(&[Step::Slow(TIMEOUT * 3 / 4), Step::Fail(Reason::Connect)]).await;
        assert_eq!(c.result.ok(), Some(0));
    }

    #[tokio::test]
    async fn a_timeout_needs_three_hung_attempts_and_half_the_timeout_more() {
        let (c, made, elapsed) = run(&[Step::Hang, Step::Hang, Step::Hang]).await;
        assert_eq!(c.result.unwrap_err().reason, Reason::Timeout);
        assert_eq!((c.retries, made), (2, 3));
        assert!(
            elapsed >= TIMEOUT * 3 / 2,
            "failed before the third attempt had half the timeout: {elapsed:?}"
        );
        assert!(elapsed < TIMEOUT * 2, "{elapsed:?}");
    }

    #[tokio::test]
    async fn two_slow_attempts_are_noise_the_third_answers() {
        let (c, made, _) = run(&[Step::Hang, Step::Hang, Step::Answer]).await;
        assert_eq!((c.result.ok(), c.retries, made), (Some(2), 2, 3));
        // The first attempt answering after the deadline, before the end, still counts.
        let (c, _, _) = run(&[Step::Slow(TIMEOUT * 5 / 4), Step::Hang, Step::Hang]).await;
        assert_eq!(c.result.ok(), Some(0));
    }

    #[tokio::test]
    async fn a_retry_after_a_fast_failure_that_hangs_gets_the_third_attempt() {
        let (c, made, elapsed) = run(&[Step::Fail(Reason::Connect), Step::Hang, Step::Hang]).await;
        assert_eq!(c.result.unwrap_err().reason, Reason::Timeout);
        assert_eq!((c.retries, made), (2, 3));
        assert!(elapsed >= TIMEOUT * 3 / 2);
    }
}
