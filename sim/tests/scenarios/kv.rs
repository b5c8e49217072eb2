//! The data plane: push, pull and push_pull across server ranges,
//! customers, SimpleApp, and the misuse a worker is told about.

use std::collections::{BTreeMap, BTreeSet};

use pslite_core::{
    ApiMisuse, ConfigBuilder, CustomerId, DType, Event, Group, Incarnation, Keys, Lens, NodeId, RequestError, Response,
    Role, ServerRanges, ServerRequestId, SimpleRequest, Timestamp, Values,
};
use pslite_sim::Sim;

use super::*;

/// 0, `u64::MAX`, and keys on both sides of every range boundary.
fn edge_keys(ranges: &ServerRanges) -> BTreeSet<u64> {
    let mut keys = BTreeSet::from([0, 1, u64::MAX - 1, u64::MAX]);
    for range in &ranges.as_slice()[1..] {
        let start = range.start();
        keys.extend([start - 2, start - 1, start, start + 1]);
    }
    keys
}

fn pulled(event: &Event) -> (Vec<f32>, Option<Vec<u32>>) {
    match event {
        Event::PullDone { values, lens, .. } => (values.to_vec().expect("f32 values"), lens.as_ref().map(Lens::to_vec)),
        other => panic!("expected PullDone, got {other:?}"),
    }
}

fn push_f32(sim: &mut Sim, i: usize, customer: CustomerId, keys: &[u64], values: &[f32]) -> Timestamp {
    sim.with_node(i, |n, now| n.push(now, customer, 0, Keys::from_slice(keys), Values::from_slice(values), None))
        .expect("push accepted")
}

fn pull_f32(sim: &mut Sim, i: usize, customer: CustomerId, keys: &[u64]) -> Timestamp {
    sim.with_node(i, |n, now| n.pull(now, customer, 0, Keys::from_slice(keys), DType::F32)).expect("pull accepted")
}

