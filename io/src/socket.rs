//! Socket options, set through socket2 because tokio exposes only some.
//!
//! TCP_NODELAY: small control frames (ACKs, heartbeats, barriers) must not
//! wait for Nagle; batching is done by the writer instead. SO_REUSEADDR:
//! a restarted scheduler can bind its well-known port at once. Keepalive:
//! a peer that vanished without a FIN is eventually noticed by the kernel
//! even when we have nothing to send. Large buffers: multi-megabyte pushes.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

/// Kernel socket buffer size asked for (the kernel may cap it).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listener with SO_REUSEADDR.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit the receive buffer size from the listener.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Connects and configures an outbound stream.
pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    configure(&stream)?;
    Ok(stream)
}

/// Options every connection gets, inbound or outbound.
pub(crate) fn configure(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = SockRef::from(stream);
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));
    socket.set_tcp_keepalive(&keepalive)?;
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    Ok(())
}
