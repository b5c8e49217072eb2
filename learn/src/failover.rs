//! What a server's death did to a training run, for its summary: the step
//! and time the run killed a server, when each node watched heard it
//! declared dead (and of a replacement), how long the killing worker
//! stalled, and, from replica tables seen along the way, when each key
//! range was back to its full number of copies.
//!
//! Everything is recorded as a time since training started, by whoever
//! sees it (a step hook, an event listener, a poller of the replica table),
//! and formatted at the end by [`FailoverLog::summary`]. Pure bookkeeping:
//! the caller does the killing and the watching.
//!
//! ```
//! use std::time::Duration;
//! use pslite_core::{NodeId, Rank};
//! use pslite_learn::failover::{FailoverLog, Kill, News};
//!
//! let mut log = FailoverLog::new(2);
//! let server = NodeId::server(Rank(0));
//! log.step(149, Duration::from_millis(400));
//! log.killed(Kill { server, rank: Rank(0), step: 150, at: Duration::from_millis(410) });
//! log.step(150, Duration::from_millis(410));
//! log.heard("scheduler", News::Dead(server), Duration::from_millis(5_500));
//! log.step(151, Duration::from_millis(5_520));
//! assert_eq!(log.death_declared(), Some(Duration::from_millis(5_500)));
//! let summary = log.summary();
//! assert!(summary.contains("killed at step 150"), "{summary}");
//! assert!(summary.contains("declared dead: scheduler at 5.50 s"), "{summary}");
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use pslite_core::{Chains, NodeId, Rank};

/// The server a run killed, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kill {
    /// Its node id.
    pub server: NodeId,
    /// Its rank among the servers.
    pub rank: Rank,
    /// Minibatches the killing worker had pushed when it struck.
    pub step: u64,
    /// Since training started.
    pub at: Duration,
}

/// Membership news a node reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum News {
    /// The node was declared dead.
    Dead(NodeId),
    /// A replacement took the node's id.
    Recovered(NodeId),
}

/// One piece of news, who heard it, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    /// Which node heard it ("scheduler", "worker 0", ...).
    pub observer: String,
    /// What it heard.
    pub news: News,
    /// Since training started.
    pub at: Duration,
}

/// One key range's copies as tables were seen after the kill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RangeSeen {
    /// First table after the kill that showed fewer than R members.
    short_at: Option<Duration>,
    /// First table after that which showed R members again.
    whole_at: Option<Duration>,
}

/// The failover record of one run; see the module doc.
#[derive(Clone, Debug, Default)]
pub struct FailoverLog {
    replicas: u8,
    kill: Option<Kill>,
    kill_step_asked: Option<u64>,
    heard: Vec<Heard>,
    replacement_started: Option<Duration>,
    last_step: Option<(u64, Duration)>,
    /// The longest time between two steps after the kill: `(step that
    /// ended it, gap)`.
    longest_stall: Option<(u64, Duration)>,
    ranges: Vec<RangeSeen>,
    last_table: Option<(Duration, Chains)>,
}

impl FailoverLog {
    /// A log for a cluster keeping `replicas` copies of each range.
    pub fn new(replicas: u8) -> Self {
        Self { replicas, ..Self::default() }
    }

    /// The run means to kill a server at `step`: said in the summary even
    /// if training ends before it gets there.
    pub fn kill_planned(&mut self, step: u64) {
        self.kill_step_asked = Some(step);
    }

    /// The killing worker finished minibatch `step` at `at`. Call it for
    /// every step, before and after the kill, to measure the stall.
    pub fn step(&mut self, step: u64, at: Duration) {
        if let (Some(kill), Some((_, last_at))) = (self.kill, self.last_step) {
            let gap = at.saturating_sub(last_at.max(kill.at));
            if at >= kill.at && self.longest_stall.is_none_or(|(_, longest)| gap > longest) {
                self.longest_stall = Some((step, gap));
            }
        }
        self.last_step = Some((step, at));
    }

    /// The server was killed.
    pub fn killed(&mut self, kill: Kill) {
        self.kill = Some(kill);
    }

    /// A node reported membership news.
    pub fn heard(&mut self, observer: &str, news: News, at: Duration) {
        self.heard.push(Heard { observer: observer.to_owned(), news, at });
    }

