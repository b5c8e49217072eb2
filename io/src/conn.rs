//! Per-connection tasks: a reader that cuts frames out of the stream, and a
//! writer that batches frames into vectored writes.
//!
//! Connections are one-way: a node writes to a peer over the connection it
//! opened, and reads what peers send over connections they opened. The
//! sender's identity is in every frame header, so nothing needs to be
//! learnt from the connection itself, and the two directions never contend.
//!
//! Readers are spawned by the accept loop (`start`) and share their node's
//! count of spare buffers; writers are spawned by the driver, which hands
//! them frames through a [`Writer`]. Both report to the driver only with
//! the messages in `msg`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pslite_core::recycle::{Recycler, SPARE_BYTES_MIN};
use pslite_core::{Frame, FrameDecoder};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::handshake;
use crate::msg::{Inbound, Outgoing};

/// Bytes read per `read` call at least (grows to fit a large frame).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Parts smaller than this are copied into one staging buffer so a batch of
/// small frames leaves in one write; larger parts are written in place.
const COPY_PART_BYTES_MAX: usize = 16 * 1024;
/// At most this many bytes are gathered into one batch.
const BATCH_BYTES_MAX: usize = 4 << 20;
/// At most this many frames go into one batch.
const BATCH_FRAMES_MAX: usize = 1024;
/// How long a new connection may take to present its hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Frames queued per outbound connection before the driver waits.
pub(crate) const WRITE_QUEUE_FRAMES: usize = 4096;

/// Reads frames from an accepted connection until it closes or misbehaves.
pub(crate) async fn read_loop(
    mut stream: TcpStream,
    peer: SocketAddr,
    token: Option<String>,
    frame_len_max: u32,
    inbound: mpsc::Sender<Inbound>,
    spares: ReaderSpares,
) {
    // A peer that connects and says nothing must not hold a task forever.
    match tokio::time::timeout(HELLO_TIMEOUT, handshake::expect_hello(&mut stream, token.as_deref())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%peer, %error, "refused connection");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "refused connection: no hello within {HELLO_TIMEOUT:?}");
            return;
        }
    }
    let mut decoder = FrameDecoder::new(frame_len_max);
    let mut buffer = ReadBuffer::new(spares);
    loop {
        let buf = &mut buffer.buf;
        // Every frame this read completed goes to the driver in one
        // message: one queue operation and at most one wake-up per read,
        // however many small frames it held.
        let mut frames = Vec::new();
        let mut failed = None;
        loop {
            if frames.len() == BATCH_FRAMES_MAX {
                // The driver handles about this many frames per wake-up.
                if inbound.send(Inbound::Frames(std::mem::take(&mut frames))).await.is_err() {
                    return;
                }
            }
            match decoder.decode(buf) {
                Ok(Some((_, frame))) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        if !frames.is_empty() && inbound.send(Inbound::Frames(frames)).await.is_err() {
            return;
        }
        if let Some(error) = failed {
            tracing::warn!(%peer, %error, "closing connection after a bad frame");
            return;
        }
        let wanted = read_room(&decoder, buf.len());
        buffer.reserve(wanted);
        let ready = tokio::select! {
            ready = stream.readable() => ready,
            // The node is gone: drop the connection rather than linger.
            () = inbound.closed() => return,
        };
        // As in the writer: let ready tasks run first, so under load one
        // read (and one message to the driver) takes more frames.
        tokio::task::yield_now().await;
        // Nor past what was reserved: a recycled buffer may have room for
        // more, all of which the next `reserve` would copy.
        let read = ready.and_then(|()| stream.try_read_buf(&mut (&mut buffer.buf).limit(wanted)));
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => {
                tracing::debug!(%peer, %error, "read failed");
                return;
            }
        }
    }
}

/// Bytes to reserve and then read at most, with `buffered` bytes of the
/// frame being assembled in the buffer. A frame of a recycled size (a
/// MiB or more) gets exactly its rest, in a buffer sized for it, so it is
/// never moved while the rest arrives and no read runs into the next.
/// Reserving a chunk *at least* instead copied nearly all of a large frame
/// into new memory whenever a read ended in its last chunk: measured, a
/// quarter as costly as the kernel's own copy on 4 MiB pushes; and a chunk
/// *more* (reading into the next frame) ran 4 MiB pushes at 0.80-0.93x raw
/// TCP against 1.02-1.26x. Smaller frames get their rest and a chunk more,
/// so one read takes many (reading only their rest cost a `read` per frame:
/// 64 KiB pulls fell from about 1x raw TCP to 0.8x); what moves to the next
/// buffer is the start of the next frame, a chunk at most.
fn read_room(decoder: &FrameDecoder, buffered: usize) -> usize {
    let missing = decoder.bytes_wanted(buffered);
    if decoder.bytes_wanted(0) >= SPARE_BYTES_MIN {
        missing
    } else {
        missing + READ_CHUNK_BYTES
    }
}

