//! A TCP proxy in front of PostgreSQL that counts the statements clients send through it:
//! every `Execute` (extended protocol) and `Query` (simple protocol) message. Tests use it to
//! show that an API call costs a fixed number of statements whatever the data's size — and to
//! lose the answer to one given statement (see [`PgProxy::lose_answer_to`]).

use super::proxy::{upstream_of, Proxy, Reader, Writer};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy and its counter.
#[derive(Clone)]
pub struct PgProxy {
    pub proxy: Proxy,
    statements: Arc<AtomicU64>,
    trap: Arc<Trap>,
}

/// A statement whose next execution loses its answer: the server gets it whole (and commits
/// it), then the client's connection breaks before the answer reaches it.
#[derive(Default)]
struct Trap {
    statement: Mutex<Option<String>>,
    sprung: AtomicBool,
}

impl Trap {
    fn is(&self, query: &[u8]) -> bool {
        let armed = self.statement.lock().unwrap();
        armed.as_deref().map(str::as_bytes) == Some(query)
    }

    /// Springs it, once: true for the one connection that does.
    fn spring(&self) -> bool {
        self.statement.lock().unwrap().take().is_some() && !self.sprung.swap(true, Ordering::SeqCst)
    }
}

impl PgProxy {
    /// Proxies to the server of `upstream_url`.
    pub async fn start(upstream_url: &str) -> PgProxy {
        let statements = Arc::new(AtomicU64::new(0));
        let trap = Arc::new(Trap::default());
        let (counter, traps) = (statements.clone(), trap.clone());
        let proxy = Proxy::start_with(
            upstream_of(upstream_url),
            Arc::new(move |from, to| Box::pin(counting(from, to, counter.clone(), traps.clone()))),
        )
        .await;
        PgProxy {
            proxy,
            statements,
            trap,
        }
    }

    /// The next execution of `statement` (its exact text), on any connection, reaches the
    /// server whole, and that connection breaks before the answer comes back.
    pub fn lose_answer_to(&self, statement: &str) {
        *self.trap.statement.lock().unwrap() = Some(statement.to_string());
    }

    /// Whether an answer was lost so.
    pub fn lost_an_answer(&self) -> bool {
        self.trap.sprung.load(Ordering::SeqCst)
    }

    /// `upstream_url` with host and port replaced by the proxy's.
    pub fn url(&self, upstream_url: &str) -> String {
        let mut url = url::Url::parse(&self.proxy.url(upstream_url)).unwrap();
        // The proxy reads the protocol: keep it in clear text.
        url.query_pairs_mut().append_pair("sslmode", "disable");
        url.to_string()
    }

    /// Statements sent so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::SeqCst)
    }
}

/// Relays the client's messages, counting the statements among them; once the trapped
/// statement has been sent with its `Sync`, ends the connection.
async fn counting(
    mut client_read: Reader,
    mut server_write: Writer,
    counter: Arc<AtomicU64>,
    trap: Arc<Trap>,
) -> std::io::Result<()> {
    // The startup packet (and an SSL request before it) has no type byte: length first.
    let mut started = false;
    // Prepared statements of this connection that are the trapped one, and whether one was
    // just bound for execution.
    let mut trapped: HashSet<Vec<u8>> = HashSet::new();
    let mut bound = false;
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
        // Parse: statement name, query; Bind: portal name, statement name.
        let mut fields = body.split(|&b| b == 0);
        match kind {
            b'P' => {
                let (name, query) = (fields.next().unwrap_or_default(), fields.next());
                if query.is_some_and(|q| trap.is(q)) {
                    trapped.insert(name.to_vec());
                }
            }
            b'B' => bound = trapped.contains(fields.nth(1).unwrap_or_default()),
            _ => {}
        }
        server_write.write_u8(kind).await?;
        server_write.write_u32(len).await?;
        server_write.write_all(&body).await?;
        if kind == b'S' && std::mem::take(&mut bound) && trap.spring() {
            server_write.flush().await?;
            return Err(std::io::Error::other("the answer is lost"));
        }
    }
}
