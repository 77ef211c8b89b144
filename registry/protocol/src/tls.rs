//! rustls configurations with the ring provider: the server presents its certificate, clients trust
//! exactly the pinned harness CA (no system roots), and a client that knows the server's own
//! certificate (the local daemon's, read from the same home as the CA) accepts that exact
//! certificate without checking its chain (ADR 0008).

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid PEM in {what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(
    what: &'static str,
    pem: &str,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// The server side: `cert_pem` (chain) and `key_pem`.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs("server certificate", cert_pem)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| TlsError::Pem {
            what: "server key",
            message: e.to_string(),
        })?
        .ok_or(TlsError::Pem {
            what: "server key",
            message: "no private key found".into(),
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // No TLS 1.3 session tickets: this project's clients never resume (see
    // `client_config_pinned`), and the tickets were a write of their own after every handshake,
    // one more wake-up of a client that waits for the upgrade's answer.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client side, trusting only the CA(s) in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_pinned(ca_pem, None)
}

/// [`client_config`], and when `server_cert_pem` is given (the server's own certificate, from the
/// same trusted place as the CA), a server presenting exactly that certificate, byte for byte, is
/// accepted without verifying its chain, name and dates against the CA: the chain check is one
/// ECDSA verification, a third of a local connection's TLS work. Any other certificate is verified
/// against the CA as without it. The handshake's signature (TLS 1.3 CertificateVerify), which
/// proves the server holds the certificate's private key, is verified either way.
pub fn client_config_pinned(
    ca_pem: &str,
    server_cert_pem: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs("CA certificate", ca_pem)? {
        roots.add(cert)?;
    }
    let ca =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let pinned = match server_cert_pem {
        Some(pem) => certs("server certificate", pem)?.into_iter().next(),
        None => None,
    };
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match pinned {
        Some(pinned) => Arc::new(PinnedOrCa { pinned, ca }),
        None => ca,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Each connection gets a new configuration, and rustls only resumes a session with the
    // configuration (verifier) that made it: a ticket kept here could never be used.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The server's own certificate, else the CA: see [`client_config_pinned`].
#[derive(Debug)]
struct PinnedOrCa {
    pinned: rustls_pki_types::CertificateDer<'static>,
    ca: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrCa {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.ca
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.ca.supported_verify_schemes()
    }
}
