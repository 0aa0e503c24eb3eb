//! `TCP_NODELAY` on every connection our servers accept. Tokio's listener leaves Nagle's
//! algorithm on, and then a small segment written while an earlier one is unacknowledged waits
//! for the peer's (delayed) ACK. An HTTP/2 server receiving an upload writes little but small
//! WINDOW_UPDATE frames, so with Nagle on they arrived late and the sender sat on a closed window:
//! the storage service's writer was idle for 40% of a large upload through the gateway.

use axum::serve::{ListenerExt, TapIo};
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

/// The listener for `axum::serve`, setting `TCP_NODELAY` on each accepted stream.
pub fn nodelay_listener(
    listener: TcpListener,
) -> TapIo<TcpListener, impl FnMut(&mut TcpStream) + Send + 'static> {
    listener.tap_io(|stream: &mut TcpStream| nodelay(stream))
}

/// The accepted streams of `listener`, with `TCP_NODELAY` set, for tonic's
/// `serve_with_incoming`.
pub fn nodelay_incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    TcpListenerStream::new(listener).map(|accepted| accepted.inspect(nodelay))
}

/// Binds `addr`, naming the variable it came from (`LISTEN_ADDR`, say) if it cannot.
pub async fn bind(variable: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {variable} {addr}"))
}

pub(crate) fn nodelay(stream: &TcpStream) {
    // Without it the connection still works, only slower: serve it anyway.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    #[tokio::test]
    async fn streams_accepted_for_tonic_have_nodelay_set() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(nodelay_incoming(listener));
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn streams_accepted_for_axum_have_nodelay_set() {
        let mut listener = nodelay_listener(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap());
    }
}
