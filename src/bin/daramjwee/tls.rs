//! TLS to upstreams: the rustls client configuration of a site, and how a TLS failure is told.
//!
//! Trust comes from the platform's store (`rustls-native-certs`) or, when the site names one,
//! from its `ca_file` alone (as `curl --cacert` does), so a private CA never widens what the
//! other sites trust. The crypto provider is `ring`, named explicitly: the process never relies
//! on a default provider being installed. This module must never weaken verification: there is
//! no "insecure" switch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a site's TLS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The platform's trust store gave no usable certificate.
    #[error("no CA certificates found in the platform's trust store ({errors}); set `ca_file`")]
    NoPlatformRoots {
        /// What the loader reported, joined.
        errors: String,
    },
    /// A PEM file (`ca_file`, `tls_cert`, `tls_key`) could not be read or holds a malformed
    /// or no usable block.
    #[error("{what} {}: {source}", path.display())]
    ReadPem {
        /// The setting that names the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The `ca_file` holds no certificate rustls accepts as a trust anchor.
    #[error("ca_file {}: no usable CA certificate in it", path.display())]
    NoCaInFile {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the configuration (no protocol version in common with the provider).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The client configuration of a site whose upstream is `https`: verification against
/// `ca_file`'s certificates, or else the platform's. ALPN is set by the connector.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = match ca_file {
        Some(path) => roots_from_file(path)?,
        None => platform_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A configuration that trusts nothing, for the connector of a plain-`http` site (which never
/// handshakes): loading the platform's store there would only cost startup time.
pub fn empty_config() -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let read_err = |source| TlsError::ReadPem {
        what: "ca_file",
        path: path.to_path_buf(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCaInFile {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

fn platform_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 || !found.errors.is_empty() {
        tracing::debug!(
            added,
            ignored,
            errors = ?found.errors,
            "platform trust store loaded with skipped entries"
        );
    }
    if added == 0 {
        let errors = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError::NoPlatformRoots { errors });
    }
    Ok(roots)
}

/// The listener's server configuration: the certificate chain and key (PEM), ALPN `h2` then
/// `http/1.1`.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let read_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::ReadPem { what, path, source }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(read_err("tls_cert", cert))?
        .collect::<Result<_, _>>()
        .map_err(read_err("tls_cert", cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(read_err("tls_key", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The rustls error somewhere in `e`'s chain, if the failure was TLS (a certificate the site
/// does not trust, a handshake the upstream broke), so the 502 can say so plainly.
pub fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // tokio-rustls wraps the rustls error in an `io::Error`, and hyper-rustls wraps that
        // in another; `io::Error::source` skips the error it wraps, so unwrap it by hand.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = client_config(Some(&path)).unwrap_err();
        assert!(matches!(e, TlsError::NoCaInFile { .. }), "{e}");
        let e = client_config(Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert!(matches!(e, TlsError::ReadPem { .. }), "{e}");
    }

    #[test]
    fn a_certificate_error_is_found_through_io_wrapping() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let twice = std::io::Error::other(io);
        assert!(tls_cause(&twice).is_some());
        let plain = std::io::Error::other("refused");
        assert!(tls_cause(&plain).is_none());
    }
}
