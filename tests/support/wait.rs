//! Waiting for a condition with a deadline, never a bare sleep: `eventually`
//! in async tests, `wait_for` where the caller is not async (starting servers,
//! `Drop`).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Wait until `check` holds, polling; fail the test at the deadline.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
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