/// A reader's buffer. Frames are cut out of it without a copy, so while
/// one lives its memory cannot be written again and a large frame needs
/// new memory; a [`Recycler`] serves earlier buffers whose frames are all
/// dropped, instead of asking the allocator (and the kernel) afresh.
struct ReadBuffer {
    buf: BytesMut,
    /// Bytes allocated for `buf` (what it can hold when reused).
    size: usize,
    recycler: Recycler,
    /// The node's count, which `recycler`'s spares are part of.
    spares: ReaderSpares,
}

/// Bytes the readers of one node may keep as spares together: each keeps
/// up to four buffers of up to 8 MiB, which over a hundred connections
/// would be gigabytes held idle. A reader that would take its node's total
/// past this lets its spares go. Nodes do not share it: each node in a
/// process may hold this much.
const READER_SPARE_BYTES_MAX: usize = 256 << 20;

/// Bytes the readers of one node keep as spares now. Each node makes one
/// at start-up and its accept loop gives every reader a clone, so nodes in
/// one process (a `LocalCluster`, a test) never use up each other's room.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReaderSpares(Arc<AtomicUsize>);

impl ReaderSpares {
    /// Moves one reader's part of the count from `from` bytes to `to`;
    /// returns the new total.
    fn recount(&self, from: usize, to: usize) -> usize {
        if to >= from {
            self.0.fetch_add(to - from, Ordering::Relaxed) + (to - from)
        } else {
            self.0.fetch_sub(from - to, Ordering::Relaxed) - (from - to)
        }
    }
}

impl ReadBuffer {
    fn new(spares: ReaderSpares) -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            size: READ_CHUNK_BYTES,
            recycler: Recycler::default(),
            spares,
        }
    }

    /// Makes room for `wanted` more bytes after what the buffer holds.
    fn reserve(&mut self, wanted: usize) {
        if self.buf.try_reclaim(wanted) {
            return;
        }
        let held = self.recycler.held_bytes();
        let (mut next, size) = self.recycler.take(self.buf.len() + wanted);
        // The start of the next frame, already read (at most one read).
        next.extend_from_slice(&self.buf);
        let previous = std::mem::replace(&mut self.buf, next);
        let previous_size = std::mem::replace(&mut self.size, size);
        self.recycler.keep(previous, previous_size);
        let now_held = self.recycler.held_bytes();
        if self.spares.recount(held, now_held) > READER_SPARE_BYTES_MAX {
            self.spares.recount(now_held, 0);
            self.recycler.clear();
        }
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        self.spares.recount(self.recycler.held_bytes(), 0);
    }
}

/// The driver's end of one outbound connection.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Outgoing>,
    /// Frames queued and not yet written: the backpressure bound.
    room: Arc<Semaphore>,
}

impl Writer {
    /// Spawns the writer task for `addr`.
    pub(crate) fn spawn(
        addr: SocketAddr,
        token: Option<String>,
        inbound: mpsc::Sender<Inbound>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(WRITE_QUEUE_FRAMES));
        let task = tokio::spawn(write_loop(addr, token, rx, Arc::clone(&room), inbound));
        (Self { queue, room }, task)
    }

    /// Whether the writer has stopped (its connection failed or closed).
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Queues `frames`, first waiting for room for each part of at most a
    /// batch's worth: a slow peer slows its sender, and the queue never
    /// holds more than `WRITE_QUEUE_FRAMES` frames. False if the writer
    /// has stopped.
    pub(crate) async fn send(&self, mut frames: Vec<Frame>) -> bool {
        while !frames.is_empty() {
            // The common case, a drain of at most a batch, goes as it is.
            let rest = if frames.len() > BATCH_FRAMES_MAX { frames.split_off(BATCH_FRAMES_MAX) } else { Vec::new() };
            let part = std::mem::replace(&mut frames, rest);
            let wanted = u32::try_from(part.len()).expect("a batch's frames fit u32");
            let Ok(room) = Arc::clone(&self.room).acquire_many_owned(wanted).await else {
                return false;
            };
            if self.queue.send(Outgoing { frames: part, room }).is_err() {
                return false;
            }
        }
        true
    }
}

