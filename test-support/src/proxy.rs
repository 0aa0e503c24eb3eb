//! A TCP proxy a test can break: services connect through it to a real server (RabbitMQ, an
//! SMTP server, say), and the test can
//! - [`TcpProxy::sever`] every open connection at once, as a broker restart or a network fault
//!   would, while new connections keep working;
//! - [`TcpProxy::go_down`]: sever, then refuse connections (the port closes), as a stopped
//!   server would, until [`TcpProxy::come_back`];
//! - [`TcpProxy::hold`]: sever, then accept connections but pass nothing on, as a server that
//!   hangs would, until [`TcpProxy::come_back`] forwards them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forwarding,
    Holding,
    Down,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Bumped to cut every connection open now.
    generation: u64,
    mode: Mode,
}

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: watch::Sender<State>,
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
    accepted: Arc<AtomicUsize>,
    to_server: Arc<AtomicUsize>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State {
            generation: 0,
            mode: Mode::Forwarding,
        });
        let proxy = Self {
            addr,
            target,
            state,
            accepting: Mutex::new(None),
            accepted: Arc::default(),
            to_server: Arc::default(),
        };
        proxy.accept_on(listener);
        Ok(proxy)
    }

    fn accept_on(&self, listener: TcpListener) {
        let state = self.state.clone();
        let target = self.target;
        let accepted = Arc::clone(&self.accepted);
        let sent = Arc::clone(&self.to_server);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(forward(
                    client,
                    target,
                    state.subscribe(),
                    Arc::clone(&sent),
                ));
            }
        });
        if let Some(previous) = self.accepting.lock().expect("proxy lock").replace(task) {
            previous.abort();
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections clients have opened to it so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// How many bytes clients have sent through it to the server so far.
    pub fn bytes_to_server(&self) -> usize {
        self.to_server.load(Ordering::Relaxed)
    }

    /// Drops every connection open now.
    pub fn sever(&self) {
        self.state.send_modify(|state| state.generation += 1);
    }

    /// Drops every connection and closes the port: connecting is refused, as with a server
    /// that has stopped.
    pub fn go_down(&self) {
        if let Some(task) = self.accepting.lock().expect("proxy lock").take() {
            task.abort();
        }
        self.state.send_modify(|state| {
            state.generation += 1;
            state.mode = Mode::Down;
        });
    }

    /// Cuts the connections open now, then keeps accepting connections but holds each new
    /// one, passing nothing on, until [`TcpProxy::come_back`].
    pub fn hold(&self) {
        self.state.send_modify(|state| {
            state.generation += 1;
            state.mode = Mode::Holding;
        });
    }

    /// Opens the port again (on the same address) and forwards everything, including the
    /// connections held meanwhile.
    pub async fn come_back(&self) -> anyhow::Result<()> {
        let down = self.state.borrow().mode == Mode::Down;
        if down {
            // The address was ours a moment ago; a few tries cover a slow kernel.
            let mut tries = 0;
            let listener = loop {
                match TcpListener::bind(self.addr).await {
                    Ok(listener) => break listener,
                    Err(error) if tries >= 50 => return Err(error.into()),
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            };
            self.accept_on(listener);
        }
        self.state
            .send_modify(|state| state.mode = Mode::Forwarding);
        Ok(())
    }
}

/// Passes one connection on, obeying the proxy's mode.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut state: watch::Receiver<State>,
    sent: Arc<AtomicUsize>,
) {
    let born = state.borrow_and_update().generation;
    // A held connection waits here, before anything reaches the server.
    let forwarding = state
        .wait_for(|now| now.generation != born || now.mode != Mode::Holding)
        .await
        .map(|now| now.generation == born && now.mode == Mode::Forwarding);
    if !matches!(forwarding, Ok(true)) {
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let upstream = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if to_server.write_all(&buffer[..read]).await.is_err() {
                break;
            }
            sent.fetch_add(read, Ordering::Relaxed);
        }
        let _ = to_server.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(upstream, downstream) } => {}
        _ = state.wait_for(|now| now.generation != born) => {}
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = self.accepting.lock().expect("proxy lock").take() {
            task.abort();
        }
        self.sever();
    }
}
