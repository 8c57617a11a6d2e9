//! Mutual TLS for the `waldur.backend.v1` contract.
//!
//! * [`crate::pki`] creates a site CA and issues server and client
//!   certificates with the right SANs, key usages and extended key usages
//!   (used by the `pki` subcommands, the tests and the demo);
//! * [`TlsFiles`] loads PEM files into a rustls server config and tonic's
//!   client config, naming the file in every error;
//! * [`peer_identities`] extracts the SAN identities of a verified peer
//!   certificate, which the backend server checks against its allowlist.
//!
//! Chain validation itself is rustls' (webpki) job: a certificate from another
//! CA, an expired one, or none at all fails the handshake.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// What can go wrong loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// Which file ("ca", "certificate", "key").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM block of the expected kind.
    #[error("{what} file {path} holds no PEM {expected}")]
    NoPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The block kind looked for.
        expected: &'static str,
    },
    /// A certificate could not be parsed.
    #[error("cannot parse certificate: {0}")]
    Parse(String),
    /// Certificate generation failed.
    #[error("cannot issue certificate: {0}")]
    Issue(#[from] rcgen::Error),
}

/// The three PEM files one side of a mutual TLS connection needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The site CA certificate that signs the peer's certificate.
    pub ca: PathBuf,
    /// This side's certificate (chain), PEM.
    pub cert: PathBuf,
    /// This side's private key, PEM.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn rebase(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            crate::rebase(p, base);
        }
    }

    /// Reads and checks the three files.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let ca = read_pem(&self.ca, "ca", "CERTIFICATE")?;
        let cert = read_pem(&self.cert, "certificate", "CERTIFICATE")?;
        let key = read_pem(&self.key, "key", "PRIVATE KEY")?;
        Ok(TlsMaterial { ca, cert, key })
    }

    /// A tonic client config that presents our certificate and accepts only a
    /// server certificate signed by the CA and valid for `server_name`.
    pub fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
        Ok(self.load()?.client_config(server_name))
    }
}

/// PEM material held in memory.
#[derive(Clone)]
pub struct TlsMaterial {
    /// CA certificate, PEM.
    pub ca: Vec<u8>,
    /// Own certificate, PEM.
    pub cert: Vec<u8>,
    /// Own key, PEM.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// The CA as trust roots, our chain and our key, parsed.
    fn parsed(&self) -> Result<Parsed, TlsError> {
        let parse = |e: &dyn std::fmt::Display| TlsError::Parse(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca.as_slice()) {
            roots
                .add(cert.map_err(|e| parse(&e))?)
                .map_err(|e| parse(&e))?;
        }
        let chain = rustls_pemfile::certs(&mut self.cert.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| parse(&e))?;
        let key = rustls_pemfile::private_key(&mut self.key.as_slice())
            .map_err(|e| parse(&e))?
            .ok_or_else(|| TlsError::Parse("no private key".into()))?;
        Ok(Parsed { roots, chain, key })
    }

    /// A rustls server config requiring a client certificate signed by the
    /// CA, offering HTTP/2, for servers that run the handshake themselves
    /// (to see and count the handshakes they refuse).
    pub fn rustls_server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
        let parse = |e: &dyn std::fmt::Display| TlsError::Parse(e.to_string());
        let Parsed { roots, chain, key } = self.parsed()?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| parse(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| parse(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| parse(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(std::sync::Arc::new(config))
    }

    /// A rustls client config presenting our certificate and trusting only
    /// certificates the CA signed, for connections this side dials and
    /// handshakes itself (the dial-out tunnel). The caller sets ALPN.
    pub fn rustls_client_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, TlsError> {
        let parse = |e: &dyn std::fmt::Display| TlsError::Parse(e.to_string());
        let Parsed { roots, chain, key } = self.parsed()?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| parse(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| parse(&e))?;
        Ok(std::sync::Arc::new(config))
    }

    /// A tonic client config pinned to `server_name`.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(server_name.to_owned())
    }
}

fn read_pem(path: &Path, what: &'static str, expected: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let ok = rustls_pemfile::read_all(&mut bytes.as_slice()).any(|item| {
        matches!(
            (expected, item),
            ("CERTIFICATE", Ok(rustls_pemfile::Item::X509Certificate(_)))
                | ("PRIVATE KEY", Ok(rustls_pemfile::Item::Pkcs8Key(_)))
                | ("PRIVATE KEY", Ok(rustls_pemfile::Item::Pkcs1Key(_)))
                | ("PRIVATE KEY", Ok(rustls_pemfile::Item::Sec1Key(_)))
        )
    });
    if !ok {
        return Err(TlsError::NoPem {
            what,
            path: path.to_owned(),
            expected,
        });
    }
    Ok(bytes)
}

/// The material of [`TlsMaterial`], parsed.
struct Parsed {
    roots: rustls::RootCertStore,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// Trust roots for a client of a server outside the site PKI (a broker, a
/// directory, Waldur's STOMP): the CAs in `ca_file` when given, else the
/// system's. An empty result is an error, never a client that trusts
/// nothing and fails every handshake with a puzzling message.
pub fn client_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = read_pem(path, "ca", "CERTIFICATE")?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| TlsError::Parse(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Parse(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(TlsError::Parse(format!(
                    "no trusted root certificates found in the system store ({} errors loading them)",
                    native.errors.len()
                )));
            }
        }
    }
    Ok(roots)
}

/// The identities of a TLS peer: those of the first certificate it
/// presented (none when it presented none). The handshake must have
/// verified the chain.
pub fn leaf_identities(
    certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Result<Vec<String>, TlsError> {
    match certs.and_then(|c| c.first()) {
        Some(leaf) => peer_identities(leaf),
        None => Ok(Vec::new()),
    }
}

/// The identities a certificate claims: its SAN DNS names and URIs, in order.
///
/// Only call this on a certificate the TLS layer has already verified; it
/// checks nothing about trust.
pub fn peer_identities(cert_der: &[u8]) -> Result<Vec<String>, TlsError> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| TlsError::Parse(e.to_string()))?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.push((*d).to_owned()),
                GeneralName::URI(u) => out.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    #[test]
    fn peer_identities_lists_san_dns_names_of_an_issued_client_certificate() {
        let ca = pki::create_ca("test ca", pki::Validity::days(1)).unwrap();
        let client = pki::issue(
            &ca,
            pki::Usage::Client,
            "coordinator.test",
            &[],
            pki::Validity::days(1),
        )
        .unwrap();
        let der = pki::pem_to_der(&client.cert_pem).unwrap();
        assert_eq!(
            peer_identities(&der).unwrap(),
            vec!["coordinator.test".to_owned()]
        );
    }

    #[test]
    fn loading_a_missing_file_names_the_file() {
        let files = TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_key_file_given_as_certificate_is_rejected_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::create_ca("test ca", pki::Validity::days(1)).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &ca.key_pem).unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("key.pem"),
            key: dir.path().join("key.pem"),
        };
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("holds no PEM CERTIFICATE"), "{err}");
    }
}
