//! The simulated network: a sans-IO component of its own.
//!
//! Every directed link between two slots has a delay (a minimum, a uniform
//! part and a rare tail), may lose or duplicate frames, may be clogged
//! (frames wait until the clog ends) or cut by a partition (frames are
//! lost), and carries a connection number that a reset bumps, so frames in
//! flight on the old connection are lost on arrival. Without reordering a
//! link is FIFO, as one TCP connection is; with it, every frame's delay is
//! independent. All randomness comes from the network's own stream, so
//! other subsystems drawing more or fewer numbers do not change it.

use std::collections::BTreeMap;

use pslite_core::{Duration, Instant, Rng};

use crate::faults::FaultPlan;
use crate::queue::Slot;
use crate::trace::Dropped;

/// Most partitions active at once (scenario tests may stack a few).
const PARTITIONS_MAX: usize = 64;

#[derive(Clone, Debug, Default)]
struct Link {
    /// Partitions cutting this link.
    cuts: u32,
    clogged_until: Instant,
    epoch: u64,
    /// Latest delivery scheduled, to keep the link FIFO.
    last_delivery: Instant,
}

/// When a sent frame arrives (and when its duplicate does, if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Delivery time.
    pub at: Instant,
    /// Delivery time of a network-made copy.
    pub duplicate_at: Option<Instant>,
    /// The link's connection number, checked again on arrival.
    pub link_epoch: u64,
}

/// Links between `slots` nodes and their faults.
#[derive(Debug)]
pub struct Network {
    slots: usize,
    rng: Rng,
    delay_min: Duration,
    delay_random_max: Duration,
    delay_tail_probability: f64,
    delay_tail_max: Duration,
    loss_probability: f64,
    duplicate_probability: f64,
    reorder: bool,
    links: Vec<Link>,
    partitions: BTreeMap<u64, Vec<(Slot, Slot)>>,
    partition_next: u64,
}

impl Network {
    /// A network of `slots` nodes with the delays and frame faults of `plan`.
    pub fn new(slots: usize, seed: u64, plan: &FaultPlan) -> Self {
        assert!(slots > 0 && slots <= 64, "1..=64 slots, got {slots}");
        Self {
            slots,
            rng: Rng::new(seed),
            delay_min: plan.delay_min,
            delay_random_max: plan.delay_random_max,
            delay_tail_probability: plan.delay_tail_probability,
            delay_tail_max: plan.delay_tail_max,
            loss_probability: plan.loss_probability,
            duplicate_probability: plan.duplicate_probability,
            reorder: plan.reorder(),
            links: vec![Link::default(); slots * slots],
            partitions: BTreeMap::new(),
            partition_next: 0,
        }
    }

    /// A frame leaves `from` for `to` at `now`: when does it arrive, or why
    /// is it lost?
    pub fn send(&mut self, now: Instant, from: Slot, to: Slot) -> Result<Arrival, Dropped> {
        let index = self.index(from, to);
        if self.links[index].cuts > 0 {
            return Err(Dropped::Partitioned);
        }
        // Both chances are drawn whatever the probabilities, so that
        // switching loss or duplication off leaves every delay as it was.
        let lost = self.rng.chance(self.loss_probability);
        let duplicated = self.rng.chance(self.duplicate_probability);
        if lost {
            return Err(Dropped::Lost);
        }
        let at = self.arrival_time(now, index);
        let duplicate_at = duplicated.then(|| self.arrival_time(now, index));
        Ok(Arrival { at, duplicate_at, link_epoch: self.links[index].epoch })
    }

    /// Whether a frame sent on connection `link_epoch` may still arrive now.
    pub fn arrival_check(&self, from: Slot, to: Slot, link_epoch: u64) -> Result<(), Dropped> {
        let link = &self.links[self.index(from, to)];
        if link.cuts > 0 {
            return Err(Dropped::Partitioned);
        }
        if link.epoch != link_epoch {
            return Err(Dropped::Reset);
        }
        Ok(())
    }

    /// Frames sent on `from → to` before `until` wait until then.
    pub fn clog(&mut self, from: Slot, to: Slot, until: Instant) {
        let index = self.index(from, to);
        let link = &mut self.links[index];
        link.clogged_until = link.clogged_until.max(until);
    }

    /// Resets the connection between `a` and `b`: what is in flight either
    /// way is lost.
    pub fn reset(&mut self, a: Slot, b: Slot) {
        let ab = self.index(a, b);
        let ba = self.index(b, a);
        self.links[ab].epoch += 1;
        self.links[ba].epoch += 1;
    }

