//! The fuzz targets' committed corpus, replayed by every `cargo test`.
//!
//! `fuzz/corpus/<target>/` holds the seeds and every input that once found
//! a bug; replaying them here keeps the target bodies compiling and passing
//! on a stable toolchain, without cargo-fuzz. The seeds themselves are
//! generated below; after a wire-format change, regenerate them with
//!
//! ```text
//! cargo test -p pslite-core write_seed_corpus -- --ignored
//! ```

use std::fs;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::fuzzing::node_inputs::{run, Action, Summary, ACTIONS};
use crate::fuzzing::{frame_decode, node_inputs, slice};
use crate::wire::message::Envelope;
use crate::wire::*;
use crate::*;

const TARGETS: [&str; 3] = ["frame_decode", "node_inputs", "slice"];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

/// Runs `body` over every file of `target`'s corpus, naming the file that
/// fails.
fn replay(target: &str, body: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for file in files {
        let data = fs::read(&file).expect("corpus file reads");
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            panic!("{target} fails on {}", file.display());
        }
    }
}

#[test]
fn frame_decode_corpus_passes() {
    replay("frame_decode", frame_decode);
}

#[test]
fn node_inputs_corpus_passes() {
    replay("node_inputs", node_inputs);
}

#[test]
fn slice_corpus_passes() {
    replay("slice", slice);
}

#[test]
fn generated_seeds_pass() {
    for (target, seeds) in seeds() {
        let body = [frame_decode, node_inputs, slice][TARGETS.iter().position(|t| *t == target).expect("known")];
        for (name, data) in seeds {
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                panic!("{target} fails on seed {name}");
            }
        }
    }
}

/// Writes the generated seeds into `fuzz/corpus/`. Ignored: run by hand
/// after the seeds (or the wire format) change, then commit the files.
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seed_corpus() {
    for (target, seeds) in seeds() {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("corpus dir");
        for (name, data) in seeds {
            fs::write(dir.join(format!("seed-{name}")), data).expect("seed written");
        }
    }
}

/// Named inputs of one target.
type Seeds = Vec<(String, Vec<u8>)>;

fn seeds() -> Vec<(&'static str, Seeds)> {
    vec![("frame_decode", frame_seeds()), ("node_inputs", node_seeds()), ("slice", slice_seeds())]
}

// ----- frame_decode: one valid frame of every kind, and a few streams -----