    /// A replacement for the killed server was started at `at`.
    pub fn replacement_started(&mut self, at: Duration) {
        self.replacement_started = Some(at);
    }

    /// A replica table as some node held it at `at`. Tables seen before
    /// the kill only set the baseline.
    pub fn table(&mut self, chains: &Chains, at: Duration) {
        let after_kill = self.kill.is_some_and(|kill| at >= kill.at);
        if self.ranges.len() < chains.as_slice().len() {
            self.ranges.resize(chains.as_slice().len(), RangeSeen::default());
        }
        if after_kill {
            for (seen, chain) in self.ranges.iter_mut().zip(chains.as_slice()) {
                let whole = chain.members().len() >= usize::from(self.replicas);
                match (seen.short_at, seen.whole_at, whole) {
                    (None, _, false) => seen.short_at = Some(at),
                    (Some(_), None, true) => seen.whole_at = Some(at),
                    // Short again after being whole: count from the new loss.
                    (Some(_), Some(_), false) => *seen = RangeSeen { short_at: Some(at), whole_at: None },
                    _ => {}
                }
            }
        }
        self.last_table = Some((at, chains.clone()));
    }

    /// The kill, if it happened.
    pub fn kill(&self) -> Option<Kill> {
        self.kill
    }

    /// When the first node heard the killed server declared dead.
    pub fn death_declared(&self) -> Option<Duration> {
        let server = self.kill?.server;
        self.heard.iter().filter(|h| h.news == News::Dead(server)).map(|h| h.at).min()
    }

