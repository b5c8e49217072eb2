//! Named protocol timers with one deadline each.
//!
//! The core never sleeps: it records deadlines here, reports the earliest
//! through `poll_timeout`, and the driver calls `handle_timeout` when that
//! moment has come. Per-request deadlines are many and come and go, so the
//! request tracker keeps them in an ordered set of its own, and the
//! scheduler's barrier deadlines live with its barriers.

use crate::time::Instant;

/// Periodic or one-shot protocol timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Repeat an unanswered registration.
    RegisterRetry,
    /// Tell the scheduler we are alive.
    Heartbeat,
    /// Scheduler: look for silent nodes. Others: check the scheduler is alive.
    LivenessScan,
}

const TIMERS: usize = 3;

impl Timer {
    const fn index(self) -> usize {
        match self {
            Self::RegisterRetry => 0,
            Self::Heartbeat => 1,
            Self::LivenessScan => 2,
        }
    }

    const ALL: [Self; TIMERS] = [Self::RegisterRetry, Self::Heartbeat, Self::LivenessScan];
}

/// Deadlines of the fixed timers.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    fixed: [Option<Instant>; TIMERS],
}

impl TimerTable {
    /// Arms `timer` for `at`, replacing any earlier setting.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.fixed[timer.index()] = Some(at);
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.fixed[timer.index()] = None;
    }

    /// Disarms and returns the fixed timers due at `now`, in a fixed order.
    pub(crate) fn expire(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        let mut due = Vec::new();
        for timer in Timer::ALL {
            if self.fixed[timer.index()].is_some_and(|at| at <= now) {
                self.fixed[timer.index()] = None;
                due.push(timer);
            }
        }
        due.into_iter()
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.fixed.iter().flatten().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn earliest_deadline_wins_and_expired_timers_disarm() {
        let mut t = TimerTable::default();
        let t0 = Instant::ZERO;
        t.set(Timer::Heartbeat, t0 + Duration::from_secs(2));
        t.set(Timer::LivenessScan, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(t.expire(t0).next().is_none());
        assert_eq!(t.expire(t0 + Duration::from_secs(1)).collect::<Vec<_>>(), vec![Timer::LivenessScan]);
        assert_eq!(t.expire(t0 + Duration::from_secs(2)).collect::<Vec<_>>(), vec![Timer::Heartbeat]);
        assert_eq!(t.next(), None);
    }
}
