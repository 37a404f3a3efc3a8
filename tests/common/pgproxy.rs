//! A TCP proxy in front of PostgreSQL that counts the statements clients send through it:
//! every `Execute` (extended protocol) and `Query` (simple protocol) message. Tests use it to
//! show that an API call costs a fixed number of statements whatever the data's size.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy and its counter.
#[derive(Clone)]
pub struct PgProxy {
    pub addr: SocketAddr,
    statements: Arc<AtomicU64>,
}

impl PgProxy {
    /// Proxies to the server of `upstream_url`.
    pub async fn start(upstream_url: &str) -> PgProxy {
        let url = url::Url::parse(upstream_url).expect("db url");
        let upstream = format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = relay(client, server, counter).await;
                    }
                });
            }
        });
        PgProxy { addr, statements }
    }

    /// `upstream_url` with host and port replaced by the proxy's.
    pub fn url(&self, upstream_url: &str) -> String {
        let mut url = url::Url::parse(upstream_url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        // The proxy reads the protocol: keep it in clear text.
        url.query_pairs_mut().append_pair("sslmode", "disable");
        url.to_string()
    }

    /// Statements sent so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    counter: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        // The startup packet (and an SSL request before it) has no type byte: length first.
        let mut started = false;
        loop {
            if !started {
                let len = client_read.read_u32().await?;
                let mut body = vec![0u8; len as usize - 4];
                client_read.read_exact(&mut body).await?;
                server_write.write_u32(len).await?;
                server_write.write_all(&body).await?;
                // 80877103 is SSLRequest: another untyped packet follows after the server's answer.
                let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                started = code != 80_877_103;
                continue;
            }
            let kind = client_read.read_u8().await?;
            let len = client_read.read_u32().await?;
            let mut body = vec![0u8; len as usize - 4];
            client_read.read_exact(&mut body).await?;
            if kind == b'E' || kind == b'Q' {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            server_write.write_u8(kind).await?;
            server_write.write_u32(len).await?;
            server_write.write_all(&body).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    let downstream = async move { tokio::io::copy(&mut server_read, &mut client_write).await };
    tokio::select! {
        r = upstream => r,
        r = downstream => r.map(|_| ()),
    }
}
