//! Bytes from a raw socket: garbage, a wrong magic, a header announcing a
//! 4 GiB frame, a wrong token. Each connection is closed without reaching
//! the core's application logic, nothing of the announced size is
//! allocated, and the cluster still works afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use pslite::{LocalCluster, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(60);

fn hello(token: &str) -> Vec<u8> {
    let mut out = b"PSLH".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(token.len() as u16).to_le_bytes());
    out.extend_from_slice(token.as_bytes());
    out
}

/// A frame header of the wire's layout (see `pslite::wire::Header`), by
/// hand: the node must judge it from the bytes alone.
fn header(magic: u32, kind: u8, body_len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&pslite::wire::VERSION.to_le_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&body_len.to_le_bytes());
    // Sender, its incarnation, receiver, its incarnation, reserved, seq.
    out.extend_from_slice(&[0u8; 28]);
    assert_eq!(out.len(), pslite::wire::HEADER_LEN);
    out
}

/// Sends `bytes` and waits until the peer closes the connection.
async fn closed_after(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node kept a hostile connection open");
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

async fn works(cluster: &LocalCluster) {
    let worker = cluster.worker(0);
    let ts = tokio::time::timeout(BOUND, worker.push(&[5, u64::MAX], &[1.0f32, 2.0])).await.unwrap().unwrap();
    tokio::time::timeout(BOUND, worker.wait(ts)).await.unwrap().unwrap();
    let pulled: Vec<f32> = tokio::time::timeout(BOUND, worker.pull_wait(&[5, u64::MAX])).await.unwrap().unwrap();
    assert!(pulled[0] >= 1.0 && pulled[1] >= 2.0);
}

async fn attack(node: &NodeHandle, token: &str) {
    let addr = node.local_addr();
    closed_after(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut wrong_magic = hello(token);
    wrong_magic.extend(header(0xdead_beef, 1, 0));
    closed_after(addr, &wrong_magic).await;
    let before = resident_bytes();
    let mut huge = hello(token);
    huge.extend(header(u32::from_le_bytes(*b"PSLT"), 9, u32::MAX - pslite::wire::HEADER_LEN as u32));
    closed_after(addr, &huge).await;
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "a 4 GiB header made the process grow by {grown} bytes");
    let mut unknown_kind = hello(token);
    unknown_kind.extend(header(u32::from_le_bytes(*b"PSLT"), 200, 0));
    closed_after(addr, &unknown_kind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_wrong_magic_and_huge_frames_are_refused_and_the_cluster_goes_on() {
    let cluster = tokio::time::timeout(BOUND, LocalCluster::start(2, 1)).await.unwrap().unwrap();
    attack(&cluster.scheduler, "").await;
    attack(&cluster.servers[0], "").await;
    works(&cluster).await;
    assert!(tokio::time::timeout(BOUND, cluster.finalize()).await.unwrap().unwrap().is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_token_is_refused_and_the_cluster_goes_on() {
    let mut settings = LocalCluster::settings(1, 1).token("s3cret");
    settings.core.heartbeats = false;
    let cluster = tokio::time::timeout(
        BOUND,
        LocalCluster::start_with(settings, Box::new(|_| pslite::KvStore::<f32>::new().into())),
    )
    .await
    .unwrap()
    .unwrap();
    let frames_before = tokio::time::timeout(BOUND, cluster.scheduler.stats()).await.unwrap().unwrap().frames_in;
    // A well-formed heartbeat frame behind the wrong token, then no token.
    for token in ["guess", ""] {
        let mut intruder = hello(token);
        intruder.extend(header(u32::from_le_bytes(*b"PSLT"), 5, 0));
        closed_after(cluster.scheduler.local_addr(), &intruder).await;
    }
    let frames_after = tokio::time::timeout(BOUND, cluster.scheduler.stats()).await.unwrap().unwrap().frames_in;
    assert_eq!(frames_after, frames_before, "no frame reached the core");
    works(&cluster).await;
    assert!(tokio::time::timeout(BOUND, cluster.finalize()).await.unwrap().unwrap().is_complete());
}
