//! Per-connection tasks: a reader that cuts frames out of the stream, and a
//! writer that batches frames into vectored writes.
//!
//! Connections are one-way: a node writes to a peer over the connection it
//! opened, and reads what peers send over connections they opened. The
//! sender's identity is in every frame header, so nothing needs to be
//! learnt from the connection itself, and the two directions never contend.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use pslite_core::{Frame, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::driver::Inbound;
use crate::handshake;

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
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some((_, frame))) => {
                    if inbound.send(Inbound::Frame(frame)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%peer, %error, "closing connection after a bad frame");
                    return;
                }
            }
        }
        // Reserve what the current frame still needs (its header was
        // checked against the cap already), but at least one chunk.
        let wanted = decoder.bytes_wanted(buf.len()).max(READ_CHUNK_BYTES);
        buf.reserve(wanted);
        let read = tokio::select! {
            read = stream.read_buf(&mut buf) => read,
            // The node is gone: drop the connection rather than linger.
            () = inbound.closed() => return,
        };
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%peer, %error, "read failed");
                return;
            }
        }
    }
}

/// Connects to `addr` and writes every frame from `frames` until the
/// channel closes (then flushes) or the connection fails (then reports it).
pub(crate) async fn write_loop(
    addr: SocketAddr,
    token: Option<String>,
    mut frames: mpsc::Receiver<Frame>,
    inbound: mpsc::Sender<Inbound>,
) {
    // The queue moves into the block, so it is closed as soon as the block
    // ends: a driver blocked on a full queue wakes up (and sees the writer
    // is gone) instead of waiting on a writer that waits on the driver.
    let result = async move {
        let mut stream = crate::socket::connect(addr).await?;
        handshake::send_hello(&mut stream, token.as_deref()).await?;
        let mut batch = Batch::default();
        while let Some(frame) = frames.recv().await {
            batch.add(&frame);
            while batch.len_bytes() < BATCH_BYTES_MAX && batch.frames < BATCH_FRAMES_MAX {
                match frames.try_recv() {
                    Ok(frame) => batch.add(&frame),
                    Err(_) => break,
                }
            }
            batch.write_to(&mut stream).await?;
        }
        stream.shutdown().await?;
        Ok::<(), std::io::Error>(())
    }
    .await;
    if let Err(error) = result {
        tracing::debug!(%addr, %error, "connection lost");
        // Best effort: a full inbound queue must not block this task; the
        // driver also notices the closed queue on its next send.
        let _ = inbound.try_send(Inbound::LinkLost(addr));
    }
}

/// Frames gathered for one vectored write.
#[derive(Default)]
struct Batch {
    segments: VecDeque<Bytes>,
    staging: BytesMut,
    frames: usize,
}

impl Batch {
    fn add(&mut self, frame: &Frame) {
        self.frames += 1;
        self.staging.extend_from_slice(&frame.header);
        for part in &frame.parts {
            if part.len() <= COPY_PART_BYTES_MAX {
                self.staging.extend_from_slice(part);
            } else {
                if !self.staging.is_empty() {
                    self.segments.push_back(self.staging.split().freeze());
                }
                self.segments.push_back(part.clone());
            }
        }
    }

    fn len_bytes(&self) -> usize {
        self.staging.len() + self.segments.iter().map(Bytes::len).sum::<usize>()
    }

    async fn write_to(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        if !self.staging.is_empty() {
            self.segments.push_back(self.staging.split().freeze());
        }
        while !self.segments.is_empty() {
            let slices: Vec<IoSlice<'_>> = self.segments.iter().take(64).map(|s| IoSlice::new(s)).collect();
            let mut written = stream.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let front = self.segments.front_mut().expect("written bytes come from segments");
                let n = written.min(front.len());
                front.advance(n);
                written -= n;
                if front.is_empty() {
                    self.segments.pop_front();
                }
            }
        }
        self.frames = 0;
        Ok(())
    }
}