#[test]
fn a_push_to_both_ends_of_the_key_space_is_pulled_back() {
    let mut sim = ready(setup(1, 2, 1));
    let w = sim.worker_slot(0);
    let done = push_wait(&mut sim, w, &[0, u64::MAX], &[1.0, 2.0]);
    assert!(matches!(done, Event::RequestDone { .. }), "{done:?}");
    assert_eq!(pull_wait(&mut sim, w, &[0, 5, u64::MAX]), vec![1.0, 0.0, 2.0]);
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn a_simple_request_to_everyone_includes_the_sender() {
    let mut sim = ready(setup(3, 2, 2));
    let w = sim.worker_slot(0);
    let ts =
        sim.with_node(w, |n, now| n.simple_request(now, CustomerId::DEFAULT, Group::ALL, 1, Bytes::new())).unwrap();
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::SimpleDone { replies, .. } => assert_eq!(replies.len(), 5),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_pushes_sum_exactly_across_range_boundaries() {
    for seed in 0..10 {
        let mut sim = ready(setup(seed, 2, 3));
        let ranges = sim.node(SCHEDULER).unwrap().server_ranges().clone();
        let mut rng = Rng::new(seed);
        let mut keys = edge_keys(&ranges);
        keys.extend((0..8).map(|_| rng.next_u64()));
        let keys: Vec<u64> = keys.into_iter().collect();
        let workers: Vec<usize> = (0..3).map(|r| sim.worker_slot(r)).collect();
        let mut model: BTreeMap<u64, f32> = BTreeMap::new();
        for round in 0..6 {
            // Every worker pushes an overlapping subset at once; pushes of
            // one round race each other, which sums must not notice.
            let mut pending = Vec::new();
            for &w in &workers {
                let subset: Vec<u64> = keys.iter().copied().filter(|_| rng.chance(0.6)).collect();
                let values: Vec<f32> = subset.iter().map(|_| rng.below(201) as f32 - 100.0).collect();
                for (k, v) in subset.iter().zip(&values) {
                    *model.entry(*k).or_default() += v;
                }
                pending.push((w, push_f32(&mut sim, w, CustomerId::DEFAULT, &subset, &values)));
            }
            for (w, ts) in pending {
                let done = wait(&mut sim, w, CustomerId::DEFAULT, ts);
                assert_eq!(done, Event::RequestDone { customer: CustomerId::DEFAULT, ts }, "seed {seed}");
            }
            let expected: Vec<f32> = keys.iter().map(|k| model.get(k).copied().unwrap_or(0.0)).collect();
            for &w in &workers {
                let ts = pull_f32(&mut sim, w, CustomerId::DEFAULT, &keys);
                let (values, _) = pulled(&wait(&mut sim, w, CustomerId::DEFAULT, ts));
                assert_eq!(values, expected, "seed {seed}, round {round}, worker {w}");
            }
        }
        // Each key was summed by its owner and only there.
        for (rank, range) in ranges.as_slice().iter().enumerate() {
            let store = sim.store(sim.server_slot(rank as u32), 0).expect("every server got pushes");
            for &k in &keys {
                assert_eq!(store.get(k).is_some(), range.contains(k) && model.contains_key(&k), "key {k}");
            }
        }
        assert!(sim.failure().is_none(), "seed {seed}: {:?}", sim.failure());
    }
}

#[test]
fn variable_length_values_round_trip() {
    let mut sim = ready(setup(4, 2, 3));
    let start = sim.node(SCHEDULER).unwrap().server_ranges().as_slice()[1].start();
    let w = sim.worker_slot(0);
    // Both servers get keys of several lengths, one of them empty.
    let keys = Keys::from_slice(&[0, start - 1, start, u64::MAX]);
    let lens = [1u32, 3, 0, 2];
    let values: Vec<f32> = (1..=6).map(|v| v as f32).collect();
    for times in 1..=2 {
        let ts = sim
            .with_node(w, |n, now| {
                let lens = Some(Lens::from_slice(&lens));
                n.push(now, CustomerId::DEFAULT, 0, keys.clone(), Values::from_slice(&values), lens)
            })
            .expect("push accepted");
        assert!(matches!(wait(&mut sim, w, CustomerId::DEFAULT, ts), Event::RequestDone { .. }));
        let ts =
            sim.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, keys.clone(), DType::F32)).expect("pull");
        let expected: Vec<f32> = values.iter().map(|v| v * times as f32).collect();
        assert_eq!(pulled(&wait(&mut sim, w, CustomerId::DEFAULT, ts)), (expected, Some(lens.to_vec())));
    }
    // Lengths that differ only between servers are reported too.
    let keys = [1, 2, start + 1];
    let ts = sim
        .with_node(w, |n, now| {
            let values = Values::from_slice(&[1.0f32, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0]);
            n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(&keys), values, Some(Lens::from_slice(&[2, 2, 3])))
        })
        .expect("push accepted");
    wait(&mut sim, w, CustomerId::DEFAULT, ts);
    let ts = pull_f32(&mut sim, w, CustomerId::DEFAULT, &keys);
    assert_eq!(
        pulled(&wait(&mut sim, w, CustomerId::DEFAULT, ts)),
        (vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0], Some(vec![2, 2, 3]))
    );
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn pull_of_variable_length_values_completes() {
    // Found by node_inputs: a server answers without echoing keys, but the
    // decoder wanted one length per *present* key, so every response with
    // lengths was refused by the worker and the pull could only time out
    // (corpus: regression-response-lens-without-keys).
    let mut sim = ready(setup(7, 2, 1));
    let w = sim.worker_slot(0);
    let keys = Keys::from_slice(&[1, 2, u64::MAX]);
    let lens = Some(Lens::from_slice(&[1, 2, 3]));
    let values = Values::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ts = sim
        .with_node(w, |n, now| n.push(now, CustomerId::DEFAULT, 0, keys.clone(), values.clone(), lens.clone()))
        .expect("push accepted");
    assert!(matches!(wait(&mut sim, w, CustomerId::DEFAULT, ts), Event::RequestDone { .. }));
    let ts = sim.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, keys.clone(), DType::F32)).expect("pull");
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::PullDone { values: pulled, lens: pulled_lens, .. } => {
            assert_eq!(pulled, values);
            assert_eq!(pulled_lens, lens);
        }
        other => panic!("pull did not complete: {other:?}"),
    }
}

