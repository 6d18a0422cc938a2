//! Time as the runtime sees it: a [`Clock`] injected into the engine, either
//! the [`SystemClock`] or a [`ManualClock`] that tests move by hand, so that
//! timers and `now` never depend on the wall clock of the machine running a
//! test.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::message::Timestamp;

/// A boxed future that can be sent between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the engine reads the time and waits for timers.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> Timestamp;

    /// Resolves once [`Clock::now`] has reached `at`.
    fn sleep_until(&self, at: Timestamp) -> BoxFuture<'static, ()>;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // The system clock can be set back while we sleep, so check again
            // on waking instead of trusting one long sleep.
            loop {
                let now = Timestamp::now();
                if now >= at {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(at.0 - now.0)).await;
            }
        })
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// The time a [`ManualClock::default`] starts at: 2024-01-01T00:00:00Z,
    /// a fixed and readable instant.
    pub const EPOCH: Timestamp = Timestamp(1_704_067_200_000);

    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock { now: Arc::new(watch::Sender::new(start)) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now = *now + by);
    }

    /// Moves the clock to `at`, if that is later than now: time never runs back.
    pub fn set(&self, at: Timestamp) {
        self.now.send_if_modified(|now| {
            let later = at > *now;
            if later {
                *now = at;
            }
            later
        });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(ManualClock::EPOCH)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&*self.now.borrow()).finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> BoxFuture<'static, ()> {
        let mut receiver = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; once it is
            // gone, time stops for good and the sleeper never wakes, which is
            // what a stopped clock means.
            if receiver.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleeper_wakes_when_the_clock_reaches_its_time() {
        let clock = ManualClock::new(Timestamp(1_000));
        let sleeper = tokio::spawn(clock.sleep_until(Timestamp(1_500)));
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), Timestamp(1_500));
    }

    #[test]
    fn a_manual_clock_never_runs_back() {
        let clock = ManualClock::new(Timestamp(10));
        clock.set(Timestamp(5));
        assert_eq!(clock.now(), Timestamp(10));
        clock.set(Timestamp(20));
        assert_eq!(clock.now(), Timestamp(20));
    }
}
