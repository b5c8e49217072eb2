//! What happened, for the person reading a failure: the last events in a
//! ring buffer, and a running fingerprint of the whole run.
//!
//! Entries are small plain values, formatted only when printed, so keeping
//! the trace costs little on the hot path. The fingerprint (FNV-1a over
//! time, entry kind, node and frame bytes) is what the determinism tests
//! compare: two runs of one seed must agree on it bit for bit.

use std::collections::VecDeque;
use std::fmt;

use pslite_core::wire::{Header, Kind, HEADER_LEN};
use pslite_core::{Group, Incarnation, Instant, NodeId, RequestError};

use crate::queue::Slot;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running 64-bit FNV-1a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl Fingerprint {
    /// Mixes in bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Mixes in a number.
    pub fn u64(&mut self, n: u64) {
        self.bytes(&n.to_le_bytes());
    }

    /// The hash so far.
    pub fn value(self) -> u64 {
        self.0
    }
}

/// Why a frame did not reach its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The receiving slot has no process.
    Crashed,
    /// The process it was sent to has been replaced.
    Restarted,
    /// The link's connection was reset while it was in flight.
    Reset,
    /// A partition cuts the link.
    Partitioned,
    /// Random loss.
    Lost,
    /// The receiver is paused; the frame waits for it.
    Held,
    /// A scenario test took it off the wire ([`Sim::drop_frames`]).
    ///
    /// [`Sim::drop_frames`]: crate::Sim::drop_frames
    ByHand,
    /// It was sent to an address no slot has (a forged table can name one).
    NoSuchAddress,
}

