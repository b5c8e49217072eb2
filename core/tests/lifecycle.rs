//! A node's life at its edges, through the public API with hand-made
//! frames: it gives up registering when no scheduler answers, and once it
//! holds an id it refuses what was meant for a former holder of that id.

use std::net::SocketAddr;

use bytes::Bytes;
use pslite_core::wire::message::Envelope;
use pslite_core::wire::{Message, NodeEntry, NodeTableMsg, SimpleMsg};
use pslite_core::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn worker_config(register_timeout: Duration) -> Config {
    let mut builder = Config::builder(Role::Worker, addr(1)).cluster(1, 1);
    builder.listen_addr = addr(3);
    builder.register_retry_interval = Duration::from_millis(500);
    builder.register_timeout = register_timeout;
    builder.build().unwrap()
}

/// The process instance the node's first registration names: the table
/// that registers it must carry it.
fn registration_instance(node: &mut Node) -> u64 {
    loop {
        let transmit = node.poll_transmit().expect("a registration");
        let frame = transmit.frame.to_bytes();
        let header = wire::Header::decode(&frame, u32::MAX).unwrap();
        if let Ok(Message::Register(register)) = Message::decode(&header, &frame) {
            return register.instance;
        }
    }
}

#[test]
fn a_node_with_no_scheduler_gives_up_at_the_register_timeout_and_says_where_it_looked() {
    let start = Instant::ZERO + Duration::from_secs(7);
    let timeout = Duration::from_secs(3);
    let mut node = Node::new(worker_config(timeout), 5, start);
    let mut registers = 0;
    let mut events = Vec::new();
    let mut now = start;
    // Nobody answers: drive the node by its own timer only.
    for _ in 0..100 {
        while node.poll_transmit().is_some() {
            registers += 1;
        }
        events.extend(std::iter::from_fn(|| node.poll_event()));
        let Some(at) = node.poll_timeout() else {
            break;
        };
        assert!(at >= now, "timers never point into the past");
        assert!(at <= start + timeout, "no retry is scheduled past the deadline");
        now = at;
        node.handle_timeout(now);
    }
    assert_eq!(now, start + timeout, "gives up exactly at the deadline");
    assert!(registers >= 5, "retried meanwhile ({registers} registrations)");
    assert_eq!(events, vec![Event::RegistrationFailed { scheduler: addr(1) }, Event::Terminated]);
    assert_eq!(node.phase(), Phase::Terminated);
    assert_eq!(node.poll_timeout(), None, "nothing is left to wait for");
    assert_eq!(node.ended_by(), None, "no request error: the event said what happened");
}

#[test]
fn a_frame_meant_for_a_former_incarnation_is_dropped_and_counted_at_its_replacement() {
    let now = Instant::ZERO;
    let mut node = Node::new(worker_config(Duration::from_secs(60)), 9, now);
    let instance = registration_instance(&mut node);
    // The scheduler gives it worker 0's id, as that id's second holder.
    let me = NodeId::worker(Rank(0));
    let entries = vec![
        NodeEntry { id: NodeId::server(Rank(0)), incarnation: Incarnation(0), addr: addr(2), instance: 1, alive: true },
        NodeEntry { id: me, incarnation: Incarnation(1), addr: addr(3), instance, alive: true },
    ];
    let table =
        NodeTableMsg { epoch: 2, nodes: entries, generations: vec![(Group::WORKERS, 3)], chains: Chains::default() };
    let from_scheduler = |receiver_incarnation: u32| Envelope {
        sender: NodeId::SCHEDULER,
        incarnation: Incarnation(0),
        receiver: me,
        receiver_incarnation: Incarnation(receiver_incarnation),
        seq: 0,
    };
    node.handle_frame(now, Message::NodeTable(table).encode(from_scheduler(1)).to_bytes()).unwrap();
    assert_eq!((node.id(), node.incarnation()), (me, Incarnation(1)));
    assert_eq!(node.next_barrier_generation(Group::WORKERS), 3, "it starts where the survivors are");
    while node.poll_event().is_some() {}
    let ask = |ts: u32| Message::SimpleRequest(SimpleMsg { app: 1, customer: 0, ts, head: 7, body: Bytes::new() });
    // Meant for the process that held the id before: not ours to answer.
    node.handle_frame(now, ask(1).encode(from_scheduler(0)).to_bytes()).unwrap();
    assert_eq!(node.stats().stale_receiver_drops, 1);
    assert_eq!(node.poll_event(), None);
    // Meant for this process: answered.
    node.handle_frame(now, ask(2).encode(from_scheduler(1)).to_bytes()).unwrap();
    assert_eq!(node.stats().stale_receiver_drops, 1);
    assert!(matches!(node.poll_event(), Some(Event::SimpleRequest(request)) if request.id.ts == Timestamp(2)));
}

/// A node table at `epoch` with `nodes` and `chains`, sent by the
/// scheduler to `receiver` (incarnation 0), as bytes a node reads.
fn from_scheduler(epoch: u64, nodes: Vec<NodeEntry>, chains: Chains, receiver: NodeId) -> Bytes {
    let envelope = Envelope {
        sender: NodeId::SCHEDULER,
        incarnation: Incarnation(0),
        receiver,
        receiver_incarnation: Incarnation(0),
        seq: 0,
    };
    Message::NodeTable(NodeTableMsg { epoch, nodes, generations: Vec::new(), chains }).encode(envelope).to_bytes()
}

/// Server 0's entry, alive or not.
fn server_zero(alive: bool) -> NodeEntry {
    NodeEntry { id: NodeId::server(Rank(0)), incarnation: Incarnation(0), addr: addr(2), instance: 1, alive }
}

