//! QUIC client setup: TLS trusting only the server's certificate, the
//! transport parameters a mostly idle viewer needs, and the endpoints (one UDP
//! socket each) the connections are spread over.

use std::{fs, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use quinn::{crypto::rustls::QuicClientConfig, Endpoint, IdleTimeout, TransportConfig, VarInt};
use roomgate::wire::ALPN;

/// Read every certificate in a PEM file into a root store.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore> {
    let pem = fs::read(path).with_context(|| format!("--cert {}: cannot read", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("--cert {}: invalid PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--cert {}: not a usable certificate", path.display()))?;
        n += 1;
    }
    if n == 0 {
        bail!("--cert {}: no CERTIFICATE block found (expected the PEM certificate the server presents)", path.display());
    }
    Ok(roots)
}

/// Client configuration: TLS 1.3 with the ring provider, ALPN `roomgate/2`,
/// only `cert` trusted; keep-alives so silent viewers are not idled out.
/// `idle_timeout` is the QUIC idle timeout the client proposes (the smaller
/// of both sides wins): how long a viewer takes to notice a server that
/// vanished (kill -9) and reconnect.
pub fn client_config(
    cert: &Path,
    keep_alive: Duration,
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots(cert)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).context("QUIC TLS configuration")?;

    let mut transport = TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            IdleTimeout::try_from(idle_timeout).context("idle timeout")?,
        ))
        .keep_alive_interval(Some(keep_alive))
        // The server never opens streams or sends datagrams to a viewer.
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Socket buffer size asked for (the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`). Thousands of connections share one socket: with the default
/// ~200 KB, a burst (every viewer's close at the end of a run) overflows it
/// and the lost packets turn into close timeouts and stateless resets.
const SOCKET_BUFFER: usize = 8 << 20;

/// Bind `n` client endpoints on ephemeral ports of the server's address family.
pub fn bind(n: u32, server: SocketAddr, config: &quinn::ClientConfig) -> Result<Vec<Endpoint>> {
    let local: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let runtime = quinn::default_runtime().context("no tokio runtime for quinn")?;
    let mut capped = None;
    let endpoints = (0..n)
        .map(|_| {
            let socket = std::net::UdpSocket::bind(local)
                .with_context(|| format!("bind UDP socket on {local}"))?;
            let state = quinn::udp::UdpSocketState::new((&socket).into())
                .context("configure UDP socket")?;
            // Best effort: a smaller buffer only costs packet loss in bursts.
            let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
            let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
            if let Ok(got) = state.recv_buffer_size((&socket).into()) {
                if got < SOCKET_BUFFER {
                    capped = Some(got);
                }
            }
            let mut ep = Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                socket,
                runtime.clone(),
            )
            .context("create QUIC endpoint")?;
            ep.set_default_client_config(config.clone());
            Ok(ep)
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(got) = capped {
        tracing::info!(
            bytes = got,
            wanted = SOCKET_BUFFER,
            "UDP receive buffer capped by the kernel (raise net.core.rmem_max for large runs)"
        );
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_cert_is_a_clear_error() {
        let e = roots(Path::new("/nonexistent/cert.pem")).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
        let dir =
            std::env::temp_dir().join(format!("roomgate-loadgen-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        fs::write(&empty, "not a pem\n").unwrap();
        let e = roots(&empty).unwrap_err();
        assert!(format!("{e:#}").contains("no CERTIFICATE"), "{e:#}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