/// Connects to `addr` and writes every frame from `queue` until the
/// channel closes (then flushes) or the connection fails (then reports it).
async fn write_loop(
    addr: SocketAddr,
    token: Option<String>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    room: Arc<Semaphore>,
    inbound: mpsc::Sender<Inbound>,
) {
    let result = async {
        let mut stream = crate::socket::connect(addr).await?;
        handshake::send_hello(&mut stream, token.as_deref()).await?;
        let mut batch = Batch::default();
        while let Some(outgoing) = queue.recv().await {
            batch.add(outgoing);
            // Let the tasks that are ready run first: under load they queue
            // more frames, and one write carries them all (a write costs
            // the same for one small frame as for many). When nothing else
            // is ready this returns at once, so an idle link adds no delay.
            tokio::task::yield_now().await;
            while batch.len_bytes() < BATCH_BYTES_MAX && batch.frames < BATCH_FRAMES_MAX {
                match queue.try_recv() {
                    Ok(outgoing) => batch.add(outgoing),
                    Err(_) => break,
                }
            }
            batch.write_to(&mut stream).await?;
        }
        stream.shutdown().await?;
        Ok::<(), std::io::Error>(())
    }
    .await;
    // Whatever happened, the driver must never wait on this queue again: a
    // driver blocked for room wakes up and sees the writer is gone.
    room.close();
    queue.close();
    if let Err(error) = result {
        tracing::debug!(%addr, %error, "connection lost");
        // Best effort: a full inbound queue must not block this task; the
        // driver also notices the closed queue on its next send.
        let _ = inbound.try_send(Inbound::LinkLost(addr));
    }
}

/// Where the bytes of one vectored write come from, in order.
enum Segment {
    /// A range of the staging buffer (small parts, copied together).
    Staged(std::ops::Range<usize>),
    /// A large part, written in place.
    Shared(Bytes),
}

/// Frames gathered for one vectored write. The staging buffer is kept
/// between writes, so a stream of small frames allocates nothing.
#[derive(Default)]
struct Batch {
    staging: Vec<u8>,
    /// Bytes of `staging` not yet cut into a segment start here.
    staged_from: usize,
    segments: VecDeque<Segment>,
    shared_bytes: usize,
    frames: usize,
    /// Queue room of the frames gathered, released once they are written.
    rooms: Vec<OwnedSemaphorePermit>,
}

impl Batch {
    fn add(&mut self, outgoing: Outgoing) {
        for frame in &outgoing.frames {
            self.add_frame(frame);
        }
        self.rooms.push(outgoing.room);
    }

    fn add_frame(&mut self, frame: &Frame) {
        self.frames += 1;
        self.staging.extend_from_slice(&frame.header);
        for part in &frame.parts {
            if part.len() <= COPY_PART_BYTES_MAX {
                self.staging.extend_from_slice(part);
            } else {
                self.cut_staged();
                self.shared_bytes += part.len();
                self.segments.push_back(Segment::Shared(part.clone()));
            }
        }
    }

    fn cut_staged(&mut self) {
        if self.staging.len() > self.staged_from {
            self.segments.push_back(Segment::Staged(self.staged_from..self.staging.len()));
            self.staged_from = self.staging.len();
        }
    }

    fn len_bytes(&self) -> usize {
        self.staging.len() + self.shared_bytes
    }

    async fn write_to(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        self.cut_staged();
        while !self.segments.is_empty() {
            let staging = &self.staging;
            let slices: Vec<IoSlice<'_>> = self
                .segments
                .iter()
                .take(64)
                .map(|segment| match segment {
                    Segment::Staged(range) => IoSlice::new(&staging[range.clone()]),
                    Segment::Shared(bytes) => IoSlice::new(bytes),
                })
                .collect();
            let mut written = stream.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let front = self.segments.front_mut().expect("written bytes come from segments");
                let left = match front {
                    Segment::Staged(range) => {
                        let n = written.min(range.len());
                        range.start += n;
                        written -= n;
                        range.len()
                    }
                    Segment::Shared(bytes) => {
                        let n = written.min(bytes.len());
                        bytes.advance(n);
                        written -= n;
                        bytes.len()
                    }
                };
                if left == 0 {
                    self.segments.pop_front();
                }
            }
        }
        // Keep the staging buffer's memory for the next batch, unless one
        // huge batch grew it: then give that back.
        self.staging.clear();
        if self.staging.capacity() > 2 * BATCH_BYTES_MAX {
            self.staging = Vec::new();
        }
        self.staged_from = 0;
        self.shared_bytes = 0;
        self.frames = 0;
        self.rooms.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills the buffer with `n` bytes counting from `from`.
    fn fill(buffer: &mut ReadBuffer, from: usize, n: usize) {
        buffer.buf.extend((from..from + n).map(|i| i as u8));
    }

