//! The limits a worker's request is held to before anything is sent,
//! at their exact edges: a request that fits is sent and served, one that
//! does not is refused with an error that names the limit.
//!
//! One scheduler, one server and one worker in memory, frames delivered by
//! hand, the server answering with the default store.

use std::net::SocketAddr;

use pslite_core::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const FRAME_LEN_MAX: u32 = 64 * 1024;
const KEYS_MAX: u32 = 4;

struct Cluster {
    nodes: Vec<Node>,
    events: Vec<(usize, Event)>,
    store: KvStore<u8>,
}

impl Cluster {
    fn new() -> Self {
        let mut base = Config::builder(Role::Scheduler, addr(1)).cluster(1, 1);
        base.frame_len_max = FRAME_LEN_MAX;
        base.keys_per_request_max = KEYS_MAX;
        let base = base.build().unwrap();
        let nodes = vec![
            Node::new(base.clone(), 1, Instant::ZERO),
            Node::new(base.for_role(Role::Server, addr(2)), 2, Instant::ZERO),
            Node::new(base.for_role(Role::Worker, addr(3)), 3, Instant::ZERO),
        ];
        let mut cluster = Self { nodes, events: Vec::new(), store: KvStore::new() };
        cluster.settle();
        assert!(cluster.events.iter().any(|(i, e)| *i == 2 && *e == Event::ClusterReady));
        cluster
    }

    /// Delivers frames, and answers server requests with the store, until
    /// the network is quiet.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut wire = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while let Some(t) = node.poll_transmit() {
                    wire.push(t);
                }
                while let Some(e) = node.poll_event() {
                    self.events.push((i, e));
                }
            }
            let requests: Vec<ServerRequest> = self
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::ServerRequest(r) => Some(r.clone()),
                    _ => None,
                })
                .collect();
            self.events.retain(|(_, e)| !matches!(e, Event::ServerRequest(_)));
            for request in &requests {
                let answer = self.store.handle(request);
                self.nodes[1].respond(Instant::ZERO, request.id, answer).unwrap();
            }
            if wire.is_empty() && requests.is_empty() {
                return;
            }
            for t in wire {
                let to = usize::from(t.addr.port()) - 1;
                self.nodes[to].handle_frame(Instant::ZERO, t.frame.to_bytes()).expect("frames within the limit");
            }
        }
        panic!("the network did not settle");
    }

    fn push(&mut self, keys: &[u64], values: &[u8]) -> Result<Timestamp, RequestError> {
        self.push_lens(keys, values, None)
    }

    fn push_lens(&mut self, keys: &[u64], values: &[u8], lens: Option<&[u32]>) -> Result<Timestamp, RequestError> {
        let (keys, values) = (Keys::from_slice(keys), Values::from_slice(values));
        self.nodes[2].push(Instant::ZERO, CustomerId::DEFAULT, 0, keys, values, lens.map(Lens::from_slice))
    }

    fn done(&self, ts: Timestamp) -> bool {
        self.events.contains(&(2, Event::RequestDone { customer: CustomerId::DEFAULT, ts }))
    }
}

#[test]
fn a_request_of_exactly_keys_per_request_max_keys_is_sent_and_one_more_is_refused() {
    let mut c = Cluster::new();
    let keys: Vec<u64> = (1..=u64::from(KEYS_MAX) + 1).collect();
    let ts = c.push(&keys[..KEYS_MAX as usize], &[1; KEYS_MAX as usize]).expect("at the limit");
    c.settle();
    assert!(c.done(ts));
    let refused = c.push(&keys, &[1; KEYS_MAX as usize + 1]);
    assert_eq!(refused, Err(ApiMisuse::TooManyKeys { keys: KEYS_MAX as usize + 1, max: KEYS_MAX }.into()));
}

#[test]
fn a_request_whose_frame_fills_frame_len_max_is_sent_and_one_byte_more_is_refused() {
    let mut c = Cluster::new();
    // What a push of one key needs: the header, at most 64 bytes of
    // metadata, the key and one byte per value.
    let fits = FRAME_LEN_MAX as usize - wire::HEADER_LEN - 64 - 8;
    let ts = c.push(&[7], &vec![1; fits]).expect("a frame at the limit");
    c.settle();
    assert!(c.done(ts), "the server took the frame and applied the push");
    assert_eq!(c.store.get(7).map(<[u8]>::len), Some(fits));
    let refused = c.push(&[8], &vec![1; fits + 1]);
    let needed = u64::from(FRAME_LEN_MAX) + 1;
    assert_eq!(refused, Err(ApiMisuse::FrameTooLarge { bytes: needed, max: FRAME_LEN_MAX }.into()));
}

#[test]
fn per_key_lengths_count_against_frame_len_max_too() {
    let mut c = Cluster::new();
    // Two keys with their lengths listed: the header, at most 64 bytes of
    // metadata, two keys, two lengths and the values.
    let fits = FRAME_LEN_MAX as usize - wire::HEADER_LEN - 64 - 2 * 8 - 2 * 4;
    let lens = [1, fits as u32 - 1];
    let ts = c.push_lens(&[3, 4], &vec![1; fits], Some(&lens)).expect("a frame at the limit");
    c.settle();
    assert!(c.done(ts), "the server took the frame and applied the push");
    assert_eq!(c.store.get(4).map(<[u8]>::len), Some(fits - 1));
    let lens = [1, fits as u32];
    let refused = c.push_lens(&[5, 6], &vec![1; fits + 1], Some(&lens));
    let needed = u64::from(FRAME_LEN_MAX) + 1;
    assert_eq!(refused, Err(ApiMisuse::FrameTooLarge { bytes: needed, max: FRAME_LEN_MAX }.into()));
}
