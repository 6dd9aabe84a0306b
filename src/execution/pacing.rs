//! How fast bulk runs send: each kind of write at the documented limit of the Graph service
//! behind it, so runs go as fast as that service allows instead of provoking a storm of 429s
//! (the ones that still come are retried after their `Retry-After`). The limits are per app and
//! tenant, so the executor keeps one pacer of each kind for every run of the process.
//!
//! - Teams writes (`removeAllAccessForUser`): 30 requests per second per app per tenant.
//! - Entra ID writes (`revokeSignInSessions`): a token bucket of 3,000 writes per 2 minutes
//!   30 seconds per app and tenant, each write costing one; so 3,000 at once, then 20 a second.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The rate one kind of write may be sent at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pacing {
    /// At most `per_second` items in any sliding second.
    Window {
        /// Items per second.
        per_second: usize,
    },
    /// A token bucket: `burst` items at once, refilled at `per_second`.
    Bucket {
        /// What the bucket holds when full.
        burst: usize,
        /// Refill rate, items per second.
        per_second: usize,
    },
}

/// Graph's documented limit for Teams writes: 30 per second per app per tenant.
pub(crate) const TEAMS_WRITES: Pacing = Pacing::Window { per_second: 30 };

/// Entra ID's documented write quota per app and tenant: 3,000 per 150 seconds.
pub(crate) const DIRECTORY_WRITES: Pacing = Pacing::Bucket { burst: 3_000, per_second: 20 };

/// Paces writes of one kind to one [`Pacing`], for every run that shares it.
pub(crate) struct Pacer {
    state: State,
}

enum State {
    Window { per_second: usize, sent: VecDeque<(Instant, usize)> },
    Bucket { burst: f64, per_second: f64, tokens: f64, at: Instant },
}

const SECOND: Duration = Duration::from_secs(1);

impl Pacer {
    /// A pacer with nothing sent yet (a full bucket).
    pub(crate) fn new(pacing: Pacing) -> Self {
        let state = match pacing {
            Pacing::Window { per_second } => State::Window { per_second: per_second.max(1), sent: VecDeque::new() },
            Pacing::Bucket { burst, per_second } => {
                let burst = burst.max(1) as f64;
                State::Bucket { burst, per_second: per_second.max(1) as f64, tokens: burst, at: Instant::now() }
            }
        };
        Self { state }
    }

    /// Waits until items may go, and says how many (at most `max`, at least 1): a window as soon
    /// as it has room, a bucket once it holds `max` (or its burst).
    pub(crate) async fn room(&mut self, max: usize) -> usize {
        let max = max.max(1);
        loop {
            let now = Instant::now();
            let wait_until = match &mut self.state {
                State::Window { per_second, sent } => {
                    while sent.front().is_some_and(|(at, _)| now.duration_since(*at) >= SECOND) {
                        sent.pop_front();
                    }
                    let in_window: usize = sent.iter().map(|(_, n)| n).sum();
                    if in_window < *per_second {
                        return (*per_second - in_window).min(max);
                    }
                    sent.front().map_or(now, |(at, _)| *at + SECOND)
                }
                State::Bucket { burst, per_second, tokens, at } => {
                    *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * *per_second).min(*burst);
                    *at = now;
                    // A whole request's worth (or all the bucket can hold): waiting for it costs no
                    // throughput, since the bucket refills at the same rate either way, and sends
                    // one `$batch` of 20 where a trickle would send 20 of one.
                    let need = (max as f64).min(*burst);
                    if *tokens >= need {
                        return (*tokens as usize).min(max);
                    }
                    now + Duration::from_secs_f64((need - *tokens) / *per_second)
                }
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// Counts `items` as sent now.
    pub(crate) fn sent(&mut self, items: usize) {
        match &mut self.state {
            State::Window { sent, .. } => sent.push_back((Instant::now(), items)),
            State::Bucket { tokens, .. } => *tokens -= items as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends as fast as `pacer` lets, `max` at a time, for `run`: the items sent by each whole
    /// second from the start.
    async fn sent_by_second(pacer: &mut Pacer, max: usize, run: Duration) -> Vec<usize> {
        let start = Instant::now();
        let mut by_second = vec![0; run.as_secs() as usize];
        loop {
            let room = pacer.room(max).await;
            let second = Instant::now().duration_since(start).as_secs() as usize;
            if second >= by_second.len() {
                return by_second;
            }
            pacer.sent(room);
            for count in &mut by_second[second..] {
                *count += room;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn teams_writes_go_at_30_in_any_second() {
        let by_second = sent_by_second(&mut Pacer::new(TEAMS_WRITES), 20, Duration::from_secs(4)).await;
        assert_eq!(by_second, [30, 60, 90, 120]);
    }

    #[tokio::test(start_paused = true)]
    async fn directory_writes_burst_3000_then_go_at_20_a_second() {
        let by_second = sent_by_second(&mut Pacer::new(DIRECTORY_WRITES), 20, Duration::from_secs(4)).await;
        // The full bucket at once, then what it refills, a whole request's worth each second.
        assert_eq!(by_second, [3_000, 3_020, 3_040, 3_060]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_never_holds_more_than_its_burst() {
        let mut pacer = Pacer::new(Pacing::Bucket { burst: 50, per_second: 10 });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(pacer.room(1_000).await, 50);
        pacer.sent(50);
        let before = Instant::now();
        assert_eq!(pacer.room(1).await, 1, "empty: one item waits for one refill");
        assert_eq!(Instant::now().duration_since(before), Duration::from_millis(100));
        pacer.sent(1);
        assert_eq!(pacer.room(1_000).await, 50, "more than the bucket holds: it waits until full");
        assert_eq!(Instant::now().duration_since(before), Duration::from_millis(5_100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_bucket_waits_for_a_whole_request_not_a_trickle() {
        let mut pacer = Pacer::new(DIRECTORY_WRITES);
        pacer.sent(3_000);
        let before = Instant::now();
        assert_eq!(pacer.room(20).await, 20);
        assert_eq!(Instant::now().duration_since(before), Duration::from_secs(1));
    }
}
