//! Telling a provider's noise from its failure: a request fails only when a second attempt
//! confirms it. Healthy paid providers answer a few requests per thousand with a 502, a reset or
//! a hang; one such answer must not eject them, yet a provider that is really down or erroring
//! must still be reported down within the same probe.

use std::future::Future;
use std::pin::pin;

use futures::future::{select, Either};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::reason::Reason;
use crate::rpc::ProbeError;

/// How a confirmed request ended.
#[derive(Debug)]
pub struct Confirmed<T> {
    pub result: Result<T, ProbeError>,
    /// Attempts that failed or hung and were retried or hedged: 0 or 1.
    pub retries: u64,
}

/// When an attempt still unanswered gets a hedge: half the time left, so that the hedge has as
/// long as the first attempt had before it.
pub fn hedge_at(now: Instant, deadline: Instant) -> Instant {
    now + deadline.saturating_duration_since(now) / 2
}

/// Runs `attempt`, and at most one more, until `deadline`. A transient failure before the hedge
/// time ([`hedge_at`]) is retried at once; an attempt still unanswered then is hedged by a second
/// one beside it. The second attempt shares `deadline`, so a hanging provider fails at the
/// deadline as without confirmation; the first success wins; the result is an error only when
/// both attempts failed (the later failure). A deliberate answer (a 429, a 4xx) is not retried.
pub async fn confirm<T, F, Fut>(deadline: Instant, mut attempt: F) -> Confirmed<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProbeError>>,
{
    let hedge = hedge_at(Instant::now(), deadline);
    let mut first = pin!(bounded(deadline, attempt()));
    let early = tokio::select! {
        biased;
        result = &mut first => Some(result),
        () = sleep_until(hedge) => None,
    };
    let result = match early {
        Some(Err(e)) if e.transient => bounded(deadline, attempt()).await,
        Some(settled) => {
            return Confirmed {
                result: settled,
                retries: 0,
            }
        }
        None => first_success(first, pin!(bounded(deadline, attempt()))).await,
    };
    Confirmed { result, retries: 1 }
}

/// `attempt`, failing with [`Reason::Timeout`] at `deadline`.
async fn bounded<T>(
    deadline: Instant,
    attempt: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    timeout_at(deadline, attempt).await.unwrap_or_else(|_| {
        Err(ProbeError::new(
            Reason::Timeout,
            "no complete answer within the probe timeout",
        ))
    })
}

/// The first of `a` and `b` to succeed, else the one that failed last.
async fn first_success<T, A, B>(a: A, b: B) -> Result<T, ProbeError>
where
    A: Future<Output = Result<T, ProbeError>> + Unpin,
    B: Future<Output = Result<T, ProbeError>> + Unpin,
{
    match select(a, b).await {
        Either::Left((Ok(value), _)) | Either::Right((Ok(value), _)) => Ok(value),
        Either::Left((Err(_), b)) => b.await,
        Either::Right((Err(_), a)) => a.await,
    }
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
    async fn two_hangs_time_out_at_the_deadline_not_before() {
        let (c, made, elapsed) = run(&[Step::Hang, Step::Hang]).await;
        assert_eq!(c.result.unwrap_err().reason, Reason::Timeout);
        assert_eq!((c.retries, made), (1, 2));
        assert!(
            elapsed >= TIMEOUT,
            "failed before the deadline: {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn a_retry_after_a_fast_failure_shares_the_deadline() {
        let (c, made, elapsed) = run(&[Step::Fail(Reason::Connect), Step::Hang]).await;
        assert_eq!(c.result.unwrap_err().reason, Reason::Timeout);
        assert_eq!((c.retries, made), (1, 2));
        assert!(elapsed >= TIMEOUT);
    }
}
