//! TLS to upstreams: the rustls client configuration of a site, and how a TLS failure is told;
//! and TLS on the listener, whose certificate a reload swaps ([`CertResolver`]).
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
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::swap::Swap;

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
    /// The `tls_cert` file holds no certificate.
    #[error("tls_cert {}: no certificate in it", path.display())]
    NoCertInFile {
        /// The file.
        path: PathBuf,
    },
    /// The listener's key does not match its certificate (a renewal caught between writing
    /// the two files, or the wrong key).
    #[error("tls_key {} does not match tls_cert {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The listener's key is not one the provider can sign with, or the certificate cannot be
    /// parsed to compare them.
    #[error("tls_key {} with tls_cert {}: {source}", key.display(), cert.display())]
    KeyPair {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason (boxed: it would make every `Result` carrying this error large).
        #[source]
        source: Box<rustls::Error>,
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

/// Reads the listener's certificate chain and private key (PEM) and checks that they belong
/// together: what the listener presents, at startup and after each reload.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::ReadPem { what, path, source }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(read_err("tls_cert", cert))?
        .collect::<Result<_, _>>()
        .map_err(read_err("tls_cert", cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertInFile {
            path: cert.to_path_buf(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(read_err("tls_key", key))?;
    let provider = rustls::crypto::ring::default_provider();
    // `from_der` also compares the key's public half with the certificate's.
    CertifiedKey::from_der(chain, der, &provider)
        .map(Arc::new)
        .map_err(|source| {
            let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
            match source {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::KeyMismatch { cert, key }
                }
                source => TlsError::KeyPair {
                    cert,
                    key,
                    source: Box::new(source),
                },
            }
        })
}

/// The listener's certificate, the same for every client hello, swappable while the listener
/// runs: a handshake takes the key current when it starts, so connections established before a
/// swap keep theirs. A [`Swap`] like the sites and the access log; read from the shared place
/// (a handshake is rare next to a request).
#[derive(Debug)]
pub struct CertResolver {
    current: Swap<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// A resolver presenting `key`.
    pub fn new(key: Arc<CertifiedKey>) -> CertResolver {
        CertResolver {
            current: Swap::new(key),
        }
    }

    /// Presents `key` to every handshake from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.current.replace(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.get())
    }
}

/// The listener's server configuration: certificates from `resolver`, ALPN `h2` then
/// `http/1.1`. Built once; a reload swaps the resolver's key, not the configuration.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
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

    /// A self-signed certificate for 127.0.0.1 and its key, written to `NAME.crt`/`NAME.key`.
    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let paths = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        paths
    }

    #[test]
    fn the_listener_key_must_match_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, a_key) = write_pair(dir.path(), "a");
        let (_, b_key) = write_pair(dir.path(), "b");
        assert!(certified_key(&a_cert, &a_key).is_ok());
        let e = certified_key(&a_cert, &b_key).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("b.key does not match"), "{e}");
    }

    #[test]
    fn a_listener_cert_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = write_pair(dir.path(), "a");
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "renewal in progress\n").unwrap();
        let e = certified_key(&empty, &key).unwrap_err();
        assert!(matches!(e, TlsError::NoCertInFile { .. }), "{e}");
        let e = certified_key(&dir.path().join("missing.crt"), &key).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::ReadPem {
                    what: "tls_cert",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn the_resolver_presents_the_key_last_put_in() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, a_key) = write_pair(dir.path(), "a");
        let (b_cert, b_key) = write_pair(dir.path(), "b");
        let (a, b) = (
            certified_key(&a_cert, &a_key).unwrap(),
            certified_key(&b_cert, &b_key).unwrap(),
        );
        let resolver = CertResolver::new(a.clone());
        assert!(Arc::ptr_eq(&resolver.current.get(), &a));
        resolver.replace(b.clone());
        assert!(Arc::ptr_eq(&resolver.current.get(), &b));
        assert!(server_config(Arc::new(resolver)).is_ok());
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
