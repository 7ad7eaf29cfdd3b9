//! Waiting for a condition with a deadline, never a bare sleep: `eventually`
//! in async tests, `wait_for` where the caller is not async (starting servers,
//! `Drop`).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Every deadline is at least this long. A deadline here is how long a
/// failure takes to be reported, never a measurement: a condition that holds
/// returns at once. Fresh, cold runs of the suite on a busy 2-core machine
/// (issue 25's five `.ci/run`s, beside other builds) needed more than 5 s for
/// a TLS Sentinel to be ready and for 10 000 entries to reach a follower, so
/// the deadlines tests write (5 s, 10 s) are raised to this floor.
pub const PATIENCE: Duration = Duration::from_secs(30);

fn patient(deadline: Duration) -> Duration {
    deadline.max(PATIENCE)
}

/// Wait until `check` holds, polling; fail the test at the deadline.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = patient(deadline);
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Like `eventually`, but `check` says why it does not hold yet (`Err`), and
/// the last reason is the failure message at the deadline.
pub async fn eventually_explained<F, Fut>(deadline: Duration, poll: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = patient(deadline);
    let end = Instant::now() + deadline;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < end, "not within {deadline:?}: {why}"),
        }
        tokio::time::sleep(poll).await;
    }
}

/// The blocking twin of `eventually`, for code that is not async: poll
/// `check` until it holds; fail naming `what` at the deadline.
pub fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    wait_explained(what, deadline, || {
        check().then_some(()).ok_or_else(String::new)
    });
}

/// `wait_for` where `check` says why it does not hold yet; the last reason
/// goes into the failure message.
pub fn wait_explained(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let deadline = patient(deadline);
    let end = Instant::now() + deadline;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) => assert!(
                Instant::now() < end,
                "{what}: not within {deadline:?} {why}"
            ),
        }
        std::thread::sleep(POLL);
    }
}
