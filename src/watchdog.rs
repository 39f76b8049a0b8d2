//! The overall watchdog of a stick's update: when nothing moves for too long (a stick or a
//! USB bridge that stops answering mid-read, a filesystem that blocks), the agent must not
//! keep the "do not remove" LED and a stopped aktualizr-lite until the unit's timeout, hours
//! later. Every sign of life calls [`beat`]: each open on the stick ([`crate::hostile_fs`]),
//! each object or blob copied, each progress and step the operator sees. [`arm`] starts a
//! thread that runs the caller's last rites once no beat came for the timeout; they end the
//! process, whatever the stuck thread is blocked in.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`] of the last beat.
static LAST_BEAT: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Something moved. Cheap (one atomic store): called for every open and copied chunk.
pub(crate) fn beat() {
    LAST_BEAT.store(now_ms(), Ordering::Relaxed);
}

/// How long nothing has moved.
pub fn idle() -> Duration {
    Duration::from_millis(now_ms().saturating_sub(LAST_BEAT.load(Ordering::Relaxed)))
}

const ARMED: u8 = 0;
const DISARMED: u8 = 1;
const FIRED: u8 = 2;

/// An armed watchdog; dropping it disarms it.
pub(crate) struct Watchdog {
    state: Arc<AtomicU8>,
    wake: Arc<(Mutex<()>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Start watching: once nothing beat for `timeout`, `on_stall` runs (on the watchdog's
/// thread) with the time since the last beat. It is meant to end the process: a thread that
/// disarms a fired watchdog waits for that instead of racing it.
pub(crate) fn arm(timeout: Duration, on_stall: impl FnOnce(Duration) + Send + 'static) -> Watchdog {
    beat();
    let state = Arc::new(AtomicU8::new(ARMED));
    let wake = Arc::new((Mutex::new(()), Condvar::new()));
    let (st, wk) = (state.clone(), wake.clone());
    // Look often enough that a stall is acted on within a few percent of the timeout.
    let tick = (timeout / 20).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let thread = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            let (lock, cvar) = &*wk;
            let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = cvar.wait_timeout(guard, tick);
            if st.load(Ordering::SeqCst) != ARMED {
                return;
            }
            let idle = idle();
            if idle >= timeout
                && st
                    .compare_exchange(ARMED, FIRED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                on_stall(idle);
                return;
            }
        });
    let thread = match thread {
        Ok(t) => Some(t),
        Err(e) => {
            // Without the thread the update still runs; it only loses its guard.
            tracing::warn!("cannot start the watchdog: {e}");
            None
        }
    };
    Watchdog {
        state,
        wake,
        thread,
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let disarmed = self
            .state
            .compare_exchange(ARMED, DISARMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if !disarmed {
            // It fired: its last rites end the process; doing anything else now would race
            // them (a second result line, a report after the unmount).
            loop {
                std::thread::park();
            }
        }
        self.wake.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn fires_once_nothing_beats() {
        let (tx, rx) = mpsc::channel();
        let dog = arm(Duration::from_millis(200), move |idle| {
            let _ = tx.send(idle);
        });
        let idle = rx.recv_timeout(Duration::from_secs(60)).expect("fired");
        assert!(idle >= Duration::from_millis(200), "{idle:?}");
        assert_eq!(dog.state.load(Ordering::SeqCst), FIRED);
        // Dropping a fired watchdog parks the thread for good: that is its contract.
        std::mem::forget(dog);
    }

    #[test]
    fn disarmed_it_never_fires_and_a_beat_resets_the_idle_time() {
        let (tx, rx) = mpsc::channel::<Duration>();
        let dog = arm(Duration::from_secs(3600), move |idle| {
            let _ = tx.send(idle);
        });
        beat();
        assert!(idle() < Duration::from_secs(60));
        // The drop joins the thread: afterwards it can no longer fire.
        drop(dog);
        assert!(rx.try_recv().is_err());
    }
}