/// A short account of one node output or command.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    /// `Event::Registered`.
    Registered(NodeId, Incarnation),
    /// `Event::ClusterReady`.
    ClusterReady,
    /// A request was issued (`op` names it).
    Issued { op: &'static str, app: u32, ts: u32, keys: usize },
    /// A command was refused at once.
    Rejected { op: &'static str, error: RequestError },
    /// A request completed.
    Done { app: u32, ts: u32 },
    /// A request failed.
    Failed { app: u32, ts: u32, error: RequestError },
    /// A server request to answer.
    ServerRequest { from: NodeId, ts: u32, op: &'static str },
    /// A server answered (after `delayed` when the handle was slow).
    Answered { from: NodeId, ts: u32, delayed: bool },
    /// A SimpleApp request to answer.
    SimpleRequest { from: NodeId, ts: u32 },
    /// Barrier entered.
    BarrierEntered { group: Group, generation: u64, finalize: bool },
    /// Barrier released.
    BarrierReleased { group: Group, generation: u64, missing: Vec<NodeId> },
    /// A replacement worker took up its slot's script where the cluster's
    /// barriers are: it skips barriers finished without it, or enters
    /// again those its predecessor was in (see `WorkerRun::resume`).
    Resumed { generation: u64, skipped: u64, owed: u64 },
    /// Barrier failed.
    BarrierFailed { group: Group, generation: u64, error: RequestError },
    /// `Event::NodeDead`.
    NodeDead(NodeId, Incarnation),
    /// `Event::NodeRecovered`.
    NodeRecovered(NodeId, Incarnation),
    /// `Event::Terminated`.
    Terminated,
}

/// What one trace entry records.
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// A frame was handed to the node (or dropped on the way).
    Deliver { from: Slot, header: [u8; HEADER_LEN], len: u32, dropped: Option<Dropped>, duplicate: bool },
    /// The network dropped a frame at send time.
    SendDropped { to: Slot, header: [u8; HEADER_LEN], why: Dropped },
    /// `handle_timeout`.
    Timer,
    /// A node output or command.
    Node(Note),
    /// A process was stopped.
    Crash,
    /// A fresh process started.
    Restart,
    /// The node stops running until `until`.
    Pause { until: Instant },
    /// The node runs again.
    Resume,
    /// Links were cut (a description of which).
    Partition { id: u64, description: String },
    /// The partition ended.
    Heal { id: u64 },
    /// A link holds frames until `until`.
    Clog { to: Slot, until: Instant },
    /// A link's connection was reset.
    Reset { to: Slot },
    /// The safety phase ended; faults heal.
    Liveness,
    /// A scenario test put a frame of its own on the wire to `to`.
    Injected { to: Slot, header: [u8; HEADER_LEN] },
    /// A scenario test ran a command on the node by hand.
    ByHand,
}

impl What {
    fn tag(&self) -> u8 {
        match self {
            Self::Deliver { .. } => 1,
            Self::SendDropped { .. } => 2,
            Self::Timer => 3,
            Self::Node(_) => 4,
            Self::Crash => 5,
            Self::Restart => 6,
            Self::Pause { .. } => 7,
            Self::Resume => 8,
            Self::Partition { .. } => 9,
            Self::Heal { .. } => 10,
            Self::Clog { .. } => 11,
            Self::Reset { .. } => 12,
            Self::Liveness => 13,
            Self::Injected { .. } => 14,
            Self::ByHand => 15,
        }
    }
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Number of the simulator event during which it happened.
    pub event: u64,
    /// Virtual time.
    pub at: Instant,
    /// The node it is about (`None` for network-wide entries).
    pub slot: Option<Slot>,
    /// What happened.
    pub what: What,
}

/// The last entries and the fingerprint of all of them.
#[derive(Debug)]
pub struct Trace {
    ring: VecDeque<Entry>,
    len_max: usize,
    fingerprint: Fingerprint,
    /// Print every entry as it is recorded (`--trace`).
    print_all: bool,
    recorded: u64,
}

impl Trace {
    /// Keeps the last `len_max` entries; with `print_all`, prints each one.
    pub fn new(len_max: usize, print_all: bool) -> Self {
        assert!(len_max > 0, "a trace keeps at least one entry");
        Self {
            ring: VecDeque::with_capacity(len_max.min(4096)),
            len_max,
            fingerprint: Fingerprint::default(),
            print_all,
            recorded: 0,
        }
    }

    /// Records one entry; `frame` (the bytes of a delivered frame) goes into
    /// the fingerprint only.
    pub fn record(&mut self, entry: Entry, frame: Option<&[u8]>) {
        let fp = &mut self.fingerprint;
        fp.u64(entry.at.as_nanos());
        fp.u64(u64::from(entry.what.tag()));
        fp.u64(entry.slot.map_or(u64::MAX, |s| s as u64));
        match &entry.what {
            What::Deliver { header, dropped, .. } => {
                fp.bytes(header);
                fp.u64(dropped.map_or(0, |d| d as u64 + 1));
            }
            What::SendDropped { to, header, .. } | What::Injected { to, header } => {
                fp.u64(*to as u64);
                fp.bytes(header);
            }
            What::Node(note) => hash_note(fp, note),
            _ => {}
        }
        if let Some(frame) = frame {
            fp.bytes(frame);
        }
        if self.print_all {
            println!("{entry}");
        }
        self.recorded += 1;
        if self.ring.len() == self.len_max {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
    }

    /// The fingerprint of everything recorded so far.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint.value()
    }

    /// Entries recorded over the whole run.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// The last entries, oldest first.
    pub fn last(&self) -> impl Iterator<Item = &Entry> {
        self.ring.iter()
    }
}

/// Mixes a note into the fingerprint: the common notes field by field,
/// the rare ones (errors, identities) through their debug text.
fn hash_note(fp: &mut Fingerprint, note: &Note) {
    match note {
        Note::Issued { op, app, ts, keys } => {
            fp.bytes(op.as_bytes());
            fp.u64((u64::from(*app) << 32) | u64::from(*ts));
            fp.u64(*keys as u64);
        }
        Note::Done { app, ts } => fp.u64((1 << 63) | (u64::from(*app) << 32) | u64::from(*ts)),
        Note::ServerRequest { from, ts, op } => {
            fp.bytes(op.as_bytes());
            fp.u64((u64::from(from.get()) << 32) | u64::from(*ts));
        }
        Note::Answered { from, ts, delayed } => {
            fp.u64((u64::from(from.get()) << 32) | u64::from(*ts));
            fp.u64(u64::from(*delayed));
        }
        Note::SimpleRequest { from, ts } => fp.u64((1 << 62) | (u64::from(from.get()) << 32) | u64::from(*ts)),
        other => fp.bytes(format!("{other:?}").as_bytes()),
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8} {:?} ", self.event, self.at)?;
        match self.slot {
            Some(slot) => write!(f, "[{slot:>2}] ")?,
            None => write!(f, "[--] ")?,
        }
        match &self.what {
            What::Deliver { from, header, len, dropped, duplicate } => {
                write!(f, "<- [{from}] {} ({len} B)", describe_header(header))?;
                if *duplicate {
                    write!(f, " duplicate")?;
                }
                if let Some(why) = dropped {
                    write!(f, " dropped: {why:?}")?;
                }
                Ok(())
            }
            What::SendDropped { to, header, why } => {
                write!(f, "-> [{to}] {} dropped: {why:?}", describe_header(header))
            }
            What::Timer => write!(f, "timeout"),
            What::Node(note) => write!(f, "{note:?}"),
            What::Crash => write!(f, "CRASH"),
            What::Restart => write!(f, "RESTART"),
            What::Pause { until } => write!(f, "PAUSE until {until:?}"),
            What::Resume => write!(f, "RESUME"),
            What::Partition { id, description } => write!(f, "PARTITION #{id}: {description}"),
            What::Heal { id } => write!(f, "HEAL partition #{id}"),
            What::Clog { to, until } => write!(f, "CLOG -> [{to}] until {until:?}"),
            What::Reset { to } => write!(f, "RESET connection -> [{to}]"),
            What::Liveness => write!(f, "LIVENESS: faults heal, crashed nodes restart"),
            What::Injected { to, header } => write!(f, "-> [{to}] {} INJECTED by hand", describe_header(header)),
            What::ByHand => write!(f, "COMMAND by hand"),
        }
    }
}

