//! A real SMTP server inside the test process that keeps every message it receives.

use mailin_embedded::{Handler, Response, Server, SslConfig, response};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct CapturedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The raw message: headers, blank line, body.
    pub data: Vec<u8>,
}

impl CapturedMail {
    /// The raw message as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// An SMTP server on a free port of 127.0.0.1. It runs until the test process ends (the
/// embedded server has no stop), which is harmless: each test starts its own.
#[derive(Debug, Clone)]
pub struct SmtpCapture {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<CapturedMail>>>,
}

impl SmtpCapture {
    /// Starts the server on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts the server on `addr` (a port a service was already told about, to test a mail
    /// server that comes up late).
    pub fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let mails = Arc::new(Mutex::new(Vec::new()));
        let handler = CaptureHandler {
            mails: mails.clone(),
            current: None,
        };
        let mut server = Server::new(handler);
        server
            .with_name("smtp-capture.test")
            .with_ssl(SslConfig::None)
            .map_err(|e| anyhow::anyhow!("configuring the SMTP capture: {e}"))?
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name("smtp-capture".into())
            .spawn(move || {
                if let Err(error) = server.serve() {
                    eprintln!("SMTP capture stopped: {error}");
                }
            })?;
        Ok(Self { addr, mails })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An `SMTP_URL` for this server (plain SMTP, no TLS, no login).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message received so far.
    pub fn mails(&self) -> Vec<CapturedMail> {
        self.mails.lock().expect("mail list lock").clone()
    }

    /// Waits until at least `count` messages arrived, or `timeout` passed; returns them all.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<CapturedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if mails.len() >= count || tokio::time::Instant::now() >= deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[derive(Clone)]
struct CaptureHandler {
    mails: Arc<Mutex<Vec<CapturedMail>>>,
    current: Option<CapturedMail>,
}

impl Handler for CaptureHandler {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(CapturedMail {
            from: from.to_owned(),
            to: to.to_vec(),
            data: Vec::new(),
        });
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(mail) = self.current.as_mut() {
            mail.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(mail) = self.current.take() {
            self.mails.lock().expect("mail list lock").push(mail);
        }
        response::OK
    }
}
