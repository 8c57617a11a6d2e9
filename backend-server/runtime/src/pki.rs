//! A small site PKI: one CA, server certificates for backend servers and
//! client certificates for coordinators.
//!
//! Keys are ECDSA P-256. Server certificates carry `serverAuth` and the host
//! names and IP addresses clients dial; client certificates carry
//! `clientAuth` and one SAN DNS name, the identity a backend server's
//! allowlist names. See `deploy/PKI.md` for how a site rolls certificates.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::TlsError;

/// A certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A backend server (TLS server authentication).
    Server,
    /// A coordinator or another client (TLS client authentication).
    Client,
    /// Both: for the dial-out tunnel, where the backend server is the TLS
    /// client and the coordinator the TLS server, besides the direct
    /// connection the other way round.
    Both,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From one hour ago (clock skew) for `days` days.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    /// A window that ended yesterday: for tests of expired certificates.
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

/// Creates a self-signed site CA.
pub fn create_ca(common_name: &str, validity: Validity) -> Result<Issued, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a leaf certificate signed by `ca`.
///
/// `name` becomes the common name and the first SAN; `extra_sans` adds more
/// (IP addresses are recognised and encoded as IP SANs).
pub fn issue(
    ca: &Issued,
    usage: Usage,
    name: &str,
    extra_sans: &[String],
    validity: Validity,
) -> Result<Issued, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    for san in std::iter::once(name).chain(extra_sans.iter().map(String::as_str)) {
        let entry = match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.try_into()?),
        };
        params.subject_alt_names.push(entry);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Both => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads a CA written by [`write`].
pub fn read(dir: &Path, stem: &str) -> Result<Issued, TlsError> {
    let read = |what: &'static str, path: std::path::PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| TlsError::Read { what, path, source })
    };
    Ok(Issued {
        cert_pem: read("certificate", dir.join(format!("{stem}.pem")))?,
        key_pem: read("key", dir.join(format!("{stem}.key")))?,
    })
}

/// Writes `<stem>.pem` and `<stem>.key` (mode 0600) into `dir`.
///
/// An existing key is never overwritten: rolling a certificate is a
/// deliberate act (`deploy/PKI.md`).
pub fn write(dir: &Path, stem: &str, issued: &Issued) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    crate::secret_file::private_dir(dir)?;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(format!("{stem}.key")))?;
    key.write_all(issued.key_pem.as_bytes())?;
    std::fs::write(dir.join(format!("{stem}.pem")), &issued.cert_pem)
}

/// Decodes the first certificate of a PEM string.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|c| c.to_vec())
        .ok_or_else(|| TlsError::Parse("no certificate in PEM".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_server_certificate_carries_ip_and_dns_sans() {
        let ca = create_ca("ca", Validity::days(1)).unwrap();
        let server = issue(
            &ca,
            Usage::Server,
            "backend.test",
            &["127.0.0.1".into()],
            Validity::days(1),
        )
        .unwrap();
        let der = pem_to_der(&server.cert_pem).unwrap();
        assert_eq!(
            crate::peer_identities(&der).unwrap(),
            vec!["backend.test".to_owned()]
        );
        assert!(format!("{server:?}").contains("<redacted>"));
        assert!(!format!("{server:?}").contains(&server.key_pem));
    }

    #[test]
    fn write_refuses_to_overwrite_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca("ca", Validity::days(1)).unwrap();
        write(dir.path(), "ca", &ca).unwrap();
        assert!(write(dir.path(), "ca", &ca).is_err());
        let back = read(dir.path(), "ca").unwrap();
        assert_eq!(back.cert_pem, ca.cert_pem);
    }
}
