//! Well-formed but hostile frames from members of the cluster: whatever a
//! buggy or malicious peer sends, a node must not panic.
//!
//! The codec tests feed garbage to the decoder; these go one step further
//! and deliver every kind of message, with any content, to running nodes
//! that have requests in flight, so the protocol handlers meet answers to
//! nothing, answers that do not fit, tables that lie and requests for keys
//! the server does not own.

use proptest::collection::vec;
use proptest::prelude::*;

use super::harness::Cluster;
use crate::wire::message::Envelope;
use crate::wire::tests::message;
use crate::wire::Message;
use crate::*;

/// Pulls the ids of request-shaped messages into a small range, so hostile
/// answers hit requests that are really pending.
fn aimed(message: Message) -> Message {
    match message {
        Message::KvRequest(mut m) => {
            (m.app, m.customer, m.ts) = (m.app % 2, m.customer % 2, m.ts % 4);
            Message::KvRequest(m)
        }
        Message::KvResponse(mut m) => {
            (m.app, m.customer, m.ts) = (m.app % 2, m.customer % 2, m.ts % 4);
            Message::KvResponse(m)
        }
        Message::SimpleRequest(mut m) => {
            (m.app, m.customer, m.ts) = (m.app % 2, m.customer % 2, m.ts % 4);
            Message::SimpleRequest(m)
        }
        Message::SimpleResponse(mut m) => {
            (m.app, m.customer, m.ts) = (m.app % 2, m.customer % 2, m.ts % 4);
            Message::SimpleResponse(m)
        }
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_message_from_a_member_panics_a_node(
        seed in 0u64..1000,
        frames in vec((0usize..4, 0usize..4, message().prop_map(aimed)), 1..12),
    ) {
        let mut c = Cluster::new(2, 1, seed);
        c.form();
        let w = c.worker(0);
        // Requests of both customers and both apps are pending when the
        // hostile frames land.
        for customer in [CustomerId::new(0, 0), CustomerId::new(1, 1)] {
            let keys = Keys::from_slice(&[1, u64::MAX]);
            c.with_node(w, |n, now| n.pull(now, customer, 0, keys.clone(), DType::F32)).expect("pull");
            c.with_node(w, |n, now| n.push(now, customer, 0, keys.clone(), Values::from_slice(&[1.0f32, 2.0]), None))
                .expect("push");
            c.with_node(w, |n, now| n.simple_request(now, customer, Group::ALL, 7, bytes::Bytes::new()))
                .expect("simple request");
        }
        for (from, to, message) in frames {
            let Some(sender) = c.nodes[from].as_ref().map(Node::id) else { continue };
            let envelope = Envelope { sender, incarnation: Incarnation(0), receiver: c.node_ref(to).id(), seq: 0 };
            c.inject(from, to, message.encode(envelope).to_bytes());
        }
        c.run_for(Duration::from_secs(8));
    }
}
