//! What the host tests' `Platform`s share: dispatchers are OS threads.

use std::time::Duration;

/// `Platform::idle` of a dispatcher that is an OS thread: parks until unparked or until
/// `deadline_ns` (on the platform's clock, which reads `now_ns`). `park` keeps an unpark that
/// came early, as the contract asks.
pub fn park_until(now_ns: u64, deadline_ns: Option<u64>) {
    match deadline_ns {
        None => std::thread::park(),
        Some(deadline) if deadline > now_ns => {
            std::thread::park_timeout(Duration::from_nanos(deadline - now_ns));
        }
        Some(_) => {}
    }
}
