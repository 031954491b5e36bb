//! Memory bound through the `daramjwee` binary in its default configuration (a 256 MiB memory
//! hot tier keeping objects up to 16 MiB, a 10 GiB file cold tier keeping up to 5 GiB): a 1 GiB
//! and a 4 GiB object each go through a miss (stored in the cold tier as they stream) and a
//! cold hit, while the proxy's peak RSS is read from `/proc/PID/status`. Then the file the cold
//! tier wrote is read plainly, to compare the hit's throughput with the disk's (page cache).
//!
//! ```text
//! cargo bench --features proxy --bench memory_proxy                  # 1 GiB and 4 GiB
//! MEMORY_BENCH_SIZES_MIB=100,1024 cargo bench --features proxy --bench memory_proxy
//! ```
//!
//! Under `cargo test --all-targets` (no `--bench`) it smoke-tests the phases with a 32 MiB
//! object. Goal: proxy peak RSS < 64 MiB on the miss and on the cold hit, whatever the size.
//! `MEMORY_BENCH_DIR` picks where the data directory goes (default: a temp dir; a tmpfs would
//! count the stored object as memory of the machine, not of the proxy).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Path as UrlPath;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CHUNK: usize = 64 * 1024;
const MIB: u64 = 1 << 20;

/// The byte at offset `pos` of every object (runs of 4 KiB share a value).
fn pattern(pos: u64) -> u8 {
    (pos / 4096 % 251) as u8
}

/// `/obj/{mib}`: `mib` MiB with `Content-Length`, cacheable, generated in fresh 64 KiB chunks.
async fn object(UrlPath(mib): UrlPath<u64>) -> Response {
    let len = mib * MIB;
    let chunks = futures_util::stream::unfold(0u64, move |pos| async move {
        if pos >= len {
            return None;
        }
        let n = CHUNK.min((len - pos) as usize) as u64;
        let buf: Vec<u8> = (pos..pos + n).map(pattern).collect();
        Some((Ok::<_, std::io::Error>(Bytes::from(buf)), pos + n))
    });
    let mut res = Body::from_stream(chunks).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    res
}

/// The proxy as a child process; killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(upstream: SocketAddr, data_dir: &Path) -> Result<Proxy, BoxError> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_daramjwee"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--upstream")
        .arg(format!("http://{upstream}"))
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let line = lines.next().ok_or("the proxy exited before listening")??;
        if let Some(a) = line.strip_prefix("daramjwee listening on http://") {
            addr = Some(a.parse()?);
        } else if let Some(a) = line.strip_prefix("daramjwee admin on http://") {
            admin = Some(a.parse()?);
        }
    }
    // Keep draining stdout so the proxy never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let (addr, admin) = (addr.ok_or("no address")?, admin.ok_or("no admin")?);
    Ok(Proxy { child, addr, admin })
}

/// A field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the process's `VmHWM` to its current RSS (Linux: 5 into `clear_refs`).
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// GETs `path` through the proxy, checking each chunk; returns the bytes and `Cache-Status`.
async fn get(addr: SocketAddr, path: &str) -> Result<(u64, String), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = res
        .headers()
        .get("cache-status")
        .map_or(String::new(), |v| v.to_str().unwrap_or_default().to_owned());
    let mut body = res.into_body();
    let mut pos = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            for (i, b) in data.iter().enumerate().step_by(4096) {
                if *b != pattern(pos + i as u64) {
                    return Err(format!("wrong byte at {}", pos + i as u64).into());
                }
            }
            pos += data.len() as u64;
        }
    }
    Ok((pos, status))
}

/// The largest file under `dir`: the stored object.
fn largest_file(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let (path, meta) = (e.path(), e.metadata().ok()?);
            if meta.is_dir() {
                stack.push(path);
            } else if best.as_ref().is_none_or(|(n, _)| meta.len() > *n) {
                best = Some((meta.len(), path));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Reads `path` to its end in 64 KiB reads; returns the seconds it took.
fn plain_read(path: &Path) -> Result<f64, BoxError> {
    let t = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    while f.read(&mut buf)? > 0 {}
    Ok(t.elapsed().as_secs_f64())
}

/// Sends `path` over a loopback TCP connection with `std::io::copy` (sendfile on Linux: no
/// copy through user space) and reads it on the other end; returns the seconds it took. The
/// floor a cold hit could reach on this machine.
async fn file_over_tcp(path: &Path) -> Result<f64, BoxError> {
    use tokio::io::AsyncReadExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let path = path.to_path_buf();
    let t = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut sock, _) = listener.accept()?;
        std::io::copy(&mut std::fs::File::open(path)?, &mut sock)
    });
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; CHUNK];
    while sock.read(&mut buf).await? > 0 {}
    sender.join().map_err(|_| "sender panicked")??;
    Ok(t.elapsed().as_secs_f64())
}

