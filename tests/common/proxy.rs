//! Network faults on loopback: a [`Gate`] is a listening port that can refuse connections
//! (nothing listens: the client gets "connection refused") and come back on the same port, and
//! cut every connection it accepted at once; a [`Proxy`] is a TCP relay behind a gate, put
//! between autos and a peer (PostgreSQL, S3) so that a test can make that peer vanish.

use futures::future::BoxFuture;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A loopback port that accepts connections, refuses them, or cuts those it accepted.
#[derive(Clone)]
pub struct Gate {
    pub addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    /// Cancelled to cut every connection accepted so far (replaced by a fresh one then).
    cut: Arc<Mutex<CancellationToken>>,
    /// Connections accepted and not yet closed.
    live: Arc<AtomicUsize>,
}

enum Command {
    Refuse(oneshot::Sender<()>),
    Restore(oneshot::Sender<()>),
}

/// The accepting side of a [`Gate`]: what its owner serves.
pub struct Accepted {
    connections: mpsc::Receiver<(TcpStream, SocketAddr)>,
    gate: Gate,
}

impl Gate {
    /// Listens on a free loopback port.
    pub async fn open() -> (Gate, Accepted) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (commands, orders) = mpsc::unbounded_channel();
        let (hand, connections) = mpsc::channel(64);
        tokio::spawn(keep(listener, addr, orders, hand));
        let gate = Gate {
            addr,
            commands,
            cut: Arc::new(Mutex::new(CancellationToken::new())),
            live: Arc::new(AtomicUsize::new(0)),
        };
        let accepted = Accepted {
            connections,
            gate: gate.clone(),
        };
        (gate, accepted)
    }

    /// Stops listening: from when this returns, connections to the port are refused. Those
    /// already accepted go on (see [`Gate::cut`]).
    pub async fn refuse(&self) {
        self.order(Command::Refuse).await;
    }

    /// Listens again, on the same port.
    pub async fn restore(&self) {
        self.order(Command::Restore).await;
    }

    /// Breaks every connection accepted so far (each side sees it end); returns how many
    /// were open.
    pub fn cut(&self) -> usize {
        let open = self.live.load(Ordering::SeqCst);
        let mut cut = self.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
        open
    }

    /// Down entirely: refuses new connections and cuts the open ones; returns how many were
    /// cut.
    pub async fn down(&self) -> usize {
        self.refuse().await;
        self.cut()
    }

    async fn order(&self, command: fn(oneshot::Sender<()>) -> Command) {
        let (done, applied) = oneshot::channel();
        self.commands.send(command(done)).expect("the gate runs");
        applied.await.expect("the gate answers");
    }

    fn wrap(&self, io: TcpStream) -> Conn {
        self.live.fetch_add(1, Ordering::SeqCst);
        let _ = io.set_nodelay(true);
        Conn {
            io,
            cut: Box::pin(self.cut.lock().unwrap().clone().cancelled_owned()),
            live: self.live.clone(),
        }
    }
}

impl Accepted {
    /// The next connection (never, once the gate is gone).
    pub async fn next(&mut self) -> (Conn, SocketAddr) {
        match self.connections.recv().await {
            Some((io, peer)) => (self.gate.wrap(io), peer),
            None => std::future::pending().await,
        }
    }
}

impl axum::serve::Listener for Accepted {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.gate.addr)
    }
}

/// Owns the port: accepts while open; while refusing, keeps it bound without listening, so
/// that connections are refused and nobody else takes the port meanwhile.
async fn keep(
    listener: TcpListener,
    addr: SocketAddr,
    mut orders: mpsc::UnboundedReceiver<Command>,
    hand: mpsc::Sender<(TcpStream, SocketAddr)>,
) {
    let mut listening = Some(listener);
    let mut held: Option<TcpSocket> = None;
    loop {
        let order = match &listening {
            Some(listener) => tokio::select! {
                accepted = listener.accept() => {
                    if let Ok(connection) = accepted {
                        if hand.send(connection).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                order = orders.recv() => order,
            },
            None => orders.recv().await,
        };
        match order {
            None => return,
            Some(Command::Refuse(done)) => {
                if listening.take().is_some() {
                    held = Some(hold(addr));
                }
                let _ = done.send(());
            }
            Some(Command::Restore(done)) => {
                if let Some(socket) = held.take() {
                    listening = Some(socket.listen(1024).expect("listen again"));
                }
                let _ = done.send(());
            }
        }
    }
}

/// `addr` bound and not listening.
fn hold(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("keep the port");
    socket
}

/// A connection a [`Gate`] accepted: a TCP stream that fails once the gate cuts it.
pub struct Conn {
    io: TcpStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    live: Arc<AtomicUsize>,
}

impl Conn {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "cut by the test",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The client's half of a relayed connection, as a pump reads it.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The upstream's half of a relayed connection, as a pump writes it.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;
/// Carries what a client sends to the upstream (plain copy, or reading it on the way).
pub type Pump = Arc<dyn Fn(Reader, Writer) -> BoxFuture<'static, io::Result<()>> + Send + Sync>;

/// A TCP relay to `upstream` behind a [`Gate`].
#[derive(Clone)]
pub struct Proxy {
    pub gate: Gate,
    pub upstream: SocketAddr,
}

impl Proxy {
    /// Relays to `upstream` as it is.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        Proxy::start_with(
            upstream,
            Arc::new(|mut from, mut to| {
                Box::pin(async move { tokio::io::copy(&mut from, &mut to).await.map(drop) })
            }),
        )
        .await
    }

    /// Relays to `upstream`, the client's bytes through `pump`.
    pub async fn start_with(upstream: SocketAddr, pump: Pump) -> Proxy {
        let (gate, mut accepted) = Gate::open().await;
        tokio::spawn(async move {
            loop {
                let (client, _) = accepted.next().await;
                let pump = pump.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = server.set_nodelay(true);
                        relay(client, server, pump).await;
                    }
                });
            }
        });
        Proxy { gate, upstream }
    }

    /// Relays to the host and port of `upstream_url`.
    pub async fn to_url(upstream_url: &str) -> Proxy {
        Proxy::start(upstream_of(upstream_url)).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.gate.addr
    }

    /// `upstream_url` with host and port replaced by the proxy's.
    pub fn url(&self, upstream_url: &str) -> String {
        let mut url = url::Url::parse(upstream_url).expect("url");
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr().port())).unwrap();
        url.to_string()
    }

    /// See [`Gate::cut`].
    pub fn cut(&self) -> usize {
        self.gate.cut()
    }

    /// See [`Gate::refuse`].
    pub async fn refuse(&self) {
        self.gate.refuse().await
    }

    /// See [`Gate::restore`].
    pub async fn restore(&self) {
        self.gate.restore().await
    }

    /// See [`Gate::down`].
    pub async fn down(&self) -> usize {
        self.gate.down().await
    }
}

/// The `host:port` of a URL (a resolved loopback name).
pub fn upstream_of(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).expect("url");
    let host = match url.host_str().unwrap_or("127.0.0.1") {
        "localhost" => "127.0.0.1",
        host => host,
    };
    let port = url.port_or_known_default().expect("a port");
    format!("{host}:{port}").parse().expect("an IP address")
}

/// Relays until either side ends or fails (a cut fails the client's side), then closes both.
async fn relay(client: Conn, server: TcpStream, pump: Pump) {
    let (client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, server_write) = server.into_split();
    let upstream = pump(Box::new(client_read), Box::new(server_write));
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
