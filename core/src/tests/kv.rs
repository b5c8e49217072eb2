//! The data plane: push, pull and push_pull across server ranges,
//! customers, SimpleApp, and the misuse a worker is told about.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::harness::Cluster;
use crate::*;

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

fn push_f32(c: &mut Cluster, i: usize, customer: CustomerId, keys: &[u64], values: &[f32]) -> Timestamp {
    c.with_node(i, |n, now| n.push(now, customer, 0, Keys::from_slice(keys), Values::from_slice(values), None))
        .expect("push accepted")
}

fn pull_f32(c: &mut Cluster, i: usize, customer: CustomerId, keys: &[u64]) -> Timestamp {
    c.with_node(i, |n, now| n.pull(now, customer, 0, Keys::from_slice(keys), DType::F32)).expect("pull accepted")
}

#[test]
fn concurrent_pushes_sum_exactly_across_range_boundaries() {
    for seed in 0..10 {
        let mut c = Cluster::new(2, 3, seed);
        c.form();
        let ranges = c.node_ref(0).server_ranges().clone();
        let mut rng = Rng::new(seed);
        let mut keys = edge_keys(&ranges);
        keys.extend((0..8).map(|_| rng.next_u64()));
        let keys: Vec<u64> = keys.into_iter().collect();
        let workers: Vec<usize> = (0..3).map(|r| c.worker(r)).collect();
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
                pending.push((w, push_f32(&mut c, w, CustomerId::DEFAULT, &subset, &values)));
            }
            for (w, ts) in pending {
                let done = c.wait(w, CustomerId::DEFAULT, ts);
                assert_eq!(done, Event::RequestDone { customer: CustomerId::DEFAULT, ts }, "seed {seed}");
            }
            let expected: Vec<f32> = keys.iter().map(|k| model.get(k).copied().unwrap_or(0.0)).collect();
            for &w in &workers {
                let ts = pull_f32(&mut c, w, CustomerId::DEFAULT, &keys);
                let (values, _) = pulled(&c.wait(w, CustomerId::DEFAULT, ts));
                assert_eq!(values, expected, "seed {seed}, round {round}, worker {w}");
            }
        }
        // Each key was summed by its owner and only there.
        for (rank, range) in ranges.as_slice().iter().enumerate() {
            let store = &c.stores[&(c.server(rank), 0)];
            for &k in &keys {
                assert_eq!(store.get(k).is_some(), range.contains(k) && model.contains_key(&k), "key {k}");
            }
        }
    }
}

#[test]
fn variable_length_values_round_trip() {
    let mut c = Cluster::new(2, 3, 4);
    c.form();
    let start = c.node_ref(0).server_ranges().as_slice()[1].start();
    let w = c.worker(0);
    // Both servers get keys of several lengths, one of them empty.
    let keys = Keys::from_slice(&[0, start - 1, start, u64::MAX]);
    let lens = [1u32, 3, 0, 2];
    let values: Vec<f32> = (1..=6).map(|v| v as f32).collect();
    for times in 1..=2 {
        let ts = c
            .with_node(w, |n, now| {
                n.push(
                    now,
                    CustomerId::DEFAULT,
                    0,
                    keys.clone(),
                    Values::from_slice(&values),
                    Some(Lens::from_slice(&lens)),
                )
            })
            .expect("push accepted");
        assert!(matches!(c.wait(w, CustomerId::DEFAULT, ts), Event::RequestDone { .. }));
        let ts = c.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, keys.clone(), DType::F32)).expect("pull");
        let expected: Vec<f32> = values.iter().map(|v| v * times as f32).collect();
        assert_eq!(pulled(&c.wait(w, CustomerId::DEFAULT, ts)), (expected, Some(lens.to_vec())));
    }
    // Lengths that differ only between servers are reported too.
    let keys = [1, 2, start + 1];
    let ts = c
        .with_node(w, |n, now| {
            let values = Values::from_slice(&[1.0f32, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0]);
            n.push(now, CustomerId::DEFAULT, 0, Keys::from_slice(&keys), values, Some(Lens::from_slice(&[2, 2, 3])))
        })
        .expect("push accepted");
    c.wait(w, CustomerId::DEFAULT, ts);
    let ts = pull_f32(&mut c, w, CustomerId::DEFAULT, &keys);
    assert_eq!(
        pulled(&c.wait(w, CustomerId::DEFAULT, ts)),
        (vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0], Some(vec![2, 2, 3]))
    );
}

#[test]
fn a_push_pull_returns_the_value_after_its_own_push() {
    let mut c = Cluster::new(2, 3, 6);
    c.form();
    let (w, other) = (c.worker(0), c.worker(2));
    let keys = [3, u64::MAX / 2 + 7, u64::MAX];
    let push_pull = |c: &mut Cluster, values: &[f32]| {
        let ts = c
            .with_node(w, |n, now| {
                n.push_pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&keys), Values::from_slice(values), None)
            })
            .expect("push_pull accepted");
        pulled(&c.wait(w, CustomerId::DEFAULT, ts)).0
    };
    assert_eq!(push_pull(&mut c, &[1.0, 2.0, 3.0]), vec![1.0, 2.0, 3.0]);
    c.push_wait(other, &keys, &[10.0, 10.0, 10.0]);
    assert_eq!(push_pull(&mut c, &[1.0, 1.0, 1.0]), vec![12.0, 13.0, 14.0]);
}

