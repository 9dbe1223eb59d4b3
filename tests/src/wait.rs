//! Polling: the harness and tests wait for the cluster to converge rather than sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Polls `check` until it returns `Ok(value)` or `timeout` passes. `Err(reason)` means "not yet";
/// the last reason is part of the timeout error, so say what was seen ("job has 1/2 succeeded").
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(50);
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited: start.elapsed(),
                detail: format!("; last seen: {last}"),
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}
