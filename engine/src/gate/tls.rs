//! TLS material for the QUIC endpoint: PEM files, or a generated dev pair.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Load a PEM certificate chain and private key.
pub fn load(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("open certificate {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("parse certificate {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("open key {}", key.display()))?,
    ))
    .with_context(|| format!("parse key {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    Ok((certs, key))
}

/// The development pair in `dir`: `cert.pem` and `key.pem` if both are
/// there (so a restarted engine keeps the certificate its clients trust),
/// else a new self-signed pair for `localhost`/`127.0.0.1`/`::1` written
/// there.
pub fn dev_pair(dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        if let Ok(pair) = load(&cert, &key) {
            return Ok(pair);
        }
    }
    new_dev_pair(dir)
}

fn new_dev_pair(dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .context("generate dev certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).context("write cert.pem")?;
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).context("write key.pem")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((vec![ck.cert.der().clone()], key))
}

/// A rustls server config (TLS 1.3, ring, ALPN `roomgate/2` or
/// `roomgate/1`) for quinn.
pub fn server_crypto(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .context("tls versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("certificate and key do not match")?;
    tls.alpn_protocols = crate::wire::SERVER_ALPNS
        .iter()
        .map(|a| a.to_vec())
        .collect();
    Ok(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).context("quic tls config")?,
    ))
}