fn describe_header(header: &[u8; HEADER_LEN]) -> String {
    match Header::decode(header, u32::MAX) {
        Ok(h) => format!("{} from {}@{} to {}", kind_name(h.kind), h.sender, h.incarnation.0, h.receiver),
        Err(e) => format!("undecodable header: {e}"),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Register => "Register",
        Kind::NodeTable => "NodeTable",
        Kind::Barrier => "Barrier",
        Kind::BarrierRelease => "BarrierRelease",
        Kind::Heartbeat => "Heartbeat",
        Kind::HeartbeatAck => "HeartbeatAck",
        Kind::Ack => "Ack",
        Kind::Terminate => "Terminate",
        Kind::KvRequest => "KvRequest",
        Kind::KvResponse => "KvResponse",
        Kind::SimpleRequest => "SimpleRequest",
        Kind::SimpleResponse => "SimpleResponse",
        Kind::Replicate => "Replicate",
        Kind::Committed => "Committed",
        Kind::ResendFrom => "ResendFrom",
        Kind::Transfer => "Transfer",
        Kind::Learned => "Learned",
        Kind::CaughtUp => "CaughtUp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: u64) -> Entry {
        Entry { event, at: Instant::from_nanos(event), slot: Some(1), what: What::Timer }
    }

    #[test]
    fn ring_keeps_the_last_entries() {
        let mut trace = Trace::new(3, false);
        for i in 0..5 {
            trace.record(entry(i), None);
        }
        let kept: Vec<u64> = trace.last().map(|e| e.event).collect();
        assert_eq!(kept, vec![2, 3, 4]);
        assert_eq!(trace.recorded(), 5);
    }

    #[test]
    fn fingerprint_depends_on_frame_bytes_and_order() {
        let run = |frames: &[&[u8]]| {
            let mut trace = Trace::new(8, false);
            for (i, frame) in frames.iter().enumerate() {
                trace.record(entry(i as u64), Some(frame));
            }
            trace.fingerprint()
        };
        assert_eq!(run(&[b"ab", b"c"]), run(&[b"ab", b"c"]));
        assert_ne!(run(&[b"ab", b"c"]), run(&[b"ab", b"d"]));
        assert_ne!(run(&[b"ab", b"c"]), run(&[b"c", b"ab"]));
    }
}
