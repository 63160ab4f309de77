//! A rate-limited log for guest-triggered conditions: a misbehaving guest can hit the same error
//! millions of times a second, and the VMM's stderr must stay readable.

use std::fmt;
use std::time::{Duration, Instant};

/// Default number of lines a device may print per second.
pub const DEFAULT_LINES_PER_SECOND: u32 = 10;

/// Prints at most `limit` lines per second per instance to stderr, and says how many it dropped.
#[derive(Debug)]
pub struct RateLimitedLog {
    name: String,
    limit: u32,
    window: Duration,
    window_start: Option<Instant>,
    in_window: u32,
    dropped_in_window: u64,
    emitted: u64,
    suppressed: u64,
    quiet: bool,
}

impl RateLimitedLog {
    /// A log whose lines start with `name`, allowing `limit` lines per second.
    pub fn new(name: impl Into<String>, limit: u32) -> Self {
        RateLimitedLog {
            name: name.into(),
            limit,
            window: Duration::from_secs(1),
            window_start: None,
            in_window: 0,
            dropped_in_window: 0,
            emitted: 0,
            suppressed: 0,
            quiet: false,
        }
    }

    /// Changes the name lines start with.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Counts lines without printing them (fuzzing and property tests use this).
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Logs one line unless this second's budget is spent.
    pub fn log(&mut self, args: fmt::Arguments<'_>) {
        self.try_log(args);
    }

    /// Logs one line unless this second's budget is spent; returns whether it was let through.
    pub fn try_log(&mut self, args: fmt::Arguments<'_>) -> bool {
        let now = Instant::now();
        let new_window = match self.window_start {
            None => true,
            Some(start) => now.duration_since(start) >= self.window,
        };
        if new_window {
            if self.dropped_in_window > 0 && !self.quiet {
                eprintln!(
                    "{}: {} similar lines suppressed",
                    self.name, self.dropped_in_window
                );
            }
            self.window_start = Some(now);
            self.in_window = 0;
            self.dropped_in_window = 0;
        }
        if self.in_window >= self.limit {
            self.dropped_in_window += 1;
            self.suppressed += 1;
            return false;
        }
        self.in_window += 1;
        self.emitted += 1;
        if !self.quiet {
            eprintln!("{}: {}", self.name, args);
        }
        true
    }

    /// Lines logged (printed, or counted when quiet) so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Lines dropped by the rate limit so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Lines asked for so far, printed or not.
    pub fn total(&self) -> u64 {
        self.emitted + self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_lines_per_window() {
        let mut log = RateLimitedLog::new("test", 3);
        log.set_quiet(true);
        let passed = (0..100)
            .filter(|i| log.try_log(format_args!("line {i}")))
            .count();
        assert_eq!(passed, 3);
        assert_eq!(log.emitted(), 3);
        assert_eq!(log.suppressed(), 97);
        assert_eq!(log.total(), 100);
    }
}