fn sample_messages() -> Vec<(&'static str, Message)> {
    let v4 = SocketAddr::from(([10, 0, 0, 2], 7000));
    let v6: SocketAddr = "[2001:db8::1]:9000".parse().expect("address");
    let entry = |id: NodeId, addr, instance| NodeEntry { id, incarnation: Incarnation(0), addr, instance, alive: true };
    let keys = Keys::from_slice(&[1, 1 << 63, u64::MAX]);
    let values = Values::from_slice(&[1.0f32, 2.0, 3.0]);
    let lens = Lens::from_slice(&[1, 0, 2]);
    let kv = |op, values: Values, lens: Option<Lens>| KvRequestMsg {
        app: 0,
        customer: 0,
        ts: 7,
        cmd: -1,
        op,
        keys: keys.clone(),
        values,
        lens,
        route: Default::default(),
    };
    let response = |error: Option<&str>, values: Values| KvResponseMsg {
        app: 1,
        customer: 2,
        ts: 3,
        error: error.map(str::to_owned),
        keys: Keys::default(),
        values,
        lens: None,
        part: 0,
        redirect: None,
    };
    let simple = SimpleMsg { app: 0, customer: 0, ts: 1, head: 42, body: Bytes::from_static(b"progress") };
    let push = BatchPush {
        worker: NodeId::worker(Rank(0)),
        incarnation: Incarnation(1),
        customer: (0, 0),
        ts: 7,
        floor: 6,
        tail_answers: true,
    };
    vec![
        ("register-v4", Message::Register(RegisterMsg { role: Role::Worker, listen_addr: v4, instance: 77 })),
        ("register-v6", Message::Register(RegisterMsg { role: Role::Server, listen_addr: v6, instance: 78 })),
        (
            "node-table",
            Message::NodeTable(NodeTableMsg {
                epoch: 3,
                nodes: vec![
                    entry(NodeId::server(Rank(0)), v4, 78),
                    NodeEntry { alive: false, incarnation: Incarnation(2), ..entry(NodeId::worker(Rank(0)), v6, 77) },
                ],
                generations: vec![(Group::WORKERS, 4)],
                chains: Chains::initial(&ServerRanges::equal(1), 1, 3),
            }),
        ),
        ("barrier", Message::Barrier { group: Group::ALL, generation: 5, finalize: true }),
        (
            "barrier-released",
            Message::BarrierRelease { group: Group::WORKERS, generation: 5, outcome: BarrierOutcome::Released },
        ),
        (
            "barrier-failed",
            Message::BarrierRelease {
                group: Group::SERVERS | Group::WORKERS,
                generation: 0,
                outcome: BarrierOutcome::MemberDied(NodeId::server(Rank(1))),
            },
        ),
        ("heartbeat", Message::Heartbeat { sent_at: 0 }),
        ("heartbeat-ack", Message::HeartbeatAck { epoch: 9, echo: 0 }),
        ("ack", Message::Ack { seqs: vec![12, 13] }),
        ("terminate", Message::Terminate),
        ("kv-push", Message::KvRequest(kv(KvOp::Push, values.clone(), None))),
        ("kv-pull", Message::KvRequest(kv(KvOp::Pull, Values::empty(DType::F64), None))),
        (
            "kv-push-pull-lens",
            Message::KvRequest(kv(KvOp::PushPull, Values::from_slice(&[1i64, 2, 3]), Some(lens.clone()))),
        ),
        ("kv-response", Message::KvResponse(response(None, values))),
        (
            "kv-response-lens",
            Message::KvResponse(KvResponseMsg {
                keys: keys.clone(),
                lens: Some(lens),
                ..response(None, Values::from_slice(&[1u8, 2, 3]))
            }),
        ),
        ("kv-response-refused", Message::KvResponse(response(Some("no such key"), Values::empty(DType::U8)))),
        ("simple-request", Message::SimpleRequest(simple.clone())),
        ("simple-response", Message::SimpleResponse(SimpleMsg { head: -1, body: Bytes::new(), ..simple })),
        (
            "replicate",
            Message::Replicate(ReplicateMsg {
                range: 1,
                epoch: 4,
                seq: 2,
                app: 0,
                pushes: vec![push],
                keys: keys.clone(),
                values: Values::from_slice(&[0.5f32, 1.5, 2.5]),
                lens: None,
            }),
        ),
        ("committed", Message::Committed { range: 1, seq: 2 }),
        ("resend-from", Message::ResendFrom { range: 1, seq: 3 }),
        (
            "transfer-chunk",
            Message::Transfer(TransferMsg {
                range: 0,
                source: 5,
                stream: 1,
                item: 1,
                seq: 0,
                chunk: Some(ChunkEnd { through: 17, last: true }),
                app: 0,
                pushes: vec![(push, 2)],
                keys,
                values: Values::from_slice(&[2.0f32, 3.0, 4.0]),
                lens: None,
            }),
        ),
        ("learned", Message::Learned { range: 0, start: 6, stream: 1, item: 1, resend: false }),
        ("caught-up", Message::CaughtUp { range: 0, source: 5, learner: Incarnation(2) }),
    ]
}

fn encoded(message: &Message, sender: NodeId) -> Vec<u8> {
    let envelope = Envelope {
        sender,
        incarnation: Incarnation(1),
        receiver: NodeId::SCHEDULER,
        receiver_incarnation: Incarnation(0),
        seq: 3,
    };
    message.encode(envelope).to_bytes().to_vec()
}

/// `setting` as `frame_decode` reads it: `frame_len_max` choice in the top
/// two bits, the largest chunk in the low six (0: all at once).
fn frame_input(setting: u8, chunk_seed: u8, stream: &[u8]) -> Vec<u8> {
    let mut input = vec![setting, chunk_seed];
    input.extend_from_slice(stream);
    input
}