#[test]
fn a_push_pull_returns_the_value_after_its_own_push() {
    let mut sim = ready(setup(6, 2, 3));
    let (w, other) = (sim.worker_slot(0), sim.worker_slot(2));
    let keys = [3, u64::MAX / 2 + 7, u64::MAX];
    let push_pull = |sim: &mut Sim, values: &[f32]| {
        let ts = sim
            .with_node(w, |n, now| {
                n.push_pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&keys), Values::from_slice(values), None)
            })
            .expect("push_pull accepted");
        pulled(&wait(sim, w, CustomerId::DEFAULT, ts)).0
    };
    assert_eq!(push_pull(&mut sim, &[1.0, 2.0, 3.0]), vec![1.0, 2.0, 3.0]);
    push_wait(&mut sim, other, &keys, &[10.0, 10.0, 10.0]);
    assert_eq!(push_pull(&mut sim, &[1.0, 1.0, 1.0]), vec![12.0, 13.0, 14.0]);
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn customers_never_see_each_others_completions() {
    let mut sim = ready(setup(8, 2, 3));
    let w = sim.worker_slot(1);
    let same_app = [CustomerId::new(0, 0), CustomerId::new(0, 1)];
    let other_app = CustomerId::new(1, 0);
    let keys = [5, u64::MAX];
    // All three are in flight at once, with equal timestamps.
    for (customer, value) in [(same_app[0], 1.0), (same_app[1], 2.0), (other_app, 10.0)] {
        assert_eq!(push_f32(&mut sim, w, customer, &keys, &[value, value]), Timestamp(0));
    }
    for customer in [same_app[0], same_app[1], other_app] {
        assert_eq!(wait(&mut sim, w, customer, Timestamp(0)), Event::RequestDone { customer, ts: Timestamp(0) });
    }
    for customer in [same_app[0], same_app[1], other_app] {
        assert_eq!(pull_f32(&mut sim, w, customer, &keys), Timestamp(1));
    }
    // One app shares one table; another app has its own.
    for (customer, sum) in [(same_app[0], 3.0), (same_app[1], 3.0), (other_app, 10.0)] {
        assert_eq!(pulled(&wait(&mut sim, w, customer, Timestamp(1))).0, vec![sum, sum], "{customer:?}");
    }
    drive(&mut sim);
    for customer in [same_app[0], same_app[1], other_app] {
        let completions: Vec<Timestamp> = sim
            .events_of(w)
            .filter_map(|(_, e)| match e {
                Event::RequestDone { customer: c, ts } | Event::PullDone { customer: c, ts, .. } if *c == customer => {
                    Some(*ts)
                }
                Event::RequestFailed { .. } => panic!("{e:?}"),
                _ => None,
            })
            .collect();
        assert_eq!(completions, [Timestamp(0), Timestamp(1)], "{customer:?}");
    }
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

/// Answers, by hand, every SimpleApp request the nodes got and no one
/// answered yet: the head plus one and the body back, so that a reply can
/// be told from the request it answers. `answered` counts per slot.
fn answer_simple_requests(sim: &mut Sim, answered: &mut [usize]) {
    for (slot, done) in answered.iter_mut().enumerate() {
        let requests: Vec<SimpleRequest> = sim
            .events_of(slot)
            .filter_map(|(_, e)| match e {
                Event::SimpleRequest(r) => Some(r.clone()),
                _ => None,
            })
            .skip(*done)
            .collect();
        for r in requests {
            sim.with_node(slot, |n, now| n.simple_respond(now, r.id, r.head.wrapping_add(1), r.body.clone()))
                .expect("simple_respond");
            *done += 1;
        }
    }
}

#[test]
fn a_simple_request_to_a_group_gets_one_reply_per_member_in_id_order() {
    let mut sim = ready(setup(12, 2, 3));
    for slot in 0..sim.slots() {
        sim.serve(slot, false);
    }
    let mut answered = vec![0; sim.slots()];
    for bits in 1..=7 {
        let group = Group::from_bits(bits).expect("group");
        let expected: Vec<NodeId> = {
            let mut ids: Vec<NodeId> = members(&sim, group).into_iter().map(|i| sim.node(i).unwrap().id()).collect();
            ids.sort();
            ids
        };
        for from in 0..sim.slots() {
            let body = Bytes::from(vec![bits, from as u8]);
            let customer = CustomerId::new(3, 0);
            let ts = sim
                .with_node(from, |n, now| n.simple_request(now, customer, group, 40, body.clone()))
                .expect("simple request accepted");
            while completion(&sim, from, customer, ts).is_none() {
                answer_simple_requests(&mut sim, &mut answered);
                assert!(sim.step(), "{group:?} from node {from} is still waiting");
            }
            let Some((_, Event::SimpleDone { replies, .. })) = completion(&sim, from, customer, ts) else {
                panic!("{group:?} from node {from} failed");
            };
            let from_ids: Vec<NodeId> = replies.iter().map(|r| r.from).collect();
            assert_eq!(from_ids, expected, "{group:?} from node {from}");
            assert!(replies.iter().all(|r| r.head == 41 && r.body == body), "{group:?} from node {from}");
        }
    }
    assert!(sim.failure().is_none(), "{:?}", sim.failure());
}

#[test]
fn misuse_is_refused_with_a_named_reason_before_anything_is_sent() {
    let mut setup = setup(2, 2, 3);
    setup.configure = Some(|mut b: ConfigBuilder| {
        b.keys_per_request_max = 4;
        b
    });
    let mut sim = started(setup);
    let w = sim.worker_slot(0);
    let push = |sim: &mut Sim, i: usize, keys: &[u64], values: &[f32], lens: Option<&[u32]>| {
        sim.with_node(i, |n, now| {
            let lens = lens.map(Lens::from_slice);
            n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(keys), Values::from_slice(values), lens)
        })
    };
    let misuse = |result: Result<Timestamp, RequestError>| match result {
        Err(RequestError::ApiMisuse(m)) => m,
        other => panic!("expected ApiMisuse, got {other:?}"),
    };

    // Before the cluster is ready.
    assert_eq!(misuse(push(&mut sim, w, &[1], &[1.0], None)), ApiMisuse::NotReady);
    assert_eq!(sim.with_node(w, |n, now| n.barrier(now, Group::WORKERS)), Err(ApiMisuse::NotReady.into()));
    assert_eq!(
        sim.with_node(w, |n, now| n.simple_request(now, CustomerId::DEFAULT, Group::ALL, 0, Bytes::new())),
        Err(ApiMisuse::NotReady.into())
    );
    form(&mut sim);
    drive(&mut sim);
    let frames_out = sim.node(w).unwrap().stats().frames_out;

    assert_eq!(
        misuse(push(&mut sim, w, &[5, 3], &[1.0, 2.0], None)),
        ApiMisuse::UnsortedKeys { index: 1, key: 3, previous: 5 }
    );
    assert_eq!(misuse(push(&mut sim, w, &[1, 5, 5], &[1.0; 3], None)), ApiMisuse::DuplicateKey { index: 2, key: 5 });
    let unsorted_pull =
        sim.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[2, 1]), DType::F32));
    assert!(matches!(misuse(unsorted_pull), ApiMisuse::UnsortedKeys { index: 1, .. }));
    assert!(matches!(
        misuse(push(&mut sim, w, &[1, 2], &[1.0, 2.0, 3.0], None)),
        ApiMisuse::LengthMismatch { expected: 4, got: 3, .. }
    ));
    assert!(matches!(
        misuse(push(&mut sim, w, &[1, 2], &[], None)),
        ApiMisuse::LengthMismatch { what: "a push needs values", .. }
    ));
    assert!(matches!(
        misuse(push(&mut sim, w, &[1, 2], &[1.0, 2.0], Some(&[2]))),
        ApiMisuse::LengthMismatch { what: "one length per key", expected: 2, got: 1 }
    ));
    assert!(matches!(
        misuse(push(&mut sim, w, &[1, 2], &[1.0, 2.0], Some(&[1, 2]))),
        ApiMisuse::LengthMismatch { what: "sum of lens vs values", expected: 3, got: 2 }
    ));
    assert_eq!(
        misuse(push(&mut sim, w, &[1, 2, 3, 4, 5], &[1.0; 5], None)),
        ApiMisuse::TooManyKeys { keys: 5, max: 4 }
    );
    assert_eq!(sim.node(w).unwrap().stats().frames_out, frames_out, "a refused command sends nothing");
    assert_eq!(sim.node(w).unwrap().requests_pending(), 0);

    for i in [SCHEDULER, sim.server_slot(0)] {
        let role = sim.role(i);
        let wrong_role = ApiMisuse::WrongRole { command: "push/pull", role };
        assert_eq!(misuse(push(&mut sim, i, &[1], &[1.0], None)), wrong_role);
        let pull = sim.with_node(i, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[1]), DType::F32));
        assert_eq!(misuse(pull), wrong_role);
    }
    let id = ServerRequestId {
        from: NodeId::SCHEDULER,
        incarnation: Incarnation(0),
        customer: CustomerId::DEFAULT,
        ts: Timestamp(0),
        part: 0,
    };
    assert_eq!(
        sim.with_node(w, |n, now| n.respond(now, id, Response::ack())),
        Err(ApiMisuse::WrongRole { command: "respond", role: Role::Worker }.into())
    );
    let s = sim.server_slot(1);
    assert_eq!(sim.with_node(s, |n, now| n.respond(now, id, Response::ack())), Err(ApiMisuse::UnknownRequest.into()));
}

