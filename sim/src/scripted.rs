//! Scripted faults and hands on the nodes, for scenario tests: the control
//! TigerBeetle's scenario tests have over the same `Cluster` its VOPR
//! runs, here over the same [`Sim`] the swarm runs.
//!
//! The injector's fault actions (crash, restart, pause, partition, clog,
//! reset) are public already; this adds what a test needs to stage a
//! moment exactly: starting processes in an order of its choosing, cutting
//! one node off, taking chosen frames off the wire, turning random loss and
//! duplication on, putting frames of its own on the wire, running a command
//! on a node by hand, answering requests by hand, and changing what a
//! server's store holds behind its node's back.
//!
//! None of it draws randomness or schedules anything unless called, so a
//! run that calls none of it is the run its seed always stood for.
//!
//! Hand commands and made-up frames are outside the checker's model. From
//! the first one on, the simulator holds to the model only what the
//! checker was told about (requests issued with [`Sim::issue`], barriers
//! entered with [`Sim::enter_barrier`], the finalize of the liveness
//! phase), and once frames were injected it no longer compares tables
//! (they may be the test's forgeries). Dropping frames or turning loss on
//! stops the crash bounds from being checked, as for plans that lose
//! frames: a death's announcement may be among the frames lost.

use bytes::Bytes;
use pslite_core::{Config, Duration, Instant, KvStore, Node, Role};

use crate::checker::StoreId;
use crate::queue::{Delivery, SimEvent, Slot};
use crate::sim::{deliver_what, header_of, Sim};
use crate::trace::{Dropped, What};

impl Sim {
    /// Slots in the cluster: the scheduler, the servers, then the workers.
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// The role of `slot`.
    pub fn role(&self, slot: Slot) -> Role {
        self.nodes[slot].role
    }

    /// The configuration every process of `slot` runs with.
    pub fn config(&self, slot: Slot) -> &Config {
        &self.nodes[slot].config
    }

    /// Starts the first process of `slot` now. With `Setup::autostart`
    /// off, nothing runs until a test starts it, so it can choose the
    /// order and the moments (a node started before the scheduler loses
    /// its first registration, say).
    pub fn start(&mut self, slot: Slot) {
        assert!(self.nodes[slot].process.is_none(), "slot {slot} already runs a process");
        self.start_process(slot);
    }

    /// Runs `command` on the node in `slot`, handing it the node's current
    /// time, then handles what the node sent and reported, as after any
    /// event. This is how a test issues what the scripts do not (a barrier
    /// over any group, variable-length values, a finalize, a command that
    /// must be refused) or reads what the node keeps to itself.
    ///
    /// # Panics
    ///
    /// When `slot` runs no process.
    pub fn with_node<T>(&mut self, slot: Slot, command: impl FnOnce(&mut Node, Instant) -> T) -> T {
        let now = self.node_now(slot);
        self.hand_driven = true;
        let process = self.nodes[slot].process.as_mut().unwrap_or_else(|| panic!("slot {slot} runs no process"));
        let out = command(&mut process.node, now);
        // Frames the command handed the node came from the test, not the wire.
        self.wire.resync_in((slot, process.life), process.node.stats());
        self.record(Some(slot), What::ByHand, None);
        self.drain(slot);
        out
    }

    /// Whether the node in `slot` answers the KV and SimpleApp requests it
    /// gets by itself (the default). Off, they stay in
    /// [`events_of`](Self::events_of) for the test to answer with
    /// [`with_node`](Self::with_node) (`respond`, `simple_respond`) when
    /// and how it likes.
    pub fn serve(&mut self, slot: Slot, on: bool) {
        self.nodes[slot].serving = on;
    }

    /// Answers `request`, which the server in `slot` surfaced while it
    /// did not serve (see [`serve`](Self::serve)), the way it would have
    /// by itself: its store applies it and the answer goes back.
    pub fn answer(&mut self, slot: Slot, request: pslite_core::ServerRequest) {
        self.answer_kv(slot, request, true);
    }

    /// Frames on the wire now, earliest arrival first. Frames held for a
    /// paused node are not on the wire.
    pub fn frames_in_flight(&self) -> impl Iterator<Item = &Delivery> + '_ {
        self.queue.iter().filter_map(|(_, event)| match event {
            SimEvent::Deliver(delivery) => Some(delivery),
            _ => None,
        })
    }

    /// Takes every frame on the wire for which `lost` holds off it, as the
    /// network would lose it; returns how many.
    pub fn drop_frames(&mut self, mut lost: impl FnMut(&Delivery) -> bool) -> usize {
        let removed = self.queue.remove_where(|event| matches!(event, SimEvent::Deliver(d) if lost(d)));
        if !removed.is_empty() {
            self.checker.frames_lost();
        }
        for (_, event) in &removed {
            if let SimEvent::Deliver(delivery) = event {
                self.record(Some(delivery.to), deliver_what(delivery, Some(Dropped::ByHand)), None);
            }
        }
        removed.len()
    }

    /// From now on, loses each frame sent with probability `loss` and
    /// delivers it twice with probability `duplication`, on every link.
    /// Delays stay as they were: the network draws both chances for every
    /// frame whatever the probabilities.
    pub fn set_frame_faults(&mut self, loss: f64, duplication: f64) {
        if loss > 0.0 {
            self.checker.frames_lost();
        }
        self.net.set_frame_faults(loss, duplication);
    }

    /// Puts `bytes` on the wire from `from` to the process now running in
    /// `to`, through the network like any frame (its delays, cuts and
    /// losses apply): a captured frame replayed late, or one a test made,
    /// well-formed or not, honest or lying about its sender.
    pub fn inject_frame(&mut self, from: Slot, to: Slot, bytes: Bytes) {
        self.hand_driven = true;
        self.forged = true;
        self.checker.frames_forged();
        self.record(Some(from), What::Injected { to, header: header_of(&bytes) }, None);
        self.send_frame(from, to, bytes);
    }

    /// Cuts `slot` off from every other slot, both ways, for `duration`;
    /// returns the partition's number, for [`heal`](Self::heal) to end it
    /// sooner.
    pub fn isolate(&mut self, slot: Slot, duration: Duration) -> u64 {
        let links = (0..self.nodes.len()).filter(|&other| other != slot).flat_map(|o| [(slot, o), (o, slot)]).collect();
        self.partition(links, duration, format!("slot {slot} isolated"))
    }

    /// The store of application `app` in the server process running in
    /// `slot`, once it applied a push of that application.
    pub fn store(&self, slot: Slot, app: u32) -> Option<&KvStore<f32>> {
        self.nodes[slot].process.as_ref()?.stores.get(&app)
    }

    /// Runs `edit` on the store of application `app` in the server process
    /// running in `slot` (once it has one), as a flipped bit in a server's
    /// memory would change it: the node is not told. What the store holds
    /// is then the test's, so the checker no longer compares its contents
    /// with the pushes it applied (pulls it serves are still held to
    /// them); the settled cluster's comparison of the copies' bytes still
    /// covers it, which is what such an edit is for.
    pub fn with_store<T>(&mut self, slot: Slot, app: u32, edit: impl FnOnce(&mut KvStore<f32>) -> T) -> Option<T> {
        let process = self.nodes[slot].process.as_mut()?;
        let store_id = StoreId { slot, life: process.life };
        let out = edit(process.stores.get_mut(&app)?);
        self.stores_unmodelled.insert(store_id);
        self.record(Some(slot), What::ByHand, None);
        Some(out)
    }
}