fn frame_seeds() -> Seeds {
    let messages = sample_messages();
    let mut seeds: Vec<(String, Vec<u8>)> = messages
        .iter()
        .map(|(name, message)| (name.to_string(), frame_input(0, 0, &encoded(message, NodeId::worker(Rank(0))))))
        .collect();
    // Every frame back to back, cut into chunks of 1..=7 bytes.
    let stream: Vec<u8> = messages.iter().flat_map(|(_, m)| encoded(m, NodeId::SCHEDULER)).collect();
    seeds.push(("stream-chunked".to_owned(), frame_input(7, 1, &stream)));
    // Two frames, the second announcing more than a small cap allows.
    let mut two = encoded(&Message::Heartbeat { sent_at: 0 }, NodeId::server(Rank(0)));
    two.extend(encoded(&messages[2].1, NodeId::SCHEDULER));
    seeds.push(("over-cap".to_owned(), frame_input(0x80 | 5, 2, &two)));
    // A header alone, its body never arriving.
    let kv = encoded(&messages[10].1, NodeId::worker(Rank(0)));
    seeds.push(("truncated".to_owned(), frame_input(3, 3, &kv[..HEADER_LEN + 4])));
    seeds
}

// ----- node_inputs: scripts that walk the nodes through the protocol -----

const SCHEDULER: u8 = 0;
const SERVER: u8 = 1;
const WORKER: u8 = 2;

/// Writes node_inputs decisions by name. Each choice is one byte; see
/// `fuzzing::node_inputs` for the order in which actions read them.
struct Script(Vec<u8>);

impl Script {
    /// A cluster of `servers` and `workers` (1 or 2 each), failing barriers
    /// on death.
    fn new(servers: u8, workers: u8) -> Self {
        Self(vec![servers - 1, workers - 1, 0])
    }

    fn act(mut self, target: u8, action: Action, choices: &[u8]) -> Self {
        let index = ACTIONS.iter().position(|a| *a == action).expect("action in table");
        self.0.extend([target, index as u8]);
        self.0.extend_from_slice(choices);
        self
    }

    /// Delivers the oldest frame in flight to its addressee, `times` times.
    fn deliver(mut self, times: usize) -> Self {
        for _ in 0..times {
            self = self.act(SCHEDULER, Action::Network, &[0, 3, 0]);
        }
        self
    }

    /// The scheduler gets every registration, then the network runs.
    fn form(self) -> Self {
        self.act(SCHEDULER, Action::MakeReady, &[]).deliver(10)
    }

    /// A push of `values` (f32, one per key) to keys `1` and `u64::MAX`.
    fn push(self, values: [u8; 2]) -> Self {
        // worker; customer 0; cmd 0; sorted; two keys: 0+1 and MAX+0;
        // f32; one per key; no lens; no extra value; values; push.
        let mut choices = vec![1, 0, 0, 1, 2, 0, 1, 2, 2, 0, 2, 0, 0, 1, 1];
        choices.extend(values);
        choices.push(0);
        self.act(WORKER, Action::Kv, &choices)
    }

    /// A pull of keys `1` and `u64::MAX` as f32.
    fn pull(self) -> Self {
        self.act(WORKER, Action::Kv, &[1, 0, 0, 1, 2, 0, 1, 2, 2, 0, 2, 0, 0, 1, 1, 0, 0, 1])
    }

    /// A push_pull with lengths `[1, 2]` for keys `1` and `u64::MAX`.
    fn push_pull_variable(self) -> Self {
        // worker; customer 0; cmd 0; sorted; two keys; f32; one per key;
        // lens: yes, [1, 2] (no count override); values add up; 3 values;
        // push_pull.
        let choices = [1, 0, 0, 1, 2, 0, 1, 2, 2, 0, 2, 0, 0, 0, 0, 1, 1, 3, 1, 1, 2, 3, 2];
        self.act(WORKER, Action::Kv, &choices)
    }

    /// The server answers its oldest request with the default store.
    fn serve(self) -> Self {
        self.act(SERVER, Action::Answer, &[0, 0, 1])
    }

    fn advance(self, step: u8) -> Self {
        self.act(SCHEDULER, Action::Advance, &[step])
    }
}

