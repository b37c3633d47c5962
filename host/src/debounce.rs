//! Debouncing change events: both file watchers (the config file in [`crate::server`], the
//! plugins directory in [`crate::plugins::watch`]) wait for a quiet period after a burst of
//! events before acting on them.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

/// Waits until `events` has been quiet for `quiet(last)`, where `last` is the latest event
/// received (starting with `first`), and returns that latest event; `None` when the channel
/// closed meanwhile.
///
/// The quiet period may depend on the event: a file known to be complete needs a shorter
/// wait than one that may still be being written.
pub async fn quiet_after<T>(
    events: &mut UnboundedReceiver<T>,
    first: T,
    quiet: impl Fn(&T) -> Duration,
) -> Option<T> {
    let mut last = first;
    loop {
        match tokio::time::timeout(quiet(&last), events.recv()).await {
            Ok(Some(ev)) => last = ev,
            Ok(None) => return None,
            Err(_) => return Some(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_last_event_of_a_burst_after_quiet() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sender = tokio::spawn(async move {
            for i in 1..=3 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                tx.send(i).unwrap();
            }
            // Keep the channel open past the quiet period.
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(tx);
        });
        let start = tokio::time::Instant::now();
        let last = quiet_after(&mut rx, 0, |_| Duration::from_millis(50)).await;
        assert_eq!(last, Some(3));
        // Three events 40 ms apart, then 50 ms of quiet.
        assert_eq!(start.elapsed(), Duration::from_millis(170));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_period_depends_on_the_last_event() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(true).unwrap();
        let start = tokio::time::Instant::now();
        let quiet = |complete: &bool| Duration::from_millis(if *complete { 15 } else { 100 });
        let last = quiet_after(&mut rx, false, quiet).await;
        assert_eq!(last, Some(true));
        assert_eq!(start.elapsed(), Duration::from_millis(15));
        drop(tx);
    }

    #[tokio::test]
    async fn closed_channel_is_none() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u8>();
        drop(tx);
        assert_eq!(
            quiet_after(&mut rx, 1, |_| Duration::from_secs(1)).await,
            None
        );
    }
}
