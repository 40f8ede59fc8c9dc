//! A minimal viewer client for tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use roomgate::wire::{self, ticket, ClientFrame, CloseCode, ServerFrame};

pub struct Viewer {
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    endpoint: quinn::Endpoint,
}

pub fn ticket(room: u64, viewer: u64, ttl: i64) -> String {
    let now = roomgate::now_ms() / 1000;
    ticket::TicketKey::new("k1", super::harness::SECRET.as_bytes())
        .expect("test secret is long enough")
        .sign(&ticket::Claims {
            room_id: room,
            viewer_id: viewer,
            expires_at: (now + ttl).max(0) as u64,
            device_id: String::new(),
        })
}

pub fn client_config(cert_dir: &Path) -> quinn::ClientConfig {
    try_client_config(cert_dir).expect("a readable cert.pem")
}

fn try_client_config(cert_dir: &Path) -> Option<quinn::ClientConfig> {
    client_config_alpn(cert_dir, wire::ALPN)
}

/// A client offering only `alpn` (an older protocol version, or an
/// unknown one).
pub fn client_config_alpn(cert_dir: &Path, alpn: &[u8]) -> Option<quinn::ClientConfig> {
    let pem = std::fs::read(cert_dir.join("cert.pem")).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.ok()?).ok()?;
    }
    if roots.is_empty() {
        return None;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Some(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).ok()?,
    )))
}

impl Viewer {
    /// Connect and open the session stream (no `Hello` yet).
    pub async fn open(addr: SocketAddr, cert_dir: &Path) -> Viewer {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(client_config(cert_dir));
        let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Viewer {
            conn,
            send,
            recv,
            endpoint: ep,
        }
    }

    /// Connect offering only `alpn`, open the stream and send `Hello` in
    /// that version's frame type; `None` if the handshake fails.
    pub async fn join_alpn(
        addr: SocketAddr,
        cert_dir: &Path,
        alpn: &[u8],
        room: u64,
        viewer: u64,
    ) -> Option<Viewer> {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(client_config_alpn(cert_dir, alpn)?);
        let conn = ep.connect(addr, "localhost").ok()?.await.ok()?;
        let (send, recv) = conn.open_bi().await.ok()?;
        let mut v = Viewer {
            conn,
            send,
            recv,
            endpoint: ep,
        };
        let hello = wire::Hello {
            ticket: ticket(room, viewer, 3600),
            client: "it-old".into(),
        };
        // The layouts differ per version, `Hello` included.
        let bytes = if alpn == wire::ALPN_V1 {
            wire::encode(&wire::ClientFrameV1::Hello(hello))
        } else {
            wire::encode(&ClientFrame::Hello(hello))
        };
        v.send_raw(&bytes).await;
        match v.next().await {
            Some(ServerFrame::Welcome(_)) => Some(v),
            _ => None,
        }
    }

    /// Like [`Viewer::join`], but `None` if the engine is not (yet) there.
    pub async fn try_join(
        addr: SocketAddr,
        cert_dir: &Path,
        room: u64,
        viewer: u64,
    ) -> Option<Viewer> {
        let attempt = async {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).ok()?;
            ep.set_default_client_config(try_client_config(cert_dir)?);
            let conn = ep.connect(addr, "localhost").ok()?.await.ok()?;
            let (send, recv) = conn.open_bi().await.ok()?;
            let mut v = Viewer {
                conn,
                send,
                recv,
                endpoint: ep,
            };
            v.send(&ClientFrame::Hello(wire::Hello {
                ticket: ticket(room, viewer, 3600),
                client: "it".into(),
            }))
            .await;
            match v.next().await {
                Some(ServerFrame::Welcome(_)) => Some(v),
                _ => None,
            }
        };
        tokio::time::timeout(Duration::from_secs(3), attempt)
            .await
            .ok()
            .flatten()
    }

    /// Connect, say `Hello`, expect `Welcome`.
    pub async fn join(addr: SocketAddr, cert_dir: &Path, room: u64, viewer: u64) -> Viewer {
        let mut v = Viewer::open(addr, cert_dir).await;
        v.send(&ClientFrame::Hello(wire::Hello {
            ticket: ticket(room, viewer, 3600),
            client: "it".into(),
        }))
        .await;
        match v.next().await {
            Some(ServerFrame::Welcome(w)) => assert_eq!((w.room_id, w.viewer_id), (room, viewer)),
            other => panic!("expected Welcome, got {other:?}"),
        }
        v
    }

    /// Withdraw lead `id` and wait for the ack: (kind, client id, verdict)
    /// (the delivery and webhook tests).
    #[allow(dead_code)]
    pub async fn withdraw(&mut self, id: u64) -> (u8, u64, u8) {
        self.send(&ClientFrame::Withdraw { client_lead_id: id })
            .await;
        match self.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Ack {
                kind,
                client_id,
                verdict,
                ..
            }) => (kind, client_id, verdict),
            other => panic!("withdraw {id}: {other:?}"),
        }
    }

    /// Move to a new local port mid-connection, as a phone changing
    /// networks or a NAT rebinding does (the steering test).
    #[allow(dead_code)]
    pub fn rebind(&self) -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        self.endpoint.rebind(socket).unwrap();
        addr
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_raw(&wire::encode(frame)).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.send.write_all(bytes).await;
    }

    /// Next server frame, `None` when the stream or connection ends.
    pub async fn next(&mut self) -> Option<ServerFrame> {
        let mut prefix = [0u8; wire::LEN_PREFIX];
        self.recv.read_exact(&mut prefix).await.ok()?;
        let len = wire::decode_len(prefix, wire::MAX_FRAME_HARD).ok()?;
        let mut body = vec![0u8; len];
        self.recv.read_exact(&mut body).await.ok()?;
        Some(wire::decode_server(&body).expect("server frames are valid"))
    }

    /// Next frame within `d`.
    pub async fn next_within(&mut self, d: Duration) -> Option<ServerFrame> {
        tokio::time::timeout(d, self.next()).await.ok().flatten()
    }

    /// Wait for the server to close the connection; its close code and
    /// reason phrase.
    pub async fn close_reason(&self) -> Option<(CloseCode, String)> {
        let err = tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
            .await
            .expect("server closes the connection");
        match err {
            quinn::ConnectionError::ApplicationClosed(c) => Some((
                CloseCode::from_code(c.error_code.into_inner())?,
                String::from_utf8_lossy(&c.reason).into_owned(),
            )),
            _ => None,
        }
    }

    /// Wait for the server to close the connection; its close code.
    pub async fn close_code(&self) -> Option<CloseCode> {
        let err = tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
            .await
            .expect("server closes the connection");
        match err {
            quinn::ConnectionError::ApplicationClosed(c) => {
                CloseCode::from_code(c.error_code.into_inner())
            }
            _ => None,
        }
    }
}
