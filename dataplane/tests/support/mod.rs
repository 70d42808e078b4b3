//! Real parts for archive tests: a moto S3 server (Object Lock enforced) started per test,
//! and a TCP relay that can cut the path to it, or stall it, to simulate an outage.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A moto S3 server on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Moto {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs: scripts/test installs it (pip install 'moto[server]')");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to `target` whose path can be cut (connections refused and reset) or stalled
/// (connections taken, bytes read, nothing answered), and restored.
pub struct Relay {
    pub port: u16,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
}

/// Reads and drops what `stream` sends until it closes.
async fn swallow(mut stream: tokio::net::TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await, Ok(n) if n > 0) {}
}

impl Relay {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let (flag, stall) = (up.clone(), stalled.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                if stall.load(Ordering::SeqCst) {
                    tokio::spawn(swallow(inbound));
                    continue;
                }
                let (flag, stall) = (flag.clone(), stall.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], target)))
                            .await
                    else {
                        return;
                    };
                    let relay = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while flag.load(Ordering::SeqCst) && !stall.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = relay => return, () = watch => {} }
                    if stall.load(Ordering::SeqCst) {
                        swallow(inbound).await;
                    }
                });
            }
        });
        Self { port, up, stalled }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Stalls the path (`true`): connections open or opened meanwhile are taken and never
    /// answered; `false` relays new connections again.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
