//! Well-formed but hostile frames from members of the cluster: whatever a
//! buggy or malicious peer sends, a node must not panic.
//!
//! The codec's own tests feed garbage to the decoder; this goes one step
//! further and delivers every kind of message, with any content, to
//! running nodes that have requests in flight, so the protocol handlers
//! meet answers to nothing, answers that do not fit, tables that lie and
//! requests for keys the server does not own.

use std::net::SocketAddr;

use proptest::collection::vec;
use proptest::prelude::*;
use pslite_core::wire::message::Envelope;
use pslite_core::wire::{
    BarrierOutcome, BatchPush, KvOp, KvRequestMsg, KvResponseMsg, KvRoute, Message, NodeEntry, NodeTableMsg,
    RegisterMsg, ReplicateMsg, SimpleMsg,
};
use pslite_core::{Chains, CustomerId, DType, Group, Incarnation, Keys, Lens, NodeId, Role, Values};

use super::*;

/// An id a registered node can have, mostly ones of this cluster.
fn member_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        Just(NodeId::SCHEDULER),
        (8u32..14).prop_map(|raw| NodeId::from_raw(raw).expect("8 and up are ids")),
        (8u32..).prop_map(|raw| NodeId::from_raw(raw).expect("8 and up are ids")),
    ]
}

/// Addresses of this cluster's slots, and anywhere else.
fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (0u8..4).prop_map(|low| SocketAddr::from(([10, 0, 0, low + 1], 7000))),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(SocketAddr::from),
    ]
}

/// Numbers near the ones in use (epochs, generations, sequence numbers),
/// or anything.
fn small_or_any() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, any::<u64>()]
}

fn group() -> impl Strategy<Value = Group> {
    (1u8..=7).prop_map(|bits| Group::from_bits(bits).expect("1..=7 are groups"))
}

fn values() -> impl Strategy<Value = Values> {
    let dtype = prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::I32), Just(DType::I64), Just(DType::U8)];
    (dtype, vec(any::<u8>(), 0..48)).prop_map(|(dtype, mut raw)| {
        raw.truncate(raw.len() / dtype.size() * dtype.size());
        Values::from_bytes(dtype, Bytes::from(raw)).expect("whole elements")
    })
}

/// Keys, sorted or not, with optional lengths that may not add up.
fn keys_and_lens() -> impl Strategy<Value = (Keys, Option<Lens>)> {
    vec(any::<u64>(), 0..12).prop_flat_map(|keys| {
        let n = keys.len();
        let lens = proptest::option::of(vec(any::<u32>(), n).prop_map(|l| Lens::from_slice(&l)));
        (Just(Keys::from_slice(&keys)), lens)
    })
}

/// Request-shaped ids pulled into a small range, so hostile answers hit
/// requests that are really pending.
fn ids() -> impl Strategy<Value = (u32, u32, u32)> {
    (0u32..2, 0u32..2, 0u32..4)
}

fn simple() -> impl Strategy<Value = SimpleMsg> {
    (ids(), any::<i32>(), vec(any::<u8>(), 0..32)).prop_map(|((app, customer, ts), head, body)| SimpleMsg {
        app,
        customer,
        ts,
        head,
        body: Bytes::from(body),
    })
}

