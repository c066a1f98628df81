//! Waiting for a condition.

use std::time::{Duration, Instant};

/// Polls `done` every 50 ms for up to `within`; panics with `what` and the last `Err` detail on
/// timeout.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match done().await {
            Ok(()) => return,
            Err(detail) if Instant::now() > deadline => panic!("{what}: not within {within:?}: {detail}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