#[test]
fn customers_never_see_each_others_completions() {
    let mut c = Cluster::new(2, 3, 8);
    c.form();
    let w = c.worker(1);
    let same_app = [CustomerId::new(0, 0), CustomerId::new(0, 1)];
    let other_app = CustomerId::new(1, 0);
    let keys = [5, u64::MAX];
    // All three are in flight at once, with equal timestamps.
    for (customer, value) in [(same_app[0], 1.0), (same_app[1], 2.0), (other_app, 10.0)] {
        assert_eq!(push_f32(&mut c, w, customer, &keys, &[value, value]), Timestamp(0));
    }
    for customer in [same_app[0], same_app[1], other_app] {
        assert_eq!(c.wait(w, customer, Timestamp(0)), Event::RequestDone { customer, ts: Timestamp(0) });
    }
    for customer in [same_app[0], same_app[1], other_app] {
        assert_eq!(pull_f32(&mut c, w, customer, &keys), Timestamp(1));
    }
    // One app shares one table; another app has its own.
    for (customer, sum) in [(same_app[0], 3.0), (same_app[1], 3.0), (other_app, 10.0)] {
        assert_eq!(pulled(&c.wait(w, customer, Timestamp(1))).0, vec![sum, sum], "{customer:?}");
    }
    c.drive();
    for customer in [same_app[0], same_app[1], other_app] {
        let completions: Vec<Timestamp> = c
            .events(w)
            .filter_map(|e| match e {
                Event::RequestDone { customer: c, ts } | Event::PullDone { customer: c, ts, .. } if *c == customer => {
                    Some(*ts)
                }
                Event::RequestFailed { .. } => panic!("{e:?}"),
                _ => None,
            })
            .collect();
        assert_eq!(completions, [Timestamp(0), Timestamp(1)], "{customer:?}");
    }
}

#[test]
fn a_simple_request_to_a_group_gets_one_reply_per_member_in_id_order() {
    let mut c = Cluster::new(2, 3, 12);
    c.form();
    for bits in 1..=7 {
        let group = Group::from_bits(bits).expect("group");
        let expected: Vec<NodeId> = {
            let mut ids: Vec<NodeId> =
                (0..c.nodes.len()).filter(|&i| group.contains(c.configs[i].role)).map(|i| c.node_ref(i).id()).collect();
            ids.sort();
            ids
        };
        for from in 0..c.nodes.len() {
            let body = Bytes::from(vec![bits, from as u8]);
            let customer = CustomerId::new(3, 0);
            let ts = c
                .with_node(from, |n, now| n.simple_request(now, customer, group, 40, body.clone()))
                .expect("simple request accepted");
            let Event::SimpleDone { replies, .. } = c.wait(from, customer, ts) else {
                panic!("{group:?} from node {from} failed");
            };
            let from_ids: Vec<NodeId> = replies.iter().map(|r| r.from).collect();
            assert_eq!(from_ids, expected, "{group:?} from node {from}");
            assert!(replies.iter().all(|r| r.head == 41 && r.body == body), "{group:?} from node {from}");
        }
    }
}

