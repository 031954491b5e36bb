//! HTTPS upstreams (issue 16): the binary in front of a loopback HTTPS origin whose certificate
//! is made at test time with rcgen and signed by a CA the site is told about in `ca_file`.
#![cfg(feature = "proxy")]

mod proxy_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use proxy_common::{client, get, Proxy};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A CA, written to `ca.pem`, and a certificate for 127.0.0.1 it signed (also written, with
/// its key, to `cert.pem` and `key.pem`).
struct Pki {
    ca_file: PathBuf,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn make_ca(dir: &Path, name: &str) -> (PathBuf, CertifiedIssuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, ca.pem()).unwrap();
    (path, ca)
}

fn make_pki(dir: &Path) -> Pki {
    let (ca_file, ca) = make_ca(dir, "ca.pem");
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Pki {
        ca_file,
        ca: ca.der().clone(),
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        cert_file,
        key_file,
    }
}

/// An HTTPS origin offering `alpn`; answers `version=V` (the HTTP version it was spoken to
/// in), cacheable for a minute, and counts its calls.
async fn serve_https(pki: &Pki, alpn: &[&[u8]]) -> (SocketAddr, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), PrivateKeyDer::Pkcs8(pki.key.clone_key()))
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, calls) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                // A handshake the client refuses (wrong CA) ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let body = format!("version={:?} path={}", req.version(), req.uri().path());
                    let res = Response::builder()
                        .header("cache-control", "max-age=60")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    async move { Ok::<_, std::convert::Infallible>(res) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, calls)
}

fn start(origin: SocketAddr, ca_file: &Path) -> Proxy {
    Proxy::start(&[
        "--upstream",
        &format!("https://{origin}"),
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--cold",
        "none",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_miss_then_hit_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (origin, calls) = serve_https(&pki, &[b"http/1.1"]).await;
    let proxy = start(origin, &pki.ca_file);
    let c = client();
    let miss = get(&c, proxy.addr, "/a").await;
    assert_eq!(miss.status, StatusCode::OK, "{}", miss.text());
    assert_eq!(miss.text(), "version=HTTP/1.1 path=/a");
    assert!(
        miss.cache_status().contains("fwd=uri-miss"),
        "{}",
        miss.cache_status()
    );
    let hit = get(&c, proxy.addr, "/a").await;
    assert_eq!(hit.text(), miss.text());
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_offering_h2_is_spoken_to_in_http2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (origin, calls) = serve_https(&pki, &[b"h2", b"http/1.1"]).await;
    let proxy = start(origin, &pki.ca_file);
    let c = client();
    for path in ["/x", "/y", "/x"] {
        let r = get(&c, proxy.addr, path).await;
        assert_eq!(r.text(), format!("version=HTTP/2.0 path={path}"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_from_another_ca_is_a_502_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (other_ca, _) = make_ca(dir.path(), "other-ca.pem");
    let (origin, calls) = serve_https(&pki, &[b"http/1.1"]).await;
    let proxy = start(origin, &other_ca);
    let c = client();
    for _ in 0..2 {
        let r = get(&c, proxy.addr, "/a").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(
            r.text().starts_with("daramjwee: TLS failed with upstream")
                && r.text().contains("invalid peer certificate"),
            "{}",
            r.text()
        );
        assert_eq!(r.headers["cache-control"], "no-store");
        assert!(!r.cache_status().contains("hit"), "{}", r.cache_status());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A client that trusts only `pki`'s CA and offers ALPN `h2` alone or `http/1.1` alone.
fn https_client(pki: &Pki, h2: bool) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let conn = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new()).build(conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_http1_and_h2_and_tells_the_upstream_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let app = axum::Router::new().route(
        "/{*rest}",
        axum::routing::get(|h: http::HeaderMap| async move {
            let xfp = h
                .get("x-forwarded-proto")
                .map(|v| v.to_str().unwrap().to_string());
            (
                [("cache-control", "max-age=60")],
                format!("xfp={}", xfp.unwrap_or_default()),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let proxy = Proxy::start(&[
        "--upstream",
        &format!("http://{origin}"),
        "--cold",
        "none",
        "--tls-cert",
        pki.cert_file.to_str().unwrap(),
        "--tls-key",
        pki.key_file.to_str().unwrap(),
    ]);
    let url = format!("https://{}/a", proxy.addr);
    for (h2, version, outcome) in [
        (false, http::Version::HTTP_11, "fwd=uri-miss"),
        (true, http::Version::HTTP_2, "; hit"),
    ] {
        let res = https_client(&pki, h2)
            .get(url.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.version(), version);
        let status = res.headers()["cache-status"].to_str().unwrap().to_string();
        assert!(status.contains(outcome), "{status}");
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap();
        assert_eq!(body.to_bytes(), "xfp=https");
    }
    // Plain HTTP on the TLS port is not served.
    let plain = client()
        .get(format!("http://{}/a", proxy.addr).parse().unwrap())
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);
}