#[test]
fn an_empty_key_list_completes_at_once() {
    let mut sim = ready(setup(10, 2, 3));
    drive(&mut sim);
    let w = sim.worker_slot(2);
    let empty = Keys::from_slice(&[]);
    let push = sim
        .with_node(w, |n, now| n.push(now, CustomerId::DEFAULT, 0, empty.clone(), Values::empty(DType::F32), None))
        .expect("push accepted");
    let pull = sim.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, empty.clone(), DType::F32)).expect("pull");
    let push_pull = sim
        .with_node(w, |n, now| n.push_pull(now, CustomerId::DEFAULT, 0, empty.clone(), Values::empty(DType::F32), None))
        .expect("push_pull accepted");
    // No step has run: the completions were there when the commands returned.
    assert!(sim.frames_in_flight().next().is_none(), "nothing is sent for no keys");
    assert_eq!(
        completion(&sim, w, CustomerId::DEFAULT, push).map(|(_, e)| e),
        Some(Event::RequestDone { customer: CustomerId::DEFAULT, ts: push })
    );
    for ts in [pull, push_pull] {
        let (_, done) = completion(&sim, w, CustomerId::DEFAULT, ts).expect("completed at once");
        assert_eq!(pulled(&done), (vec![], None));
    }
    assert_eq!(sim.node(w).unwrap().requests_pending(), 0);
}

#[test]
fn an_answer_larger_than_a_frame_is_refused_not_sent() {
    let mut sim = ready(setup(41, 1, 1));
    let (w, s) = (sim.worker_slot(0), sim.server_slot(0));
    sim.serve(s, false);
    let ts = sim.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[1]), DType::U8)).unwrap();
    drive(&mut sim);
    let request = sim
        .events_of(s)
        .find_map(|(_, e)| match e {
            Event::ServerRequest(r) => Some(r.clone()),
            _ => None,
        })
        .expect("the server got the pull");
    let too_big = sim.config(s).frame_len_max as usize + 1;
    let answer = Response::Ok { values: Values::from_slice(&vec![0u8; too_big]), lens: None };
    sim.with_node(s, |n, now| n.respond(now, request.id, answer)).unwrap();
    match wait(&mut sim, w, CustomerId::DEFAULT, ts) {
        Event::RequestFailed { error: RequestError::Refused { reason, .. }, .. } => {
            assert!(reason.contains("frame_len_max"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
