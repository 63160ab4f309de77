//! Time: `timespec`, `timeval`, `timezone`, `itimerval`, `itimerspec`, `tms`, and the clock
//! and timer constants.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Wall-clock time.
pub const CLOCK_REALTIME: i32 = 0;
/// Time since boot, not counting suspend, never set back.
pub const CLOCK_MONOTONIC: i32 = 1;
/// CPU time of the process.
pub const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
/// CPU time of the thread.
pub const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
/// Monotonic time without NTP adjustment.
pub const CLOCK_MONOTONIC_RAW: i32 = 4;
/// Wall-clock time, cheap and coarse.
pub const CLOCK_REALTIME_COARSE: i32 = 5;
/// Monotonic time, cheap and coarse.
pub const CLOCK_MONOTONIC_COARSE: i32 = 6;
/// Monotonic time including suspend.
pub const CLOCK_BOOTTIME: i32 = 7;
/// Wall-clock alarm that wakes the system.
pub const CLOCK_REALTIME_ALARM: i32 = 8;
/// Boot-time alarm that wakes the system.
pub const CLOCK_BOOTTIME_ALARM: i32 = 9;
/// International atomic time.
pub const CLOCK_TAI: i32 = 11;
/// `clock_nanosleep`/`timer_settime`: the time is absolute.
pub const TIMER_ABSTIME: i32 = 1;
/// `setitimer`: real time, `SIGALRM`.
pub const ITIMER_REAL: i32 = 0;
/// `setitimer`: user CPU time, `SIGVTALRM`.
pub const ITIMER_VIRTUAL: i32 = 1;
/// `setitimer`: user and system CPU time, `SIGPROF`.
pub const ITIMER_PROF: i32 = 2;

/// Nanoseconds in a second.
pub const NSEC_PER_SEC: i64 = 1_000_000_000;

/// `struct timespec` (16 bytes).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
#[repr(C)]
pub struct Timespec {
    /// Seconds.
    pub tv_sec: i64,
    /// Nanoseconds, `0..1_000_000_000` when valid.
    pub tv_nsec: i64,
}

impl Timespec {
    /// The time `ns` nanoseconds after the epoch (negative: before it).
    pub const fn from_nanos(ns: i64) -> Self {
        Timespec {
            tv_sec: ns.div_euclid(NSEC_PER_SEC),
            tv_nsec: ns.rem_euclid(NSEC_PER_SEC),
        }
    }

    /// Nanoseconds since the epoch, `None` if out of the `i64` range or not normalized.
    pub const fn to_nanos(self) -> Option<i64> {
        if !self.is_valid() {
            return None;
        }
        match self.tv_sec.checked_mul(NSEC_PER_SEC) {
            Some(ns) => ns.checked_add(self.tv_nsec),
            None => None,
        }
    }

    /// Whether `tv_nsec` is in range (what system calls check before `EINVAL`).
    pub const fn is_valid(self) -> bool {
        self.tv_nsec >= 0 && self.tv_nsec < NSEC_PER_SEC
    }
}

/// `struct timeval` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Timeval {
    /// Seconds.
    pub tv_sec: i64,
    /// Microseconds.
    pub tv_usec: i64,
}

impl Timeval {
    /// The time `ns` nanoseconds after the epoch, truncated to microseconds.
    pub const fn from_nanos(ns: i64) -> Self {
        Timeval {
            tv_sec: ns.div_euclid(NSEC_PER_SEC),
            tv_usec: ns.rem_euclid(NSEC_PER_SEC) / 1000,
        }
    }
}

/// `struct timezone` of `gettimeofday` (8 bytes, obsolete; Linux fills zeros).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Timezone {
    /// Minutes west of Greenwich.
    pub tz_minuteswest: i32,
    /// Type of daylight-saving correction.
    pub tz_dsttime: i32,
}

/// `struct itimerval` of `setitimer` (32 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Itimerval {
    /// Reload value (0: one shot).
    pub it_interval: Timeval,
    /// Time to the next expiry (0: disarmed).
    pub it_value: Timeval,
}

/// `struct itimerspec` of `timer_settime`/`timerfd_settime` (32 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Itimerspec {
    /// Reload value.
    pub it_interval: Timespec,
    /// Time to the next expiry.
    pub it_value: Timespec,
}

/// `struct tms` of `times` (32 bytes, in clock ticks).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Tms {
    /// User CPU time.
    pub tms_utime: i64,
    /// System CPU time.
    pub tms_stime: i64,
    /// User CPU time of waited-for children.
    pub tms_cutime: i64,
    /// System CPU time of waited-for children.
    pub tms_cstime: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_conversions() {
        let t = Timespec::from_nanos(1_700_000_000_123_456_789);
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        assert_eq!(t.to_nanos(), Some(1_700_000_000_123_456_789));
        let before = Timespec::from_nanos(-1);
        assert_eq!((before.tv_sec, before.tv_nsec), (-1, 999_999_999));
        assert_eq!(before.to_nanos(), Some(-1));
        assert_eq!(
            Timespec {
                tv_sec: 1,
                tv_nsec: NSEC_PER_SEC
            }
            .to_nanos(),
            None
        );
        assert_eq!(
            Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0
            }
            .to_nanos(),
            None
        );
        let tv = Timeval::from_nanos(2_000_001_999);
        assert_eq!((tv.tv_sec, tv.tv_usec), (2, 1));
    }
}