    /// The failover lines of the summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let Some(kill) = self.kill else {
            if let Some(step) = self.kill_step_asked {
                let steps = self.last_step.map_or(0, |(step, _)| step);
                let _ =
                    writeln!(s, "failover: no server killed: the kill was set for step {step}, training took {steps}");
            }
            return s;
        };
        let _ = writeln!(
            s,
            "failover: server {} (rank {}) killed at step {} of worker 0, {}, replicas {}",
            kill.server.get(),
            kill.rank.0,
            kill.step,
            secs(kill.at),
            self.replicas
        );
        let server = kill.server;
        let deaths: Vec<String> = self
            .heard
            .iter()
            .filter(|h| h.news == News::Dead(server))
            .map(|h| {
                format!("{} at {} ({} after the kill)", h.observer, secs(h.at), secs(h.at.saturating_sub(kill.at)))
            })
            .collect();
        if deaths.is_empty() {
            s += "  declared dead: not heard by the end of training\n";
        } else {
            let _ = writeln!(s, "  declared dead: {}", deaths.join(", "));
        }
        if let Some((step, gap)) = self.longest_stall {
            let _ = writeln!(s, "  worker 0's longest wait for a step after the kill: {} (step {step})", secs(gap));
        }
        if let Some(at) = self.replacement_started {
            let recovered: Vec<String> = self
                .heard
                .iter()
                .filter(|h| h.news == News::Recovered(server))
                .map(|h| format!("{} at {}", h.observer, secs(h.at)))
                .collect();
            let recovered = if recovered.is_empty() { "not heard".to_owned() } else { recovered.join(", ") };
            let _ = writeln!(s, "  replacement started at {}; took the dead id: {recovered}", secs(at));
        }
        match &self.last_table {
            Some((at, chains)) => self.write_ranges(&mut s, chains, *at),
            None => s += "  copies of each range: no replica table seen\n",
        }
        s
    }

    fn write_ranges(&self, s: &mut String, chains: &Chains, at: Duration) {
        for (index, chain) in chains.as_slice().iter().enumerate() {
            let seen = self.ranges.get(index).cloned().unwrap_or_default();
            let members: Vec<u32> = chain.members().iter().map(|r| r.0).collect();
            let learner = chain.learner().map_or(String::new(), |r| format!(", learner {}", r.0));
            let state = if chain.is_lost() { "lost".to_owned() } else { format!("members {members:?}{learner}") };
            let copies = match (seen.short_at, seen.whole_at) {
                (None, _) => format!("kept {} copies", self.replicas),
                (Some(short), Some(whole)) => {
                    format!(
                        "down from {} at {}, back to {} at {}",
                        self.replicas,
                        secs(short),
                        self.replicas,
                        secs(whole)
                    )
                }
                (Some(short), None) => format!("down from {} at {}, not back yet", self.replicas, secs(short)),
            };
            let _ = writeln!(s, "  range {index}: {copies}; table at {}: {state}", secs(at));
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use pslite_core::{Chains, KeyRange, Members, RangeChain, ServerRanges};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn table(parts: &[(&[u32], Option<u32>)]) -> Chains {
        let ranges = ServerRanges::equal(parts.len() as u32);
        let chains = parts
            .iter()
            .zip(ranges.as_slice())
            .map(|(&(members, learner), &range): (_, &KeyRange)| {
                let members: Members = members.iter().map(|&r| Rank(r)).collect();
                RangeChain::new(range, members, learner.map(Rank), 1)
            })
            .collect();
        Chains::from_parts(2, chains).unwrap()
    }

    fn killed_log() -> FailoverLog {
        let mut log = FailoverLog::new(2);
        log.kill_planned(10);
        log.step(9, ms(90));
        log.killed(Kill { server: NodeId::server(Rank(0)), rank: Rank(0), step: 10, at: ms(100) });
        log.step(10, ms(100));
        log
    }

    #[test]
    fn a_kill_that_never_came_is_said_so() {
        let mut log = FailoverLog::new(2);
        log.kill_planned(500);
        log.step(300, ms(1000));
        assert_eq!(log.summary(), "failover: no server killed: the kill was set for step 500, training took 300\n");
        assert_eq!(FailoverLog::new(1).summary(), "", "nothing planned, nothing said");
    }

    #[test]
    fn the_stall_is_the_longest_gap_between_steps_after_the_kill() {
        let mut log = FailoverLog::new(2);
        log.step(1, ms(0));
        log.step(2, ms(3000)); // before the kill: not counted
        log.killed(Kill { server: NodeId::server(Rank(1)), rank: Rank(1), step: 2, at: ms(3000) });
        log.step(3, ms(3010));
        log.step(4, ms(8010));
        log.step(5, ms(8020));
        assert!(log.summary().contains("after the kill: 5.00 s (step 4)"), "{}", log.summary());
    }

    #[test]
    fn death_is_dated_by_the_first_node_to_hear_it_and_only_for_the_killed_server() {
        let mut log = killed_log();
        let server = NodeId::server(Rank(0));
        log.heard("worker 0", News::Dead(NodeId::server(Rank(1))), ms(200));
        log.heard("worker 0", News::Dead(server), ms(5200));
        log.heard("scheduler", News::Dead(server), ms(5100));
        assert_eq!(log.death_declared(), Some(ms(5100)));
        let summary = log.summary();
        assert!(summary.contains("declared dead: worker 0 at 5.20 s (5.10 s after the kill), scheduler at 5.10 s"));
        assert!(summary.contains("copies of each range: no replica table seen"), "{summary}");
    }

    #[test]
    fn ranges_are_back_when_a_table_shows_r_members_again() {
        let mut log = killed_log();
        log.table(&table(&[(&[0, 1], None), (&[1, 0], None)]), ms(50)); // before the kill
        log.table(&table(&[(&[0, 1], None), (&[1, 0], None)]), ms(150)); // not yet declared
        log.table(&table(&[(&[1], None), (&[1], None)]), ms(5100));
        log.table(&table(&[(&[1], Some(0)), (&[1], Some(0))]), ms(5300));
        log.table(&table(&[(&[1, 0], None), (&[1], Some(0))]), ms(6000));
        let summary = log.summary();
        assert!(
            summary.contains("range 0: down from 2 at 5.10 s, back to 2 at 6.00 s; table at 6.00 s: members [1, 0]")
        );
        assert!(
            summary.contains("range 1: down from 2 at 5.10 s, not back yet; table at 6.00 s: members [1], learner 0")
        );
    }

    #[test]
    fn a_range_never_short_kept_its_copies_and_a_lost_one_says_lost() {
        let mut log = killed_log();
        log.table(&table(&[(&[], None), (&[1, 2], None), (&[2, 1], None)]), ms(5000));
        let summary = log.summary();
        assert!(summary.contains("range 0: down from 2 at 5.00 s, not back yet; table at 5.00 s: lost"), "{summary}");
        assert!(summary.contains("range 1: kept 2 copies"), "{summary}");
    }
}