/// Any message a member could send.
fn message() -> impl Strategy<Value = Message> {
    let role = prop_oneof![Just(Role::Scheduler), Just(Role::Server), Just(Role::Worker)];
    let entry = (member_id(), prop_oneof![0u32..3, any::<u32>()], socket_addr(), any::<u64>(), any::<bool>()).prop_map(
        |(id, incarnation, addr, instance, alive)| NodeEntry {
            id,
            incarnation: Incarnation(incarnation),
            addr,
            instance,
            alive,
        },
    );
    let op = prop_oneof![Just(KvOp::Push), Just(KvOp::Pull), Just(KvOp::PushPull)];
    // Parts, epochs and floors near what a cluster uses, or anything.
    let route = (prop_oneof![0u32..4, any::<u32>()], small_or_any(), prop_oneof![0u32..4, any::<u32>()])
        .prop_map(|(part, epoch, floor)| KvRoute { part, epoch, floor });
    let kv_request = (ids(), any::<i32>(), op, keys_and_lens(), values(), route).prop_map(
        |((app, customer, ts), cmd, op, (keys, lens), values, route)| {
            Message::KvRequest(KvRequestMsg { app, customer, ts, cmd, op, keys, values, lens, route })
        },
    );
    let redirect = proptest::option::of(small_or_any().prop_map(|epoch| epoch.max(1)));
    let kv_response = (ids(), proptest::option::of(".{0,16}"), keys_and_lens(), values(), 0u32..4, redirect).prop_map(
        |((app, customer, ts), error, (keys, lens), values, part, redirect)| {
            // A refusal carries its reason where the values would be, and
            // redirects nothing.
            let values = if error.is_some() { Values::empty(DType::U8) } else { values };
            let redirect = redirect.filter(|_| error.is_none());
            Message::KvResponse(KvResponseMsg { app, customer, ts, error, keys, values, lens, part, redirect })
        },
    );
    let push = ((8u32..14).prop_filter("workers", |raw| raw % 2 == 1), 0u32..3, ids(), 0u32..4, any::<bool>())
        .prop_map(|(worker, incarnation, (app, customer, ts), floor, tail_answers)| BatchPush {
            worker: NodeId::from_raw(worker).expect("8 and up are ids"),
            incarnation: Incarnation(incarnation),
            customer: (app, customer),
            ts,
            floor,
            tail_answers,
        });
    let seq = prop_oneof![0u64..6, any::<u64>()];
    let replicate = (0u32..4, small_or_any(), seq.clone(), 0u32..2, vec(push, 0..3), keys_and_lens(), values())
        .prop_map(|(range, epoch, seq, app, pushes, (keys, lens), values)| {
            Message::Replicate(ReplicateMsg { range, epoch, seq, app, pushes, keys, values, lens })
        });
    let chain_report = (any::<bool>(), 0u32..4, seq).prop_map(|(committed, range, seq)| {
        if committed {
            Message::Committed { range, seq }
        } else {
            Message::ResendFrom { range, seq }
        }
    });
    prop_oneof![
        (role, socket_addr(), any::<u64>()).prop_map(|(role, listen_addr, instance)| Message::Register(RegisterMsg {
            role,
            listen_addr,
            instance
        })),
        (small_or_any(), vec(entry, 0..8), vec((group(), small_or_any()), 0..3)).prop_map(
            |(epoch, nodes, generations)| Message::NodeTable(NodeTableMsg {
                epoch,
                nodes,
                generations,
                chains: Chains::default()
            })
        ),
        (group(), small_or_any(), any::<bool>()).prop_map(|(group, generation, finalize)| Message::Barrier {
            group,
            generation,
            finalize
        }),
        (group(), small_or_any(), proptest::option::of(member_id()), vec(member_id(), 0..3)).prop_map(
            |(group, generation, dead, missing)| {
                let outcome = match (dead, missing.is_empty()) {
                    (Some(dead), _) => BarrierOutcome::MemberDied(dead),
                    (None, true) => BarrierOutcome::Released,
                    (None, false) => BarrierOutcome::ReleasedWithout(missing),
                };
                Message::BarrierRelease { group, generation, outcome }
            }
        ),
        Just(Message::Heartbeat { sent_at: 0 }),
        small_or_any().prop_map(|epoch| Message::HeartbeatAck { epoch, echo: 0 }),
        vec(small_or_any(), 0..16).prop_map(|seqs| Message::Ack { seqs }),
        Just(Message::Terminate),
        kv_request,
        kv_response,
        replicate,
        chain_report,
        simple().prop_map(Message::SimpleRequest),
        simple().prop_map(Message::SimpleResponse),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_message_from_a_member_panics_a_node(
        seed in 0u64..1000,
        replicas in 1u8..=2,
        frames in vec((0usize..4, 0usize..4, message()), 1..12),
    ) {
        let mut setup = setup(seed, 2, 1);
        setup.replicas = replicas;
        let mut sim = ready(setup);
        let w = sim.worker_slot(0);
        // Requests of both customers and both apps are pending when the
        // hostile frames land.
        for customer in [CustomerId::new(0, 0), CustomerId::new(1, 1)] {
            let keys = Keys::from_slice(&[1, u64::MAX]);
            sim.with_node(w, |n, now| n.pull(now, customer, 0, keys.clone(), DType::F32)).expect("pull");
            sim.with_node(w, |n, now| n.push(now, customer, 0, keys.clone(), Values::from_slice(&[1.0f32, 2.0]), None))
                .expect("push");
            sim.with_node(w, |n, now| n.simple_request(now, customer, Group::ALL, 7, Bytes::new()))
                .expect("simple request");
        }
        for (from, to, message) in frames {
            let sender = sim.node(from).expect("running").id();
            let receiver = sim.node(to).expect("running").id();
            let receiver_incarnation = sim.node(to).expect("running").incarnation();
            let envelope = Envelope { sender, incarnation: Incarnation(0), receiver, receiver_incarnation, seq: 0 };
            sim.inject_frame(from, to, message.encode(envelope).to_bytes());
        }
        sim.run_for(Duration::from_secs(8));
        prop_assert!(sim.failure().is_none(), "{:?}", sim.failure());
    }
}

/// Puts `message` on the wire from the node in `from` to the node in `to`,
/// stamped with both nodes' real ids and incarnations.
fn inject(sim: &mut Sim, from: usize, to: usize, message: &Message, seq: u64) {
    let (sender, receiver) = (sim.node(from).expect("running"), sim.node(to).expect("running"));
    let envelope = Envelope {
        sender: sender.id(),
        incarnation: sender.incarnation(),
        receiver: receiver.id(),
        receiver_incarnation: receiver.incarnation(),
        seq,
    };
    sim.inject_frame(from, to, message.encode(envelope).to_bytes());
}

fn stats(sim: &Sim, slot: usize) -> pslite_core::Stats {
    sim.node(slot).expect("running").stats().clone()
}

/// Messages only the scheduler sends (or only it receives), sent by
/// another member: each is dropped with no effect and counted where an
/// operator looks for a misbehaving peer.
#[test]
fn scheduler_messages_from_anyone_else_are_dropped_and_counted() {
    let mut sim = ready(setup(0x5c4e, 1, 2));
    let (s, w) = (sim.server_slot(0), sim.worker_slot(0));
    // The worker waits in a barrier the other worker never enters.
    let ticket = sim.with_node(w, |n, now| n.barrier(now, Group::WORKERS)).expect("barrier entered");
    drive(&mut sim);
    let epoch = sim.node(w).unwrap().membership().epoch();
    let release = Message::BarrierRelease { group: Group::WORKERS, generation: 0, outcome: BarrierOutcome::Released };
    let table = Message::NodeTable(NodeTableMsg {
        epoch: epoch + 1,
        nodes: sim.node(w).unwrap().membership().iter().copied().collect(),
        generations: Vec::new(),
        chains: sim.node(w).unwrap().membership().chains().clone(),
    });
    let to_worker = [
        release,
        Message::HeartbeatAck { epoch: epoch + 1, echo: 0 },
        Message::Terminate,
        table,
        Message::Heartbeat { sent_at: 0 },
    ];
    for message in &to_worker {
        let before = stats(&sim, w).unexpected_drops;
        inject(&mut sim, s, w, message, 0);
        drive(&mut sim);
        assert_eq!(stats(&sim, w).unexpected_drops, before + 1, "{message:?} from a server");
    }
    let node = sim.node(w).unwrap();
    assert_eq!(node.phase(), pslite_core::Phase::Ready, "still running");
    assert_eq!(node.membership().epoch(), epoch, "the table is the scheduler's");
    assert!(barrier_end(&sim, w, ticket).is_none(), "still in the barrier");
    assert_eq!(sim.node(w).unwrap().barriers_pending(), 1);
    // A barrier arrival is counted by the scheduler only.
    let before = stats(&sim, s).unexpected_drops;
    inject(&mut sim, w, s, &Message::Barrier { group: Group::WORKERS, generation: 0, finalize: false }, 0);
    drive(&mut sim);
    assert_eq!(stats(&sim, s).unexpected_drops, before + 1);
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

/// Requests a server cannot take: a KV request from no member (the
/// scheduler sends none), pulls that carry values or lengths, and
/// SimpleApp requests beyond `requests_pending_max`.
#[test]
fn requests_a_server_cannot_take_are_refused_or_dropped_and_counted() {
    let mut setup = setup(0x5e2f, 1, 2);
    setup.configure = Some(|mut b: pslite_core::ConfigBuilder| {
        b.requests_pending_max = 1;
        b
    });
    let mut sim = ready(setup);
    let (s, w) = (sim.server_slot(0), sim.worker_slot(0));
    let served = |sim: &Sim| count(sim, s, |e| matches!(e, Event::ServerRequest(_)));
    let pull = |values: Values, lens: Option<Lens>| {
        Message::KvRequest(KvRequestMsg {
            app: 0,
            customer: 0,
            ts: 77,
            cmd: 0,
            op: KvOp::Pull,
            keys: Keys::from_slice(&[1]),
            values,
            lens,
            route: Default::default(),
        })
    };
    let before = stats(&sim, s).unknown_sender_drops;
    inject(&mut sim, SCHEDULER, s, &pull(Values::empty(DType::F32), None), 0);
    drive(&mut sim);
    assert_eq!(stats(&sim, s).unknown_sender_drops, before + 1, "no member sent it");
    // A pull with values, or with lengths, is refused: the worker hears
    // the refusal (of a request it does not have, so it counts it).
    for bad in
        [pull(Values::from_slice(&[1.0f32]), None), pull(Values::empty(DType::F32), Some(Lens::from_slice(&[1])))]
    {
        let refusals = stats(&sim, w).unexpected_drops;
        inject(&mut sim, w, s, &bad, 0);
        drive(&mut sim);
        assert_eq!(stats(&sim, w).unexpected_drops, refusals + 1, "{bad:?} answered with a refusal");
    }
    assert_eq!(served(&sim), 0, "none of them reached the handle");
    // One SimpleApp request may wait for its answer; the next is dropped.
    sim.serve(s, false);
    let server = NodeId::server(pslite_core::Rank(0));
    let dropped = stats(&sim, s).unexpected_drops;
    for w in [sim.worker_slot(0), sim.worker_slot(1)] {
        sim.with_node(w, |n, now| n.simple_request(now, CustomerId::new(1, 0), server, 1, Bytes::new())).expect("sent");
        drive(&mut sim);
    }
    assert_eq!(count(&sim, s, |e| matches!(e, Event::SimpleRequest(_))), 1);
    assert_eq!(stats(&sim, s).unexpected_drops, dropped + 1);
    assert_eq!(sim.node(s).unwrap().responses_pending(), 1, "the one waiting for its answer");
}

/// A frame numbered beyond the duplicate filter's window is neither
/// delivered nor acknowledged (its sender resends it once the window has
/// moved on), and it is counted.
#[test]
fn a_frame_too_far_ahead_of_the_duplicate_window_is_dropped_unacknowledged() {
    let mut setup = setup(0xfa2, 1, 1);
    setup.configure = Some(|mut b: pslite_core::ConfigBuilder| {
        b.heartbeats = false;
        b
    });
    let mut sim = ready(setup);
    let (s, w) = (sim.server_slot(0), sim.worker_slot(0));
    let push = Message::KvRequest(KvRequestMsg {
        app: 0,
        customer: 0,
        ts: 5,
        cmd: 0,
        op: KvOp::Push,
        keys: Keys::from_slice(&[1]),
        values: Values::from_slice(&[1.0f32]),
        lens: None,
        route: Default::default(),
    });
    let before = stats(&sim, s);
    inject(&mut sim, w, s, &push, 1 << 20);
    drive(&mut sim);
    let after = stats(&sim, s);
    assert_eq!(after.duplicates_dropped, before.duplicates_dropped + 1);
    assert_eq!(after.frames_out, before.frames_out, "no ACK");
    assert_eq!(count(&sim, s, |e| matches!(e, Event::ServerRequest(_))), 0, "not delivered");
}

/// The counter a frame is expected to move.
type Counter = fn(&pslite_core::Stats) -> u64;

/// Every drop counter, by name: the sum a case must leave as it was apart
/// from its own counter.
const DROP_COUNTERS: [(&str, Counter); 9] = [
    ("decode_errors", |s| s.decode_errors),
    ("stale_incarnation_drops", |s| s.stale_incarnation_drops),
    ("unknown_sender_drops", |s| s.unknown_sender_drops),
    ("dead_sender_drops", |s| s.dead_sender_drops),
    ("misrouted_drops", |s| s.misrouted_drops),
    ("stale_receiver_drops", |s| s.stale_receiver_drops),
    ("unexpected_drops", |s| s.unexpected_drops),
    ("resends", |s| s.resends),
    ("duplicates_dropped", |s| s.duplicates_dropped),
];

/// A frame nobody honest sends, where it lands, and the one counter it
/// must move there.
struct Case {
    name: &'static str,
    from: usize,
    to: usize,
    /// Changes to the envelope the real ids and incarnations give.
    envelope: fn(&mut Envelope),
    message: Message,
    counter: &'static str,
}

/// Each frame a node cannot take is dropped with no effect and counted by
/// exactly one counter, the one that names why: operators read these
/// counters to find a misconfigured or misbehaving peer.
#[test]
fn every_frame_a_node_cannot_take_is_counted_once_under_its_reason() {
    let mut setup = setup(0xc0de, 2, 2);
    setup.configure = Some(|mut b: pslite_core::ConfigBuilder| {
        b.heartbeats = false;
        b
    });
    let mut sim = ready(setup);
    let (s0, s1, w) = (sim.server_slot(0), sim.server_slot(1), sim.worker_slot(0));
    // The worker waits on server 0 for a KV and a SimpleApp request.
    sim.serve(s0, false);
    let keys = Keys::from_slice(&[1]);
    let kv_ts = sim.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, keys, DType::F32)).expect("pull");
    let simple = CustomerId::new(1, 0);
    let server0 = NodeId::server(pslite_core::Rank(0));
    let simple_ts =
        sim.with_node(w, |n, now| n.simple_request(now, simple, server0, 1, Bytes::new())).expect("simple request");
    drive(&mut sim);
    let w_addr = sim.config(w).listen_addr;
    let answer = |ts: u32, customer: u32| {
        Message::KvResponse(KvResponseMsg {
            app: 0,
            customer,
            ts,
            error: None,
            keys: Keys::default(),
            values: Values::from_slice(&[1.0f32]),
            lens: None,
            part: 0,
            redirect: None,
        })
    };
    let reply =
        |app: u32, ts: u32| Message::SimpleResponse(SimpleMsg { app, customer: 0, ts, head: 0, body: Bytes::new() });
    let register = |role| Message::Register(RegisterMsg { role, listen_addr: w_addr, instance: 0x5eed });
    let kv_request = Message::KvRequest(KvRequestMsg {
        app: 0,
        customer: 0,
        ts: 3,
        cmd: 0,
        op: KvOp::Push,
        keys: Keys::from_slice(&[1]),
        values: Values::from_slice(&[1.0f32]),
        lens: None,
        route: Default::default(),
    });
    let unassigned = |e: &mut Envelope| {
        e.sender = NodeId::UNASSIGNED;
        e.incarnation = Incarnation(0);
    };
    let cases = vec![
        Case {
            name: "a frame for another node",
            from: w,
            to: s0,
            envelope: |e| e.receiver = NodeId::server(pslite_core::Rank(1)),
            message: Message::Heartbeat { sent_at: 0 },
            counter: "misrouted_drops",
        },
        Case {
            name: "a scheduler that is not incarnation 0",
            from: SCHEDULER,
            to: w,
            envelope: |e| e.incarnation = Incarnation(1),
            message: Message::HeartbeatAck { epoch: 0, echo: 0 },
            counter: "unexpected_drops",
        },
        Case {
            name: "a sender the table does not know",
            from: s1,
            to: w,
            envelope: |e| e.sender = NodeId::worker(pslite_core::Rank(7)),
            message: Message::Heartbeat { sent_at: 0 },
            counter: "unknown_sender_drops",
        },
        Case {
            name: "a KV request to a worker",
            from: s1,
            to: w,
            envelope: |_| {},
            message: kv_request,
            counter: "unexpected_drops",
        },
        Case {
            name: "a registration at a node that is not the scheduler",
            from: s1,
            to: w,
            envelope: |_| {},
            message: register(Role::Server),
            counter: "unexpected_drops",
        },
        Case {
            name: "a registration as a second scheduler",
            from: w,
            to: SCHEDULER,
            envelope: unassigned,
            message: register(Role::Scheduler),
            counter: "unexpected_drops",
        },
        Case {
            name: "a registration with no place left",
            from: w,
            to: SCHEDULER,
            envelope: unassigned,
            message: register(Role::Server),
            counter: "unexpected_drops",
        },
        Case {
            name: "an ACK of nothing sent",
            from: s1,
            to: w,
            envelope: |_| {},
            message: Message::Ack { seqs: vec![999] },
            counter: "duplicates_dropped",
        },
        Case {
            name: "a SimpleApp request from no node",
            from: w,
            to: s1,
            envelope: unassigned,
            message: Message::SimpleRequest(SimpleMsg { app: 1, customer: 0, ts: 1, head: 0, body: Bytes::new() }),
            counter: "unknown_sender_drops",
        },
        Case {
            name: "a heartbeat from no node",
            from: w,
            to: SCHEDULER,
            envelope: unassigned,
            message: Message::Heartbeat { sent_at: 0 },
            counter: "unexpected_drops",
        },
        Case {
            name: "an answer to no request",
            from: s0,
            to: w,
            envelope: |_| {},
            message: answer(kv_ts.0 + 50, 0),
            counter: "unexpected_drops",
        },
        Case {
            name: "an answer from a server the request does not wait on",
            from: s1,
            to: w,
            envelope: |_| {},
            message: answer(kv_ts.0, 0),
            counter: "unexpected_drops",
        },
        Case {
            name: "a SimpleApp reply to no request",
            from: s0,
            to: w,
            envelope: |_| {},
            message: reply(1, simple_ts.0 + 50),
            counter: "unexpected_drops",
        },
        Case {
            name: "a SimpleApp reply from a node the request does not wait on",
            from: s1,
            to: w,
            envelope: |_| {},
            message: reply(1, simple_ts.0),
            counter: "unexpected_drops",
        },
        Case {
            name: "a KV request again, while the first copy waits for its answer",
            from: w,
            to: s0,
            envelope: |_| {},
            message: Message::KvRequest(KvRequestMsg {
                app: 0,
                customer: 0,
                ts: kv_ts.0,
                cmd: 0,
                op: KvOp::Pull,
                keys: Keys::from_slice(&[1]),
                values: Values::empty(DType::F32),
                lens: None,
                route: Default::default(),
            }),
            counter: "duplicates_dropped",
        },
        Case {
            name: "a SimpleApp request again, while the first copy waits for its answer",
            from: w,
            to: s0,
            envelope: |_| {},
            message: Message::SimpleRequest(SimpleMsg {
                app: 1,
                customer: 0,
                ts: simple_ts.0,
                head: 1,
                body: Bytes::new(),
            }),
            counter: "duplicates_dropped",
        },
        Case {
            name: "a frame the server already took, again",
            from: w,
            to: s0,
            envelope: |e| e.seq = 1,
            message: Message::Heartbeat { sent_at: 0 },
            counter: "duplicates_dropped",
        },
        Case {
            name: "a server arriving at the workers' barrier",
            from: s1,
            to: SCHEDULER,
            envelope: |_| {},
            message: Message::Barrier { group: Group::WORKERS, generation: 0, finalize: false },
            counter: "unexpected_drops",
        },
        Case {
            name: "the end of a barrier the node is not in",
            from: SCHEDULER,
            to: w,
            envelope: |_| {},
            message: Message::BarrierRelease { group: Group::ALL, generation: 9, outcome: BarrierOutcome::Released },
            counter: "unexpected_drops",
        },
    ];
    for case in cases {
        let before = stats(&sim, case.to);
        let (sender, receiver) = (sim.node(case.from).unwrap(), sim.node(case.to).unwrap());
        let mut envelope = Envelope {
            sender: sender.id(),
            incarnation: sender.incarnation(),
            receiver: receiver.id(),
            receiver_incarnation: receiver.incarnation(),
            seq: 0,
        };
        (case.envelope)(&mut envelope);
        sim.inject_frame(case.from, case.to, case.message.encode(envelope).to_bytes());
        drive(&mut sim);
        let after = stats(&sim, case.to);
        for (name, counter) in DROP_COUNTERS {
            let expected = counter(&before) + u64::from(name == case.counter);
            assert_eq!(counter(&after), expected, "{}: {name}", case.name);
        }
    }
    // Nothing the frames said reached the requests they named.
    assert!(completion(&sim, w, CustomerId::DEFAULT, kv_ts).is_none());
    assert!(completion(&sim, w, simple, simple_ts).is_none());
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}
