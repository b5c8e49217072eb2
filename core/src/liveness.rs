//! A node's half of failure detection: it heartbeats the scheduler and
//! watches that the scheduler answers.
//!
//! Every node sends `Heartbeat` each `heartbeat_interval`; the scheduler
//! answers with its membership epoch, so a node that missed a table
//! notices and asks again. A node that hears nothing from the scheduler
//! for `heartbeat_timeout` fails its pending work with `SchedulerLost`,
//! since it can no longer learn who is alive. The scheduler's half (who is
//! silent, who is dead) is [`crate::scheduler::liveness`].

use crate::id::NodeId;
use crate::outbox::Outbox;
use crate::time::{Duration, Instant};
use crate::wire::Message;

/// What a node knows of the scheduler's liveness.
#[derive(Debug)]
pub(crate) struct SchedulerWatch {
    heard_at: Instant,
}

impl SchedulerWatch {
    pub(crate) fn new(now: Instant) -> Self {
        Self { heard_at: now }
    }

    /// The scheduler spoke (a table, or a heartbeat answer).
    pub(crate) fn heard(&mut self, now: Instant) {
        self.heard_at = now;
    }

    /// Sends this interval's heartbeat.
    pub(crate) fn beat(&self, out: &mut Outbox) {
        out.send(NodeId::SCHEDULER, Message::Heartbeat);
    }

    /// The scheduler answered a heartbeat at membership `epoch`. Returns
    /// whether its table is newer than ours (`epoch_known`), so that we
    /// missed one and must ask again.
    pub(crate) fn on_heartbeat_ack(&mut self, now: Instant, epoch: u64, epoch_known: u64) -> bool {
        self.heard_at = now;
        epoch > epoch_known
    }

    /// Whether the scheduler has been silent for `timeout` at `now`. True
    /// at every scan while the silence lasts, not only the first: work
    /// started after that (a barrier has no deadline of its own) must not
    /// wait forever either.
    pub(crate) fn is_lost(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_since(self.heard_at) >= timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_is_lost_after_a_full_timeout_of_silence_and_found_when_heard() {
        let timeout = Duration::from_secs(3);
        let t0 = Instant::ZERO + Duration::from_secs(1);
        let mut watch = SchedulerWatch::new(t0);
        assert!(!watch.is_lost(t0 + Duration::from_millis(2999), timeout));
        assert!(watch.is_lost(t0 + timeout, timeout));
        assert!(!watch.on_heartbeat_ack(t0 + timeout, 4, 4), "same epoch: nothing missed");
        assert!(!watch.is_lost(t0 + timeout, timeout));
        assert!(watch.on_heartbeat_ack(t0 + timeout, 5, 4), "a newer epoch means a missed table");
    }
}