/// Waits until the proxy's `/stats` counts a committed fill (the commit follows the body's
/// end), then returns the file the cold tier holds, if it is at least `len` bytes.
async fn wait_stored(admin: SocketAddr, dir: &Path, len: u64) -> Result<Option<PathBuf>, BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for _ in 0..3000 {
        let res = client.get(format!("http://{admin}/stats").parse()?).await?;
        let body = res.into_body().collect().await?.to_bytes();
        if !String::from_utf8_lossy(&body).contains("\"fills_committed\":0") {
            let big = |p: &PathBuf| std::fs::metadata(p).is_ok_and(|m| m.len() >= len);
            return Ok(largest_file(dir).filter(big));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// Runs both phases for one size; returns whether the object was stored and hit whole and,
/// when `rss_goal`, the peaks stayed under 64 MiB (a debug build's smoke test skips that goal:
/// its runtime alone takes 20 MiB more).
async fn one_size(
    upstream: SocketAddr,
    mib: u64,
    base: &Path,
    rss_goal: bool,
) -> Result<bool, BoxError> {
    let data = tempfile::tempdir_in(base)?;
    let proxy = start_proxy(upstream, data.path())?;
    let pid = proxy.child.id();
    let len = mib * MIB;
    let path = format!("/obj/{mib}");
    let rss =
        |f| status_kib(pid, f).map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!("{mib} MiB object; proxy RSS at start {}", rss("VmRSS:"));
    reset_peak(pid);
    let t = Instant::now();
    let (got, miss_status) = get(proxy.addr, &path).await?;
    let miss_secs = t.elapsed().as_secs_f64();
    let miss_peak = status_kib(pid, "VmHWM:");
    let miss_rss = rss("VmHWM:");
    let cold = data.path().join("default").join("cold");
    let stored = wait_stored(proxy.admin, &cold, len).await?;
    reset_peak(pid);
    let t = Instant::now();
    let (hit_got, hit_status) = get(proxy.addr, &path).await?;
    let hit_secs = t.elapsed().as_secs_f64();
    let hit_peak = status_kib(pid, "VmHWM:");
    let hit_rss = rss("VmHWM:");
    let rate = |s: f64| len as f64 / MIB as f64 / s;
    println!(
        "  miss: {miss_secs:>7.2} s {:>8.1} MiB/s  peak RSS {miss_rss}  [{miss_status}]",
        rate(miss_secs)
    );
    println!(
        "  hit:  {hit_secs:>7.2} s {:>8.1} MiB/s  peak RSS {hit_rss}  [{hit_status}]",
        rate(hit_secs)
    );
    if let Some(file) = &stored {
        let read = plain_read(file)?;
        println!(
            "  plain read of the stored file: {read:>7.2} s {:>8.1} MiB/s; hit / plain read = {:.2}",
            rate(read),
            rate(hit_secs) / rate(read)
        );
        let tcp = file_over_tcp(file).await?;
        println!(
            "  the same file over loopback TCP:  {tcp:>7.2} s {:>8.1} MiB/s; hit / that = {:.2}",
            rate(tcp),
            rate(hit_secs) / rate(tcp)
        );
    }
    let worst = miss_peak.max(hit_peak).unwrap_or(u64::MAX) as f64 / 1024.0;
    let ok = got == len && hit_got == len && stored.is_some() && hit_status.contains("detail=file");
    println!(
        "  stored in the cold tier: {}; cold hit: {}; peak RSS < 64 MiB: {}",
        stored.is_some(),
        hit_status.contains("detail=file"),
        if worst < 64.0 { "met" } else { "NOT met" }
    );
    Ok(ok && (worst < 64.0 || !rss_goal))
}

fn main() -> Result<(), BoxError> {
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<u64> = match std::env::var("MEMORY_BENCH_SIZES_MIB") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if benching => vec![1024, 4096],
        Err(_) => vec![32],
    };
    let base =
        std::env::var("MEMORY_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let upstream = listener.local_addr()?;
        let app = axum::Router::new().route("/obj/{mib}", axum::routing::get(object));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut all = true;
        for mib in sizes {
            all &= one_size(upstream, mib, &base, benching).await?;
        }
        if !all {
            return Err("a phase failed its goal (see above)".into());
        }
        Ok(())
    })
}
