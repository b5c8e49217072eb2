//! Corrupt answers ([`FaultClass::Corrupt`]): a server whose answers to
//! pulls do not fit what was asked, as a buggy or hostile one would send.
//!
//! The simulator rewrites a server's `KvResponse` on its way out in one of
//! three ways the worker must catch (keys echoed that differ from the ones
//! asked, values of another type, lengths that do not add up) and tells
//! the checker, which then holds the worker to failing that request with
//! `BadResponse` naming the server and the mismatch. Whether and how an
//! answer is corrupted follows from the answer's identity, so a resend of
//! it is corrupted the same way.
//!
//! [`FaultClass::Corrupt`]: crate::faults::FaultClass::Corrupt

use bytes::Bytes;
use pslite_core::wire::message::Envelope;
use pslite_core::wire::{Header, Kind, Message};
use pslite_core::{CustomerId, DType, Keys, Lens, Mismatch, Rng, Role, Timestamp, Values};

use crate::checker::RequestKey;
use crate::queue::Slot;
use crate::sim::Sim;

impl Sim {
    /// `bytes` (with `header`) as the server in `from` puts them on the
    /// wire: corrupted when the plan says so.
    pub(crate) fn maybe_corrupt(&mut self, from: Slot, header: &Header, bytes: Bytes) -> Bytes {
        let p = self.setup.plan.corrupt_probability;
        if p == 0.0 || header.kind != Kind::KvResponse || self.nodes[from].role != Role::Server {
            return bytes;
        }
        let Ok(Message::KvResponse(mut response)) = Message::decode(header, &bytes) else {
            return bytes;
        };
        // Only answers with values (pulls) are checked against the request.
        if response.error.is_some() || response.values.is_empty() {
            return bytes;
        }
        let life = self.nodes[from].life().expect("a running server");
        let identity = [
            from as u64,
            u64::from(life),
            u64::from(header.receiver.get()),
            u64::from(header.receiver_incarnation.0),
            u64::from(response.app),
            u64::from(response.customer),
            u64::from(response.ts),
        ];
        let mut rng = Rng::new(identity.into_iter().fold(self.corrupt_seed, Rng::derive_seed));
        if !rng.chance(p) {
            return bytes;
        }
        let mismatch = match rng.below(3) {
            0 => {
                // Strictly ascending keys are asked for; these never are.
                response.keys = Keys::from_slice(&[0, 0]);
                Mismatch::Keys
            }
            1 => {
                let raw = response.values.as_bytes().clone();
                let other = if response.values.dtype() == DType::I32 { DType::F32 } else { DType::I32 };
                match Values::from_bytes(other, raw) {
                    Some(values) => response.values = values,
                    None => return bytes,
                }
                Mismatch::ValueType
            }
            _ => {
                let lens = vec![1u32; response.values.len() + 1];
                response.lens = Some(Lens::from_slice(&lens));
                Mismatch::Lengths
            }
        };
        let request = RequestKey {
            node: header.receiver,
            incarnation: header.receiver_incarnation,
            customer: CustomerId::new(response.app, response.customer),
            ts: Timestamp(response.ts),
        };
        self.checker.answer_corrupted(request, header.sender, mismatch);
        let envelope = Envelope {
            sender: header.sender,
            incarnation: header.incarnation,
            receiver: header.receiver,
            receiver_incarnation: header.receiver_incarnation,
            seq: header.seq,
        };
        Message::KvResponse(response).encode(envelope).to_bytes()
    }
}