    #[test]
    fn a_buffer_serves_again_once_its_frames_are_dropped_and_pending_bytes_survive() {
        // Reads never go past the room reserved, so neither does `fill`.
        let frame_len = 2 << 20;
        let mut buffer = ReadBuffer::new(ReaderSpares::default());
        buffer.reserve(frame_len + 100);
        fill(&mut buffer, 0, frame_len + 100);
        let first = buffer.buf.split_to(frame_len).freeze();
        let first_memory = first.as_ptr();

        // The first frame is alive: new memory, and the 100 bytes read of
        // the next frame come along.
        buffer.reserve(frame_len - 100 + 7);
        assert_ne!(buffer.buf.as_ptr(), first_memory);
        assert!(buffer.buf.iter().copied().eq((frame_len..frame_len + 100).map(|i| i as u8)));
        fill(&mut buffer, frame_len + 100, frame_len - 100 + 7);
        let second = buffer.buf.split_to(frame_len).freeze();
        assert!(second.iter().copied().eq((frame_len..2 * frame_len).map(|i| i as u8)));

        // The second frame is alive but the first is gone: its memory
        // serves the third, with the 7 bytes already read moved to its start.
        drop(first);
        buffer.reserve(frame_len - 7);
        assert_eq!(buffer.buf.as_ptr(), first_memory);
        assert!(buffer.buf.iter().copied().eq((2 * frame_len..2 * frame_len + 7).map(|i| i as u8)));
        drop(second);
    }

