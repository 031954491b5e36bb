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
use proxy_common::{client, get, run_to_exit, Proxy};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
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
    let path = dir.join(name);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: two CAs sharing rcgen's default name would look like one CA whose
    // signature does not verify, not like an unknown issuer.
    let cn = format!("test CA {}", path.display());
    params.distinguished_name.push(DnType::CommonName, cn);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
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

// ---------------------------------------------------------------------------------------------
// The listener's certificate, re-read on SIGHUP

/// A plain HTTP origin answering `path=P`.
async fn serve_plain() -> SocketAddr {
    let app = axum::Router::new().route(
        "/{*rest}",
        axum::routing::get(|uri: http::Uri| async move { format!("path={}", uri.path()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    origin
}

/// Two PKIs (CA A and CA B, each with a certificate for 127.0.0.1) in `dir/a` and `dir/b`, and
/// `dir/live/{cert,key}.pem`, holding A's pair: the files the proxy is told about.
fn two_pkis(dir: &Path) -> (Pki, Pki, PathBuf, PathBuf) {
    let [a, b, live] = ["a", "b", "live"].map(|d| {
        let d = dir.join(d);
        std::fs::create_dir(&d).unwrap();
        d
    });
    let (a, b) = (make_pki(&a), make_pki(&b));
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    install(&a, &cert, &key);
    (a, b, cert, key)
}

/// Copies `pki`'s certificate and key over `cert` and `key`, in place (as a renewal does).
fn install(pki: &Pki, cert: &Path, key: &Path) {
    std::fs::copy(&pki.cert_file, cert).unwrap();
    std::fs::copy(&pki.key_file, key).unwrap();
}

fn start_tls(origin: SocketAddr, cert: &Path, key: &Path) -> Proxy {
    Proxy::start(&[
        "--upstream",
        &format!("http://{origin}"),
        "--cold",
        "none",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
}

/// A TLS client trusting only `ca`, offering ALPN `http/1.1`.
fn tls_connector(ca: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type ClientStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` from a client trusting only `ca`, or the handshake's error.
async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> std::io::Result<ClientStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tls_connector(ca).connect(name, tcp).await
}

/// The end-entity certificate the listener presents to a client trusting only `ca`.
async fn presented(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
) -> std::io::Result<CertificateDer<'static>> {
    let tls = connect(addr, ca).await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

/// Waits (bounded) until `needle` has been logged `n` times.
async fn wait_logged(proxy: &Proxy, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.stderr().matches(needle).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "`{needle}` not logged {n} times:\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// GET `path` over an HTTP/1.1 connection already open; returns (status, body).
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, Bytes) {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    (status, body.to_bytes())
}

/// An HTTPS GET on a new connection from a client trusting only `pki`'s CA.
async fn https_get(pki: &Pki, addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let res = https_client(pki, false)
        .get(format!("https://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    (status, body.to_bytes())
}

fn assert_unknown_issuer(r: std::io::Result<impl Sized>) {
    let e = r.err().expect("the handshake should fail");
    assert!(
        e.to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_a_certificate_renewed_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, cert, key) = two_pkis(dir.path());
    let origin = serve_plain().await;
    let proxy = start_tls(origin, &cert, &key);
    assert_eq!(presented(proxy.addr, &a.ca).await.unwrap(), a.chain[0]);
    assert_unknown_issuer(presented(proxy.addr, &b.ca).await);
    // A keep-alive connection made before the reload.
    let tls = connect(proxy.addr, &a.ca).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        send(&mut sender, proxy.addr, "/before").await,
        (StatusCode::OK, Bytes::from("path=/before"))
    );

    install(&b, &cert, &key);
    proxy.signal("-HUP");
    wait_logged(&proxy, "configuration reloaded", 1).await;
    assert!(
        proxy.stderr().contains("listener certificate re-read"),
        "{}",
        proxy.stderr()
    );
    assert!(!proxy.stderr().contains("only a restart applies it"));

    assert_eq!(presented(proxy.addr, &b.ca).await.unwrap(), b.chain[0]);
    assert_unknown_issuer(presented(proxy.addr, &a.ca).await);
    assert_eq!(
        https_get(&b, proxy.addr, "/new").await,
        (StatusCode::OK, Bytes::from("path=/new"))
    );
    // The connection made with certificate A keeps going.
    assert_eq!(
        send(&mut sender, proxy.addr, "/after").await,
        (StatusCode::OK, Bytes::from("path=/after"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_mismatched_certificate_on_reload_is_refused_and_the_old_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, cert, key) = two_pkis(dir.path());
    let origin = serve_plain().await;
    let proxy = start_tls(origin, &cert, &key);

    // A renewal caught half-written: the certificate file is cut short.
    let pem = std::fs::read_to_string(&b.cert_file).unwrap();
    std::fs::write(&cert, &pem[..pem.len() / 2]).unwrap();
    proxy.signal("-HUP");
    wait_logged(&proxy, "configuration reload refused", 1).await;
    let log = proxy.stderr();
    assert!(
        log.contains(&format!("tls_cert {}", cert.display())),
        "{log}"
    );
    assert_eq!(presented(proxy.addr, &a.ca).await.unwrap(), a.chain[0]);
    assert_eq!(
        https_get(&a, proxy.addr, "/x").await,
        (StatusCode::OK, Bytes::from("path=/x"))
    );

    // B's certificate with A's key: they do not belong together.
    std::fs::copy(&b.cert_file, &cert).unwrap();
    std::fs::copy(&a.key_file, &key).unwrap();
    proxy.signal("-HUP");
    wait_logged(&proxy, "configuration reload refused", 2).await;
    let log = proxy.stderr();
    assert!(
        log.contains(&format!(
            "tls_key {} does not match tls_cert",
            key.display()
        )),
        "{log}"
    );
    assert_eq!(presented(proxy.addr, &a.ca).await.unwrap(), a.chain[0]);
    assert!(!log.contains("configuration reloaded"), "{log}");

    // Fixed: the next reload takes it.
    install(&b, &cert, &key);
    proxy.signal("-HUP");
    wait_logged(&proxy, "configuration reloaded", 1).await;
    assert_eq!(presented(proxy.addr, &b.ca).await.unwrap(), b.chain[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_at_new_paths_is_read_and_turning_tls_off_waits_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _, _) = two_pkis(dir.path());
    let origin = serve_plain().await;
    let cfg = dir.path().join("proxy.toml");
    let write = |pki: Option<&Pki>| {
        let tls = pki.map_or(String::new(), |p| {
            format!(
                "tls_cert = {:?}\ntls_key = {:?}\n",
                p.cert_file.to_str().unwrap(),
                p.key_file.to_str().unwrap()
            )
        });
        let site =
            format!("[[site]]\nname = \"web\"\nupstream = \"http://{origin}\"\ncold = \"none\"\n");
        std::fs::write(&cfg, tls + &site).unwrap();
    };
    write(Some(&a));
    let proxy = Proxy::start(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(presented(proxy.addr, &a.ca).await.unwrap(), a.chain[0]);

    write(Some(&b));
    proxy.signal("-HUP");
    wait_logged(&proxy, "configuration reloaded", 1).await;
    assert_eq!(presented(proxy.addr, &b.ca).await.unwrap(), b.chain[0]);

    // Turning TLS off needs a restart: a warning, and the listener keeps B's certificate.
    write(None);
    proxy.signal("-HUP");
    wait_logged(&proxy, "configuration reloaded", 2).await;
    let log = proxy.stderr();
    assert!(
        log.contains("only a restart applies it") && log.contains("TLS on or off"),
        "{log}"
    );
    assert_eq!(
        https_get(&b, proxy.addr, "/still").await,
        (StatusCode::OK, Bytes::from("path=/still"))
    );
}

#[test]
fn check_loads_the_listener_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, cert, key) = two_pkis(dir.path());
    let check = |cert: &Path, key: &Path| {
        run_to_exit(&[
            "--check",
            "--upstream",
            "http://127.0.0.1:1",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    };
    let (status, stderr) = check(&cert, &key);
    assert!(status.success(), "{stderr}");
    let (status, stderr) = check(&b.cert_file, &a.key_file);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "tls_key {} does not match tls_cert",
            a.key_file.display()
        )),
        "{stderr}"
    );
    let (status, stderr) = check(&dir.path().join("missing.pem"), &key);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tls_cert"), "{stderr}");
}