/// A script, and whether a run's summary shows it reached its goal.
type NodeScript = (&'static str, Vec<u8>, fn(&Summary) -> bool);

/// Each script with the state it must reach.
fn node_scripts() -> Vec<NodeScript> {
    let ready = |s: &Summary| s.phases.iter().all(|p| *p == Phase::Ready);
    vec![
        ("cluster-forms", Script::new(1, 1).form().0, ready),
        ("cluster-forms-2x2", Script::new(2, 2).form().0, ready),
        (
            "push-then-pull",
            Script::new(1, 1).form().push([3, 4]).deliver(6).serve().deliver(6).pull().deliver(6).serve().deliver(6).0,
            |s| s.count("RequestDone") == 1 && s.count("PullDone") == 1,
        ),
        (
            "barrier-all",
            {
                let script = Script::new(1, 1).form();
                let script = script.act(SCHEDULER, Action::Barrier, &[0]).act(SERVER, Action::Barrier, &[0]);
                script.act(WORKER, Action::Barrier, &[0]).deliver(12).0
            },
            |s| s.count("BarrierReleased") == 3,
        ),
        (
            "finalize-all",
            {
                let script = Script::new(1, 1).form();
                let script = script.act(SCHEDULER, Action::Finalize, &[]).act(SERVER, Action::Finalize, &[]);
                script.act(WORKER, Action::Finalize, &[]).deliver(12).0
            },
            |s| s.phases.iter().all(|p| *p == Phase::Terminated),
        ),
        (
            "simple-to-scheduler",
            {
                // customer 0, head 5, empty body, to group SCHEDULER (index 3).
                let script = Script::new(1, 1).form().act(WORKER, Action::Simple, &[0, 5, 0, 1, 3]).deliver(4);
                script.act(SCHEDULER, Action::Answer, &[1, 0, 1, 0]).deliver(4).0
            },
            |s| s.count("SimpleDone") == 1,
        ),
        (
            "server-silent-dies",
            {
                // Heartbeats pile up undelivered: the scheduler declares the
                // server and the worker dead, they give up on the scheduler.
                Script::new(1, 1).form().push([1, 1]).advance(4).advance(4).0
            },
            |s| s.count("NodeDead") >= 2 && s.count("RequestFailed") == 1,
        ),
        (
            "push-pull-variable-lengths",
            Script::new(1, 1).form().push_pull_variable().deliver(6).serve().deliver(6).0,
            |s| s.count("PullDone") == 1,
        ),
        (
            "push-across-two-servers",
            {
                // Server 10 is invented: its answer is a structured
                // KvResponse (open request 0, no error, no values, no
                // lens, no keys) from id 10, incarnation 0.
                let script = Script::new(2, 1).form().push([1, 2]).deliver(6).serve().deliver(6);
                script.act(WORKER, Action::Message, &[9, 1, 0, 0, 0, 1, 2, 0, 0, 1, 1, 5, 1, 0, 0, 0]).0
            },
            |s| s.count("RequestDone") == 1,
        ),
        (
            "barrier-member-dies",
            {
                let script = Script::new(1, 1).form().act(SCHEDULER, Action::Barrier, &[0]);
                script.act(WORKER, Action::Barrier, &[0]).deliver(6).advance(4).advance(4).0
            },
            |s| s.count("BarrierFailed") >= 1,
        ),
        (
            "finalize-with-a-push-pending",
            {
                let script = Script::new(1, 1).form().push([1, 1]).deliver(2);
                let script = script.act(SCHEDULER, Action::Finalize, &[]).act(SERVER, Action::Finalize, &[]);
                script.act(WORKER, Action::Finalize, &[]).deliver(16).0
            },
            |s| s.phases.iter().all(|p| *p == Phase::Terminated) && s.count("RequestFailed") == 1,
        ),
        (
            "simple-to-everyone",
            {
                let script = Script::new(1, 1).form().act(WORKER, Action::Simple, &[0, 7, 2, 1, 2, 1, 0]).deliver(6);
                let script =
                    script.act(SCHEDULER, Action::Answer, &[1, 0, 1, 0]).act(SERVER, Action::Answer, &[1, 0, 1, 0]);
                script.act(WORKER, Action::Answer, &[1, 0, 1, 0]).deliver(6).0
            },
            |s| s.count("SimpleDone") == 1 && s.count("SimpleRequest") == 3,
        ),
        (
            "garbage-then-cluster",
            {
                // Five raw bytes; a KvRequest header from the scheduler over
                // a four-byte body; an empty frame.
                let script = Script::new(1, 1).act(SCHEDULER, Action::RawFrame, &[5, 1, 1, 2, 3, 4, 5]);
                let script = script.act(SERVER, Action::RawFrame, &[4, 0, 1, 2, 3, 4, 8, 1, 0]);
                script.act(WORKER, Action::RawFrame, &[0, 1]).form().0
            },
            ready,
        ),
        (
            "worker-restarts",
            {
                let script = Script::new(1, 1).form().advance(2);
                let script = script.act(WORKER, Action::Restart, &[9]).advance(4).advance(4).advance(4);
                script.deliver(16).0
            },
            |s| s.count("NodeRecovered") > 0,
        ),
    ]
}

fn node_seeds() -> Seeds {
    node_scripts().into_iter().map(|(name, data, _)| (name.to_owned(), data)).collect()
}

#[test]
fn node_seed_scripts_reach_their_states() {
    for (name, data, reached) in node_scripts() {
        let summary = run(&data);
        assert!(reached(&summary), "seed {name} ended at {summary:?}");
    }
}

// ----- slice: lists that pass the checks, and each kind of misuse -----

fn slice_seeds() -> Seeds {
    // Read by `fuzzing::slice`: servers-1, explicit ranges?, key count,
    // per key (base, offset, how), sort?, dedup?, dtype, lens mode, value
    // mode [, value bytes], then parts to merge, each a list read the same
    // way.
    let key = |base: u8, offset: u8| [base, offset, 0];
    let seed = |name: &str, parts: &[&[u8]]| (name.to_owned(), parts.concat());
    let part_with_lens = [&[2u8][..], &key(0, 1), &key(4, 0), &[1, 1, 0, 0, 1, 2, 0], &[3; 12]].concat();
    let part_uniform = [&[1u8][..], &key(0, 9), &[1, 1, 0, 2, 1, 1], &[4; 8]].concat();
    vec![
        // 3 equal servers, keys 0 and MAX, f32, one value each.
        seed("two-keys-three-servers", &[&[2, 0, 2], &key(0, 0), &key(4, 0), &[1, 1, 0, 2, 1, 0], &[0; 8], &[0]]),
        // Explicit boundaries near 2^63, keys around them, lens 0..3.
        seed(
            "explicit-ranges-lens",
            &[
                &[3, 1],
                &key(1, 1),
                &key(1, 2),
                &key(3, 5),
                &key(0, 0),
                &[3],
                &key(1, 0),
                &key(1, 1),
                &key(4, 0),
                &[1, 1, 4, 0, 1, 2, 3, 0, 7, 7, 7, 7, 7, 7, 0],
            ],
        ),
        // Unsorted keys: a clean UnsortedKeys.
        seed("unsorted", &[&[0, 0, 2], &key(4, 0), &key(0, 0), &[0, 0, 0, 2, 2, 0]]),
        // Duplicate keys kept: a clean DuplicateKey.
        seed("duplicate", &[&[0, 0, 2], &key(0, 3), &key(0, 3), &[1, 0, 0, 2, 2, 0]]),
        // Lens that do not add up to the values.
        seed("lens-mismatch", &[&[1, 0, 1], &key(2, 0), &[1, 1, 0, 0, 3, 2, 0]]),
        // Nothing at all.
        seed("empty", &[&[0, 0, 0, 0, 0, 2, 2, 0]]),
        // Values but no keys: a clean LengthMismatch.
        seed("values-without-keys", &[&[0, 0, 0, 0, 0, 2, 3, 4], &[1; 16], &[0]]),
        // 64 equal servers, pairs of neighbouring keys at a third, a half
        // (on both sides of the boundary at 2^63) and two thirds of the key
        // space; f64, two values per key.
        seed(
            "neighbours-among-64-servers",
            &[
                &[63, 0, 6],
                &key(2, 0),
                &key(2, 1),
                &key(1, 0),
                &key(1, 1),
                &key(3, 0),
                &key(3, 1),
                &[1, 1, 1, 2, 1, 1],
                &[9; 96],
                &[0],
            ],
        ),
        // A valid one-key list, then two arbitrary parts to merge: keys 1
        // and MAX with lens [1, 2], and key 9 with two values.
        seed(
            "merge-mixed-parts",
            &[&[0, 0, 1], &key(0, 7), &[1, 1, 0, 2, 1, 0], &[1; 4], &[2], &part_with_lens, &part_uniform],
        ),
    ]
}

// ----- regressions: bugs the targets found -----

/// A refused `KvResponse` frame for `reason`, with `tweak` applied to its
/// body (offsets relative to the body: cmd slot 12..16, dtype 17).
fn refused_response(reason: &str, tweak: impl FnOnce(&mut [u8])) -> Result<Message, DecodeError> {
    let message = Message::KvResponse(KvResponseMsg {
        app: 1,
        customer: 2,
        ts: 3,
        error: Some(reason.to_owned()),
        keys: Keys::default(),
        values: Values::empty(DType::U8),
        lens: None,
        part: 0,
        redirect: None,
    });
    let mut frame = encoded(&message, NodeId::server(Rank(0)));
    tweak(&mut frame[HEADER_LEN..]);
    let frame = Bytes::from(frame);
    let header = Header::decode(&frame, config::FRAME_LEN_MIN)?;
    Message::decode(&header, &frame)
}

#[test]
fn kv_response_with_a_command_in_its_unused_slot_is_refused() {
    // Found by frame_decode: the slot was ignored, so two byte strings
    // decoded to one message (corpus: regression-kv-response-cmd-slot).
    assert!(refused_response("no such key", |_| {}).is_ok());
    let decoded = refused_response("no such key", |body| body[16 + 14] = 3);
    assert_eq!(decoded, Err(DecodeError::ReservedNotZero));
}

#[test]
fn kv_response_reason_that_is_not_utf8_is_refused_not_altered() {
    // Found by frame_decode: invalid UTF-8 was replaced by U+FFFD, so the
    // application saw another reason than the server sent (corpus:
    // regression-kv-response-lossy-reason).
    let decoded = refused_response("no such key", |body| body.last_chunk_mut::<2>().expect("reason").fill(0xbf));
    assert_eq!(decoded, Err(DecodeError::InvalidField { field: "kv error text", value: 9 }));
}

#[test]
fn kv_response_reason_of_another_dtype_is_refused() {
    // Same family: the dtype of a reason was ignored (corpus:
    // regression-kv-response-reason-dtype).
    let decoded = refused_response("refused!", |body| body[16 + 17] = DType::F32.to_wire());
    assert_eq!(decoded, Err(DecodeError::InvalidField { field: "kv error dtype", value: 0 }));
}

#[test]
fn node_takes_no_id_of_another_role() {
    // Found by node_inputs: a node found itself in the scheduler's table by
    // process instance alone, so a table listing a server's instance under
    // a worker id (a forged or mixed-up registration) made the server a
    // worker-numbered server (corpus: regression-id-of-another-role).
    let scheduler = SocketAddr::from(([10, 0, 0, 1], 7000));
    let config = Config::builder(Role::Server, scheduler).build().expect("config");
    let mut server = Node::new(config, 5, Instant::ZERO);
    let sent = server.poll_transmit().expect("registration").frame.to_bytes();
    let header = Header::decode(&sent, config::FRAME_LEN_MIN).expect("header");
    let Ok(Message::Register(register)) = Message::decode(&header, &sent) else {
        panic!("a new node first registers");
    };
    let table = |id: NodeId, epoch| {
        let entry =
            NodeEntry { id, incarnation: Incarnation(0), addr: scheduler, instance: register.instance, alive: true };
        let envelope = Envelope {
            sender: NodeId::SCHEDULER,
            incarnation: Incarnation(0),
            receiver: id,
            receiver_incarnation: Incarnation(0),
            seq: 0,
        };
        Message::NodeTable(NodeTableMsg {
            epoch,
            nodes: vec![entry],
            generations: Vec::new(),
            chains: Chains::default(),
        })
        .encode(envelope)
        .to_bytes()
    };
    server.handle_frame(Instant::ZERO, table(NodeId::worker(Rank(0)), 1)).expect("table decodes");
    assert_eq!((server.phase(), server.id()), (Phase::Registering, NodeId::UNASSIGNED));
    server.handle_frame(Instant::ZERO, table(NodeId::server(Rank(0)), 2)).expect("table decodes");
    assert_eq!((server.phase(), server.id()), (Phase::Ready, NodeId::server(Rank(0))));
}