/// The scheduler's node table of server 0 and `entry`, at `epoch`, sent
/// to `receiver`, as bytes a node reads.
fn table_with_one_server(epoch: u64, entry: NodeEntry, receiver: NodeId) -> Bytes {
    from_scheduler(epoch, vec![server_zero(true), entry], Chains::default(), receiver)
}

#[test]
fn a_node_that_reads_that_its_id_went_to_a_new_process_stops_with_replaced() {
    let now = Instant::ZERO;
    let mut node = Node::new(worker_config(Duration::from_secs(60)), 11, now);
    let instance = registration_instance(&mut node);
    let me = NodeId::worker(Rank(0));
    // The table that registers a node is addressed to its id; the one that
    // tells a former process it was replaced, to no id.
    let table = |epoch, entry: NodeEntry, receiver: NodeId| table_with_one_server(epoch, entry, receiver);
    let mine = NodeEntry { id: me, incarnation: Incarnation(0), addr: addr(3), instance, alive: true };
    node.handle_frame(now, table(1, mine, NodeId::UNASSIGNED)).unwrap();
    assert_eq!(node.phase(), Phase::Registering, "a table addressed to no id places nobody");
    node.handle_frame(now, table(1, mine, me)).unwrap();
    assert_eq!(node.phase(), Phase::Ready);
    let ticket = node.finalize(now).unwrap();
    while node.poll_event().is_some() {}
    // Cut off, it was declared dead and another process took its id.
    let successor = NodeEntry { incarnation: Incarnation(1), instance: instance + 2, addr: addr(4), ..mine };
    node.handle_frame(now, table(3, successor, NodeId::UNASSIGNED)).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| node.poll_event()).collect();
    let replaced = RequestError::Replaced { incarnation: Incarnation(1) };
    assert_eq!(events, vec![Event::BarrierFailed(ticket, replaced.clone()), Event::Terminated]);
    assert_eq!(node.phase(), Phase::Terminated);
    assert_eq!(node.ended_by(), Some(&replaced), "a finalize that comes later learns why");
}

#[test]
fn a_node_that_reads_it_was_declared_dead_stops_and_keeps_the_reason() {
    let now = Instant::ZERO;
    let mut node = Node::new(worker_config(Duration::from_secs(60)), 12, now);
    let instance = registration_instance(&mut node);
    let me = NodeId::worker(Rank(0));
    let table = |epoch, entry: NodeEntry| table_with_one_server(epoch, entry, me);
    let mine = NodeEntry { id: me, incarnation: Incarnation(0), addr: addr(3), instance, alive: true };
    node.handle_frame(now, table(1, mine)).unwrap();
    assert_eq!(node.phase(), Phase::Ready);
    assert_eq!(node.ended_by(), None, "running");
    while node.poll_event().is_some() {}
    // Stalled past the heartbeat timeout, it reads that it was declared dead
    // while no request or finalize was pending to carry the news.
    node.handle_frame(now, table(2, NodeEntry { alive: false, ..mine })).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| node.poll_event()).collect();
    assert_eq!(events.last(), Some(&Event::Terminated));
    assert_eq!(node.phase(), Phase::Terminated);
    assert_eq!(node.ended_by(), Some(&RequestError::PeerDead(me)));
}

#[test]
fn a_table_whose_replica_table_splits_keys_otherwise_is_refused_and_a_fitting_one_is_kept() {
    let now = Instant::ZERO;
    let mut node = Node::new(worker_config(Duration::from_secs(60)), 13, now);
    let instance = registration_instance(&mut node);
    let me = NodeId::worker(Rank(0));
    let mine = NodeEntry { id: me, incarnation: Incarnation(0), addr: addr(3), instance, alive: true };
    let send = |node: &mut Node, chains: Chains| {
        node.handle_frame(now, from_scheduler(2, vec![server_zero(true), mine], chains, me)).unwrap();
    };
    // Another cluster's split (two ranges for our one server): routing by
    // it would send keys where nobody holds them.
    send(&mut node, Chains::initial(&ServerRanges::equal(2), 1, 2));
    assert_eq!((node.phase(), node.stats().unexpected_drops), (Phase::Registering, 1));
    assert!(node.membership().chains().is_empty());
    let ours = Chains::initial(&ServerRanges::equal(1), 1, 2);
    send(&mut node, ours.clone());
    assert_eq!((node.phase(), node.id()), (Phase::Ready, me));
    assert_eq!(node.membership().chains(), &ours, "kept with the node table, at its epoch");
}

#[test]
fn a_table_without_a_replica_table_cannot_take_away_the_one_held() {
    let now = Instant::ZERO;
    let mut node = Node::new(worker_config(Duration::from_secs(60)), 17, now);
    let instance = registration_instance(&mut node);
    let me = NodeId::worker(Rank(0));
    let mine = NodeEntry { id: me, incarnation: Incarnation(0), addr: addr(3), instance, alive: true };
    let ours = Chains::initial(&ServerRanges::equal(1), 1, 2);
    node.handle_frame(now, from_scheduler(2, vec![server_zero(true), mine], ours.clone(), me)).unwrap();
    assert_eq!(node.phase(), Phase::Ready);
    node.handle_frame(now, from_scheduler(3, vec![server_zero(false), mine], Chains::default(), me)).unwrap();
    assert_eq!((node.membership().epoch(), node.stats().unexpected_drops), (2, 1), "refused whole");
    assert!(node.membership().is_alive(NodeId::server(Rank(0))));
    assert_eq!(node.membership().chains(), &ours);
}
