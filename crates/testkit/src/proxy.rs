//! A TCP forwarder to a Redis the test can cut and restore, that counts what went through it: one
//! replica loses Redis while the others reach it, and a test can prove a code path made no Redis
//! call at all (no connection, no byte, no command) instead of inferring it from elapsed time.
//!
//! Unlike the rest of testkit this is async: it runs on the test's tokio runtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    /// Every byte clients sent, in arrival order (per connection chunks interleave).
    sent: Mutex<Vec<u8>>,
}

/// A forwarder on a free loopback port to `127.0.0.1:<target>`. Stops with the runtime.
pub struct TcpProxy {
    port: u16,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("port", &self.port)
            .field("open", &self.open.load(Ordering::Acquire))
            .finish()
    }
}

impl TcpProxy {
    /// Starts forwarding to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let (open2, cuts2, counters2) = (Arc::clone(&open), cuts.clone(), Arc::clone(&counters));
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                counters2.connections.fetch_add(1, Ordering::SeqCst);
                let counters = Arc::clone(&counters2);
                if !open2.load(Ordering::Acquire) {
                    // Cut: what the client sends is still counted, then it sees the close.
                    tokio::spawn(drain_and_close(inbound, counters));
                    continue;
                }
                let cut = cuts2.subscribe();
                tokio::spawn(forward(inbound, target_port, counters, cut));
            }
        });
        TcpProxy {
            port,
            open,
            cuts,
            counters,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A Redis URL through it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every forwarded connection and refuses to forward new ones (they are accepted,
    /// counted and closed).
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Bytes clients sent so far.
    pub fn bytes_sent(&self) -> usize {
        self.counters.sent.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// How many commands named `name` (e.g. `EVALSHA`) clients sent so far: RESP bulk strings
    /// `$<len>\r\n<name>\r\n`, case-insensitive.
    pub fn commands_sent(&self, name: &str) -> usize {
        let needle = format!("${}\r\n{}\r\n", name.len(), name.to_ascii_uppercase());
        let sent = self
            .counters
            .sent
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let upper = sent.to_ascii_uppercase();
        upper
            .windows(needle.len())
            .filter(|w| *w == needle.as_bytes())
            .count()
    }
}

async fn forward(
    inbound: TcpStream,
    target_port: u16,
    counters: Arc<Counters>,
    mut cut: watch::Receiver<u64>,
) {
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        drain_and_close(inbound, counters).await;
        return;
    };
    let (mut client_rx, mut client_tx) = inbound.into_split();
    let (mut server_rx, mut server_tx) = outbound.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Ok(mut s) = counters.sent.lock() {
                s.extend_from_slice(&buf[..n]);
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut server_rx, &mut client_tx);
    tokio::select! {
        () = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

/// Counts what a client sends on a connection that goes nowhere, for a moment, then closes it.
async fn drain_and_close(mut inbound: TcpStream, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, inbound.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        if let Ok(mut s) = counters.sent.lock() {
            s.extend_from_slice(&buf[..n]);
        }
    }
}