#[test]
fn misuse_is_refused_with_a_named_reason_before_anything_is_sent() {
    let mut c = Cluster::with(2, 3, 2, |mut b| {
        b.keys_per_request_max = 4;
        b
    });
    let w = c.worker(0);
    let push = |c: &mut Cluster, i: usize, keys: &[u64], values: &[f32], lens: Option<&[u32]>| {
        c.with_node(i, |n, now| {
            n.push(
                now,
                CustomerId::DEFAULT,
                0,
                Keys::from_slice(keys),
                Values::from_slice(values),
                lens.map(Lens::from_slice),
            )
        })
    };
    let misuse = |result: Result<Timestamp, RequestError>| match result {
        Err(RequestError::ApiMisuse(m)) => m,
        other => panic!("expected ApiMisuse, got {other:?}"),
    };

    // Before the cluster is ready.
    assert_eq!(misuse(push(&mut c, w, &[1], &[1.0], None)), ApiMisuse::NotReady);
    assert_eq!(c.with_node(w, |n, now| n.barrier(now, Group::WORKERS)), Err(ApiMisuse::NotReady.into()));
    assert_eq!(
        c.with_node(w, |n, now| n.simple_request(now, CustomerId::DEFAULT, Group::ALL, 0, Bytes::new())),
        Err(ApiMisuse::NotReady.into())
    );
    c.form();
    c.drive();
    let frames_out = c.node_ref(w).stats().frames_out;

    assert_eq!(
        misuse(push(&mut c, w, &[5, 3], &[1.0, 2.0], None)),
        ApiMisuse::UnsortedKeys { index: 1, key: 3, previous: 5 }
    );
    assert_eq!(misuse(push(&mut c, w, &[1, 5, 5], &[1.0; 3], None)), ApiMisuse::DuplicateKey { index: 2, key: 5 });
    let unsorted_pull =
        c.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[2, 1]), DType::F32));
    assert!(matches!(misuse(unsorted_pull), ApiMisuse::UnsortedKeys { index: 1, .. }));
    assert!(matches!(
        misuse(push(&mut c, w, &[1, 2], &[1.0, 2.0, 3.0], None)),
        ApiMisuse::LengthMismatch { expected: 4, got: 3, .. }
    ));
    assert!(matches!(
        misuse(push(&mut c, w, &[1, 2], &[], None)),
        ApiMisuse::LengthMismatch { what: "a push needs values", .. }
    ));
    assert!(matches!(
        misuse(push(&mut c, w, &[1, 2], &[1.0, 2.0], Some(&[2]))),
        ApiMisuse::LengthMismatch { what: "one length per key", expected: 2, got: 1 }
    ));
    assert!(matches!(
        misuse(push(&mut c, w, &[1, 2], &[1.0, 2.0], Some(&[1, 2]))),
        ApiMisuse::LengthMismatch { what: "sum of lens vs values", expected: 3, got: 2 }
    ));
    assert_eq!(misuse(push(&mut c, w, &[1, 2, 3, 4, 5], &[1.0; 5], None)), ApiMisuse::TooManyKeys { keys: 5, max: 4 });
    assert_eq!(c.node_ref(w).stats().frames_out, frames_out, "a refused command sends nothing");
    assert_eq!(c.node_ref(w).requests_pending(), 0);

    for i in [0, c.server(0)] {
        let role = c.configs[i].role;
        let wrong_role = ApiMisuse::WrongRole { command: "push/pull", role };
        assert_eq!(misuse(push(&mut c, i, &[1], &[1.0], None)), wrong_role);
        let pull = c.with_node(i, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[1]), DType::F32));
        assert_eq!(misuse(pull), wrong_role);
    }
    let id = ServerRequestId {
        from: NodeId::SCHEDULER,
        incarnation: Incarnation(0),
        customer: CustomerId::DEFAULT,
        ts: Timestamp(0),
    };
    assert_eq!(
        c.with_node(w, |n, now| n.respond(now, id, Response::ack())),
        Err(ApiMisuse::WrongRole { command: "respond", role: Role::Worker }.into())
    );
    let s = c.server(1);
    assert_eq!(c.with_node(s, |n, now| n.respond(now, id, Response::ack())), Err(ApiMisuse::UnknownRequest.into()));
}

#[test]
fn an_empty_key_list_completes_at_once() {
    let mut c = Cluster::new(2, 3, 10);
    c.form();
    c.drive();
    let w = c.worker(2);
    let empty = Keys::from_slice(&[]);
    let push = c
        .with_node(w, |n, now| n.push(now, CustomerId::DEFAULT, 0, empty.clone(), Values::empty(DType::F32), None))
        .expect("push accepted");
    let pull = c.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, empty.clone(), DType::F32)).expect("pull");
    let push_pull = c
        .with_node(w, |n, now| n.push_pull(now, CustomerId::DEFAULT, 0, empty.clone(), Values::empty(DType::F32), None))
        .expect("push_pull accepted");
    // No step has run: the completions were there when the commands returned.
    assert!(c.in_flight.is_empty(), "nothing is sent for no keys");
    assert_eq!(
        c.completion(w, CustomerId::DEFAULT, push),
        Some(&Event::RequestDone { customer: CustomerId::DEFAULT, ts: push })
    );
    for ts in [pull, push_pull] {
        let done = c.completion(w, CustomerId::DEFAULT, ts).expect("completed at once");
        assert_eq!(pulled(done), (vec![], None));
    }
    assert_eq!(c.node_ref(w).requests_pending(), 0);
}

#[test]
fn an_answer_larger_than_a_frame_is_refused_not_sent() {
    let mut c = Cluster::new(1, 1, 41);
    c.auto_serve = false;
    c.form();
    let (w, s) = (c.worker(0), c.server(0));
    let ts = c.with_node(w, |n, now| n.pull(now, CustomerId::DEFAULT, 0, Keys::from_slice(&[1]), DType::U8)).unwrap();
    c.drive();
    let request = c
        .events(s)
        .find_map(|e| match e {
            Event::ServerRequest(r) => Some(r.clone()),
            _ => None,
        })
        .expect("the server got the pull");
    let too_big = c.node(s).config().frame_len_max as usize + 1;
    let answer = Response::Ok { values: Values::from_slice(&vec![0u8; too_big]), lens: None };
    c.with_node(s, |n, now| n.respond(now, request.id, answer)).unwrap();
    match c.wait(w, CustomerId::DEFAULT, ts) {
        Event::RequestFailed { error: RequestError::Refused { reason, .. }, .. } => {
            assert!(reason.contains("frame_len_max"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
