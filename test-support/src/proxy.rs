//! A TCP proxy a test can break: services connect through it to a real server (RabbitMQ, an
//! SMTP server, say), and the test can
//! - [`TcpProxy::sever`] every open connection at once, as a broker restart or a network fault
//!   would, while new connections keep working;
//! - [`TcpProxy::go_down`]: sever, then refuse connections (the port closes), as a stopped
//!   server would, until [`TcpProxy::come_back`];
//! - [`TcpProxy::hold`]: pass nothing more on to the server, as a server that hangs would:
//!   what clients send over the connections open now stops short of it (its answers to what it
//!   already got still come back), and new connections are accepted but held, until
//!   [`TcpProxy::come_back`] forwards the held ones and cuts the stalled ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

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

    /// Passes nothing more on to the server until [`TcpProxy::come_back`]: the connections
    /// open now stall (the server hears no more of them, but what it answers to what it already
    /// heard still comes back, so nothing it took in is left unanswered), and each new one is
    /// accepted and held before it reaches the server.
    ///
    /// Cutting the open connections instead would be a second fault, and one no client can
    /// survive without a doubt: a cut between the server taking in a request and its answer
    /// leaves the client not knowing whether the request was done (for SMTP, RFC 1047).
    pub fn hold(&self) {
        self.state.send_modify(|state| state.mode = Mode::Holding);
    }

    /// Opens the port again (on the same address) and forwards everything, including the
    /// connections held meanwhile; a connection stalled by [`TcpProxy::hold`] is cut, as a
    /// server that hung would have lost it.
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
    let stalled_then_cut = Notify::new();
    let mut upstream_state = state.clone();
    let upstream = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if upstream_state.borrow_and_update().mode == Mode::Holding {
                let _ = upstream_state
                    .wait_for(|now| now.mode != Mode::Holding)
                    .await;
                stalled_then_cut.notify_one();
                return;
            }
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
        _ = stalled_then_cut.notified() => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// A server that reports each read to the test and echoes it back a moment later.
    async fn slow_echo() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (heard, hearing) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let heard = heard.clone();
                tokio::spawn(async move {
                    let mut buffer = [0; 64];
                    while let Ok(read @ 1..) = connection.read(&mut buffer).await {
                        let _ = heard.send(buffer[..read].to_vec());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if connection.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, hearing)
    }

    async fn read_some(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut buffer = [0; 64];
        match tokio::time::timeout(Duration::from_millis(400), stream.read(&mut buffer)).await {
            Ok(Ok(read)) => Some(buffer[..read].to_vec()),
            Ok(Err(_)) => Some(Vec::new()),
            Err(_) => None,
        }
    }

    async fn heard_within(hearing: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Option<Vec<u8>> {
        tokio::time::timeout(Duration::from_millis(400), hearing.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_hold_answers_what_the_server_heard_stalls_the_rest_and_cuts_only_stalled_connections()
     {
        let (server, mut hearing) = slow_echo().await;
        let proxy = TcpProxy::start(server).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"heard").await.unwrap();
        assert_eq!(heard_within(&mut hearing).await.unwrap(), b"heard");

        proxy.hold();
        assert_eq!(
            read_some(&mut open).await.unwrap(),
            b"heard",
            "the answer to what the server heard comes back"
        );
        open.write_all(b"stalled").await.unwrap();
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        new.write_all(b"held").await.unwrap();
        assert_eq!(heard_within(&mut hearing).await, None, "nothing reaches it");
        assert_eq!(read_some(&mut open).await, None);

        proxy.come_back().await.unwrap();
        assert_eq!(heard_within(&mut hearing).await.unwrap(), b"held");
        assert_eq!(read_some(&mut new).await.unwrap(), b"held");
        assert_eq!(
            read_some(&mut open).await.unwrap(),
            b"",
            "the stalled connection is cut"
        );
        assert_eq!(
            heard_within(&mut hearing).await,
            None,
            "what stalled never reaches it"
        );
    }
}