    /// A large frame read in pieces, the last one shorter than a chunk,
    /// lands in one buffer and is never moved: a reader that reserved a
    /// chunk at least for that last piece copied the frame into new memory.
    #[test]
    fn a_large_frame_read_in_pieces_is_not_moved_and_small_frames_read_a_chunk() {
        use pslite_core::kv::{Keys, Values};
        use pslite_core::wire::message::Envelope;
        use pslite_core::wire::{KvRequestMsg, Message};
        use pslite_core::{Incarnation, KvOp, NodeId, Rank};

        let envelope = Envelope {
            sender: NodeId::worker(Rank(0)),
            incarnation: Incarnation(0),
            receiver: NodeId::server(Rank(0)),
            receiver_incarnation: Incarnation(0),
            seq: 1,
        };
        let values: Vec<f32> = (0..(2 << 20) / 4).map(|i| i as f32).collect();
        let push = Message::KvRequest(KvRequestMsg {
            app: 0,
            customer: 0,
            ts: 1,
            cmd: 0,
            op: KvOp::Push,
            keys: Keys::from_slice(&[7]),
            values: Values::from_slice(&values),
            lens: None,
            route: Default::default(),
        });
        let large = push.encode(envelope).to_bytes();
        let small = Message::Heartbeat { sent_at: 0 }.encode(Envelope { seq: 2, ..envelope }).to_bytes();
        let stream = [&large[..], &small[..]].concat();

        // The peer's writes as the reader sees them: the last piece of the
        // large frame is far shorter than a chunk.
        let tail = 1000;
        let mut pieces = [READ_CHUNK_BYTES, large.len() - READ_CHUNK_BYTES - tail].into_iter();
        let mut decoder = FrameDecoder::new(u32::MAX);
        let mut buffer = ReadBuffer::new(ReaderSpares::default());
        let (mut rest, mut frames, mut homes) = (&stream[..], Vec::new(), Vec::new());
        loop {
            while let Some((_, frame)) = decoder.decode(&mut buffer.buf).expect("frames we encoded decode") {
                frames.push(frame);
            }
            if rest.is_empty() {
                break;
            }
            let room = read_room(&decoder, buffer.buf.len());
            buffer.reserve(room);
            if frames.is_empty() && !buffer.buf.is_empty() {
                // Where the large frame lies, from the moment its size is known.
                homes.push(buffer.buf.as_ptr());
            }
            let n = room.min(pieces.next().unwrap_or(usize::MAX)).min(rest.len());
            buffer.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(frames, [large, small]);
        assert_eq!(homes.len(), 2, "the large frame took two more reads");
        assert!(homes.iter().all(|&home| home == frames[0].as_ptr()), "the large frame was moved");
        // With no frame pending, a reader reads a chunk at least.
        assert!(read_room(&FrameDecoder::new(u32::MAX), 0) >= READ_CHUNK_BYTES);
    }

    #[test]
    fn small_and_huge_buffers_are_not_kept() {
        let mut buffer = ReadBuffer::new(ReaderSpares::default());
        fill(&mut buffer, 0, 10);
        let small = buffer.buf.split_to(10).freeze();
        let huge_len = pslite_core::recycle::SPARE_BYTES_MAX * 2;
        buffer.reserve(huge_len);
        assert!(buffer.recycler.is_empty(), "the first, small buffer is not kept");
        fill(&mut buffer, 0, huge_len);
        let huge = buffer.buf.split_to(huge_len).freeze();
        // The huge frame holds its buffer: new memory, and the huge buffer
        // is let go rather than kept.
        buffer.reserve(huge_len);
        assert_ne!(buffer.buf.as_ptr(), huge.as_ptr());
        assert!(buffer.recycler.is_empty(), "a huge buffer is not kept");
        drop((small, huge));
    }

    /// Whether a reader on `spares` keeps a spare: reads a large frame,
    /// and while it lives reads the next, which leaves the first buffer
    /// spare. Returns whether it was kept, and the count while it was.
    fn keeps_a_spare(spares: &ReaderSpares) -> (bool, usize) {
        let frame_len = 2 << 20;
        let mut buffer = ReadBuffer::new(spares.clone());
        buffer.reserve(frame_len);
        fill(&mut buffer, 0, frame_len);
        let frame = buffer.buf.split_to(frame_len).freeze();
        buffer.reserve(frame_len);
        let counted = spares.0.load(Ordering::Relaxed);
        let kept = !buffer.recycler.is_empty();
        drop((buffer, frame));
        (kept, counted)
    }

    #[test]
    fn the_spare_room_is_per_node() {
        // One node's readers hold all the spares they may...
        let full = ReaderSpares::default();
        full.recount(0, READER_SPARE_BYTES_MAX);
        let (kept, counted) = keeps_a_spare(&full);
        assert!(!kept, "a spare past the node's room is let go");
        assert_eq!(counted, READER_SPARE_BYTES_MAX);
        // ...and a reader of another node keeps its spare all the same.
        let other = ReaderSpares::default();
        let (kept, counted) = keeps_a_spare(&other);
        assert!(kept, "another node's readers have their own room");
        assert!(counted > 0 && counted <= pslite_core::recycle::SPARE_BYTES_MAX, "{counted}");
        // A reader that ends takes its spares off its node's count.
        assert_eq!(other.0.load(Ordering::Relaxed), 0);
        assert_eq!(full.0.load(Ordering::Relaxed), READER_SPARE_BYTES_MAX);
    }

    /// A peer that stops reading holds up its sender: the driver's queue to
    /// it takes at most `WRITE_QUEUE_FRAMES` frames however they are
    /// handed over, so a send of many more never completes. (A slow
    /// machine can only make the send look more blocked, never less.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_never_reads_holds_up_a_send_of_many_frames() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, wait_done) = tokio::sync::oneshot::channel::<()>();
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = wait_done.await;
            drop(stream);
        });
        let (inbound, _inbound_rx) = mpsc::channel(8);
        let (writer, task) = Writer::spawn(addr, None, inbound);
        let frame = Frame {
            header: [0; pslite_core::wire::HEADER_LEN],
            parts: smallvec::smallvec![Bytes::from(vec![7u8; 1000])],
        };
        // 50 MB: far more than the queue plus the kernel's socket buffers.
        let send = writer.send(vec![frame; 50_000]);
        let outcome = tokio::time::timeout(std::time::Duration::from_millis(500), send).await;
        assert!(outcome.is_err(), "the send completed: {outcome:?}");
        task.abort();
        let _ = done.send(());
        peer.await.unwrap();
    }
}
