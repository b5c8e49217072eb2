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
    /// When the newest heartbeat the scheduler answered was sent (our
    /// clock): the scheduler heard us at that time or later, so it cannot
    /// declare us dead before `heartbeat_timeout` after it.
    acked_sent_at: Option<Instant>,
}

impl SchedulerWatch {
    pub(crate) fn new(now: Instant) -> Self {
        Self { heard_at: now, acked_sent_at: None }
    }

    /// Whether, at `now`, the scheduler cannot have declared us dead yet
    /// and handed our place to another server: the newest heartbeat it
    /// answered was sent less than `lease` ago. A server holds a read lease
    /// this way; `lease` must be shorter than `heartbeat_timeout` by the
    /// clocks' rate drift.
    pub(crate) fn holds_lease(&self, now: Instant, lease: Duration) -> bool {
        self.acked_sent_at.is_some_and(|sent| now < sent + lease)
    }

    /// The scheduler spoke (a table, or a heartbeat answer).
    pub(crate) fn heard(&mut self, now: Instant) {
        self.heard_at = now;
    }

    /// Sends this interval's heartbeat, stamped `now`.
    pub(crate) fn beat(&self, now: Instant, out: &mut Outbox) {
        out.send(NodeId::SCHEDULER, Message::Heartbeat { sent_at: now.as_nanos() });
    }

    /// The scheduler answered, at membership `epoch`, our heartbeat sent
    /// at `sent_at`. Returns whether its table is newer than ours
    /// (`epoch_known`), so that we missed one and must ask again.
    pub(crate) fn on_heartbeat_ack(&mut self, now: Instant, epoch: u64, epoch_known: u64, sent_at: Instant) -> bool {
        self.heard_at = now;
        // A forged or garbled echo from the future would extend the lease.
        if sent_at <= now {
            self.acked_sent_at = self.acked_sent_at.max(Some(sent_at));
        }
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
        assert!(!watch.on_heartbeat_ack(t0 + timeout, 4, 4, t0), "same epoch: nothing missed");
        assert!(!watch.is_lost(t0 + timeout, timeout));
        assert!(watch.on_heartbeat_ack(t0 + timeout, 5, 4, t0), "a newer epoch means a missed table");
    }

    #[test]
    fn the_read_lease_runs_from_the_send_time_of_the_newest_answered_heartbeat() {
        let lease = Duration::from_secs(2);
        let t0 = Instant::ZERO + Duration::from_secs(10);
        let mut watch = SchedulerWatch::new(t0);
        assert!(!watch.holds_lease(t0, lease), "no answer yet, no lease");
        let sent = t0 + Duration::from_millis(100);
        // Answered late: the lease still counts from the send.
        watch.on_heartbeat_ack(sent + Duration::from_millis(1500), 1, 1, sent);
        assert!(watch.holds_lease(sent + Duration::from_millis(1999), lease));
        assert!(!watch.holds_lease(sent + lease, lease));
        // An older heartbeat answered later does not move it back.
        watch.on_heartbeat_ack(sent + lease, 1, 1, t0);
        assert!(watch.holds_lease(sent + Duration::from_millis(1999), lease));
        // An echo from the future is not believed.
        let now = sent + lease;
        watch.on_heartbeat_ack(now, 1, 1, now + Duration::from_secs(60));
        assert!(!watch.holds_lease(now, lease));
    }
}
