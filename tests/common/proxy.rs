//! A TCP proxy on 127.0.0.1 that holds every chunk for a fixed time in each direction: latency
//! without a bandwidth limit, like a long link (or, with [`Link::rate`], a slow one too).
//!
//! The benchmark puts its sshd behind one (a 50 ms round trip); the fleet tests put some hosts
//! behind one to give them a round trip of their own, and one host behind a slow one to hold its
//! upload open long enough to kill its connection.
//!
//! Every proxy of a process runs on one shared two-thread tokio runtime, started on first use:
//! twenty proxies cost twenty listening tasks, not twenty runtimes.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the proxy does to the bytes it passes on, in each direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    /// Every chunk is passed on this long after it was read.
    pub delay: Duration,
    /// Bytes per second at most (None: as fast as the loopback goes).
    pub rate: Option<u64>,
}

/// Starts a proxy to `127.0.0.1:upstream` that delays every byte by `delay` each way; returns
/// the port it listens on.
pub fn start(upstream: u16, delay: Duration) -> u16 {
    start_link(upstream, Link { delay, rate: None })
}

/// Starts a proxy to `127.0.0.1:upstream` with `link`'s delay and rate; returns its port.
pub fn start_link(upstream: u16, link: Link) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime().spawn(async move {
        let listener = TcpListener::from_std(listener).unwrap();
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The server gone: the client sees its connection close, as it would then.
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, link));
                tokio::spawn(pipe(sr, cw, link));
            });
        }
    });
    port
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("delay-proxy")
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Reads as fast as `from` delivers, and writes each chunk to `to` once its time has come: a
/// reader that never waits for the writer keeps the delay fixed (not added up per chunk).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        // Small reads under a rate limit, so the limit is smooth rather than a burst a second.
        let mut buf = vec![
            0u8;
            if link.rate.is_some() {
                16 * 1024
            } else {
                256 * 1024
            }
        ];
        // When the bytes read so far have gone through the rate-limited link.
        let mut sent_by = Instant::now();
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let now = Instant::now();
                    let mut due = now + link.delay;
                    if let Some(rate) = link.rate {
                        sent_by = sent_by.max(now)
                            + Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
                        due = sent_by + link.delay;
                        // Hold the reader too: TCP's own window then slows the sender down.
                        tokio::time::sleep_until(sent_by).await;
                    }
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
