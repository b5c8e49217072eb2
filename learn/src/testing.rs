//! Requests built by hand, as a server would receive them, so tests can
//! drive a handle without a network.

use pslite_core::{
    CustomerId, DType, Incarnation, Keys, KvHandle, KvOp, Lens, NodeId, Rank, Response, ServerRequest, ServerRequestId,
    Timestamp, Values,
};

pub(crate) fn request(op: KvOp, cmd: i32, keys: &[u64], values: Values, lens: Option<Lens>) -> ServerRequest {
    ServerRequest {
        id: ServerRequestId {
            from: NodeId::worker(Rank(0)),
            incarnation: Incarnation(0),
            customer: CustomerId::DEFAULT,
            ts: Timestamp(0),
            part: 0,
        },
        cmd,
        op,
        keys: Keys::from_slice(keys),
        values,
        lens,
    }
}

/// Pushes gradients; panics if the handle refuses.
pub(crate) fn push(handle: &mut impl KvHandle, keys: &[u64], gradients: &[f32]) {
    let response = handle.handle(&request(KvOp::Push, 0, keys, Values::from_slice(gradients), None));
    assert_eq!(response, Response::ack());
}

/// Pulls weights; panics if the handle refuses.
pub(crate) fn pull(handle: &mut impl KvHandle, keys: &[u64]) -> Vec<f32> {
    match handle.handle(&request(KvOp::Pull, 0, keys, Values::empty(DType::F32), None)) {
        Response::Ok { values, lens: None } => values.to_vec().expect("f32 weights"),
        other => panic!("pull failed: {other:?}"),
    }
}
