//! The `daramjwee` binary as a child process, and a hyper client to talk to it over TCP.
//! Shared by the `tests/proxy*.rs` files; each uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

// ---------------------------------------------------------------------------------------------
// The proxy process

/// A running `daramjwee`; killed when dropped, whatever the test did.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts the binary on ports chosen by the OS, with `args` appended, and waits (bounded)
    /// until it prints both listener addresses.
    pub fn start(args: &[&str]) -> Proxy {
        Proxy::start_logging(args, "info")
    }

    /// [`Proxy::start`] with `filter` as its `RUST_LOG`.
    pub fn start_logging(args: &[&str], filter: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_daramjwee"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("RUST_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daramjwee");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Proxy {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.addr.port() == 0 || proxy.admin.port() == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "daramjwee did not report its listeners; stderr:\n{}",
                    proxy.stderr()
                )
            });
            let listening = line
                .strip_prefix("daramjwee listening on http://")
                .or_else(|| line.strip_prefix("daramjwee listening on https://"));
            if let Some(a) = listening {
                proxy.addr = a.parse().unwrap();
            } else if let Some(a) = line.strip_prefix("daramjwee admin on http://") {
                proxy.admin = a.parse().unwrap();
            }
        }
        proxy
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "daramjwee did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the binary to completion (it must exit by itself) and returns (status, stderr).
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_daramjwee"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run daramjwee");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// A client

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn request(
    c: &TestClient,
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Got {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = c.request(b.body(Full::new(body)).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(c: &TestClient, addr: SocketAddr, path: &str) -> Got {
    request(c, "GET", format!("http://{addr}{path}"), &[], Bytes::new()).await
}

pub async fn post(c: &TestClient, addr: SocketAddr, path: &str, body: Bytes) -> Got {
    request(c, "POST", format!("http://{addr}{path}"), &[], body).await
}

pub fn upstream(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