    /// Cuts the directed `links`; returns the partition's number for
    /// [`heal`](Self::heal).
    pub fn partition(&mut self, links: Vec<(Slot, Slot)>) -> u64 {
        assert!(self.partitions.len() < PARTITIONS_MAX, "more than {PARTITIONS_MAX} partitions at once");
        for &(from, to) in &links {
            let index = self.index(from, to);
            self.links[index].cuts += 1;
        }
        let id = self.partition_next;
        self.partition_next += 1;
        self.partitions.insert(id, links);
        id
    }

    /// Ends partition `id` (no-op when already healed).
    pub fn heal(&mut self, id: u64) {
        let Some(links) = self.partitions.remove(&id) else {
            return;
        };
        for (from, to) in links {
            let index = self.index(from, to);
            self.links[index].cuts -= 1;
        }
    }

    /// Ends every partition and clog and stops losing or duplicating
    /// frames: the network of the liveness phase. Frames already on their
    /// way keep their arrival times.
    pub fn heal_all(&mut self, now: Instant) {
        let ids: Vec<u64> = self.partitions.keys().copied().collect();
        for id in ids {
            self.heal(id);
        }
        for link in &mut self.links {
            link.clogged_until = link.clogged_until.min(now);
        }
        self.loss_probability = 0.0;
        self.duplicate_probability = 0.0;
    }

    /// From now on, loses each frame with probability `loss` and
    /// duplicates it with probability `duplication` (scenario tests turn
    /// these on and off mid-run). Delays do not change: [`send`](Self::send)
    /// draws both chances whatever the probabilities.
    pub fn set_frame_faults(&mut self, loss: f64, duplication: f64) {
        assert!((0.0..=1.0).contains(&loss) && (0.0..=1.0).contains(&duplication), "probabilities");
        self.loss_probability = loss;
        self.duplicate_probability = duplication;
    }

    /// Whether partition `id` still cuts its links.
    pub fn partition_active(&self, id: u64) -> bool {
        self.partitions.contains_key(&id)
    }

    /// Partitions active now.
    pub fn partitions_active(&self) -> usize {
        self.partitions.len()
    }

    /// Whether `from → to` is cut.
    pub fn is_cut(&self, from: Slot, to: Slot) -> bool {
        self.links[self.index(from, to)].cuts > 0
    }

    /// Draws from the network's stream (for choosing links to fault).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    fn index(&self, from: Slot, to: Slot) -> usize {
        assert!(from < self.slots && to < self.slots, "link {from} -> {to} outside {} slots", self.slots);
        from * self.slots + to
    }

    fn arrival_time(&mut self, now: Instant, index: usize) -> Instant {
        let mut delay = self.delay_min + self.rng.jitter(self.delay_random_max);
        if self.delay_tail_probability > 0.0 && self.rng.chance(self.delay_tail_probability) {
            delay += self.rng.jitter(self.delay_tail_max);
        }
        let link = &mut self.links[index];
        let mut at = now.max(link.clogged_until) + delay;
        if !self.reorder {
            at = at.max(link.last_delivery);
        }
        link.last_delivery = link.last_delivery.max(at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(reorder: bool) -> FaultPlan {
        let mut plan = FaultPlan::calm();
        plan.delay_random_max = Duration::from_millis(10);
        if reorder {
            plan.classes = plan.classes.with(crate::faults::FaultClass::Reorder);
        }
        plan
    }

    #[test]
    fn without_reordering_a_link_is_fifo() {
        let mut net = Network::new(2, 7, &plan(false));
        let mut last = Instant::ZERO;
        for i in 0..200 {
            let at = net.send(Instant::from_nanos(i * 1000), 0, 1).unwrap().at;
            assert!(at >= last);
            last = at;
        }
    }

    #[test]
    fn with_reordering_frames_overtake() {
        let mut net = Network::new(2, 7, &plan(true));
        let times: Vec<Instant> = (0..200).map(|i| net.send(Instant::from_nanos(i * 1000), 0, 1).unwrap().at).collect();
        assert!(times.windows(2).any(|w| w[1] < w[0]));
    }

    #[test]
    fn partitions_cut_clogs_hold_and_resets_drop_in_flight() {
        let mut net = Network::new(3, 1, &plan(false));
        let now = Instant::ZERO;
        let id = net.partition(vec![(0, 1)]);
        assert_eq!(net.send(now, 0, 1), Err(Dropped::Partitioned));
        assert!(net.send(now, 1, 0).is_ok(), "a one-way cut leaves the other direction");
        net.heal(id);
        let before = net.send(now, 0, 1).unwrap();
        net.reset(1, 0);
        assert_eq!(net.arrival_check(0, 1, before.link_epoch), Err(Dropped::Reset));
        let until = Instant::ZERO + Duration::from_secs(3);
        net.clog(0, 2, until);
        assert!(net.send(now, 0, 2).unwrap().at > until);
        assert!(net.send(now, 2, 0).unwrap().at < until);
    }
}
