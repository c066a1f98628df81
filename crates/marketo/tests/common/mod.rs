//! Shared helpers of the integration tests: emulator start-up, client builders and a sniffing
//! proxy that records request lines (method and target with the query) on the wire.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use salesync_emulator::clock::Clock;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator};
use salesync_marketo::{MarketoClient, MarketoClientBuilder, RetryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A manual-clock start time for tests that move time.
pub fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()
}

/// Emulator config on a manual clock.
pub fn manual_config() -> MarketoConfig {
    MarketoConfig { clock: Clock::manual(t0()), ..MarketoConfig::default() }
}

pub async fn start(cfg: MarketoConfig) -> MarketoEmulator {
    MarketoEmulator::start(cfg).await.expect("emulator starts")
}

/// Fast retries so the suite stays quick.
pub fn fast_retry() -> RetryConfig {
    RetryConfig { max_attempts: 6, base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(300) }
}

pub fn builder_for(emu: &MarketoEmulator, base_url: &str) -> MarketoClientBuilder {
    MarketoClient::builder()
        .base_url(base_url)
        .client_id(emu.client_id())
        .client_secret(emu.client_secret())
        .retry(fast_retry())
        .timeout(Duration::from_secs(10))
}

pub fn builder(emu: &MarketoEmulator) -> MarketoClientBuilder {
    builder_for(emu, &emu.base_url())
}

pub fn client(emu: &MarketoEmulator) -> MarketoClient {
    builder(emu).build().expect("client builds")
}

/// A TCP proxy in front of the emulator that records every HTTP request line it forwards.
pub struct Sniffer {
    pub addr: SocketAddr,
    pub lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sniffer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `(method, target)` pairs seen so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.lines.lock().unwrap().clone()
    }
}

pub async fn sniff(upstream: SocketAddr) -> Sniffer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let log = Arc::clone(&lines);
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(upstream).await else { return };
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let to_up = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut pending: Vec<u8> = Vec::new();
                    let mut skip = 0usize;
                    loop {
                        let n = match dr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        // Requests: head up to CRLFCRLF, then Content-Length bytes of body.
                        loop {
                            if skip > 0 {
                                let k = skip.min(pending.len());
                                pending.drain(..k);
                                skip -= k;
                                if skip > 0 {
                                    break;
                                }
                            }
                            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else { break };
                            let head = String::from_utf8_lossy(&pending[..end]).to_string();
                            pending.drain(..end + 4);
                            let mut lines = head.split("\r\n");
                            if let Some(first) = lines.next() {
                                let mut parts = first.split(' ');
                                if let (Some(m), Some(t)) = (parts.next(), parts.next()) {
                                    log.lock().unwrap().push((m.to_string(), t.to_string()));
                                }
                            }
                            skip = lines
                                .filter_map(|l| l.split_once(':'))
                                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                                .and_then(|(_, v)| v.trim().parse().ok())
                                .unwrap_or(0);
                        }
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = uw.shutdown().await;
                };
                let to_down = async move {
                    let _ = tokio::io::copy(&mut ur, &mut dw).await;
                    let _ = dw.shutdown().await;
                };
                tokio::join!(to_up, to_down);
            });
        }
    });
    Sniffer { addr, lines }
}
