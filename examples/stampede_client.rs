//! Fires N concurrent GETs for one URL, each on its own connection, all released at once, and
//! prints time to first byte and time to complete (p50, max) over every client.
//!
//! ```text
//! cargo run --release --example stampede_client -- http://127.0.0.1:8080/obj/1k?r=1 1000
//! ```
//!
//! Connections are opened first; then every client sends its request at the same instant (a
//! barrier). Times are measured from the earliest send. A client counts as `ok` when it got a
//! 200 and as many body bytes as `Content-Length` said; it prints one line:
//! `clients=N ok=N errors=N bytes=B ttfb_p50_ms=.. ttfb_max_ms=.. done_p50_ms=.. done_max_ms=..`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

struct Sample {
    sent: Instant,
    first: Instant,
    done: Instant,
    bytes: u64,
    ok: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let url: Uri = args
        .next()
        .ok_or("usage: stampede_client URL N [timeout_s]")?
        .parse()?;
    let n: usize = args.next().ok_or("usage: stampede_client URL N")?.parse()?;
    let timeout = Duration::from_secs(args.next().map_or(Ok(60), |s| s.parse())?);
    let authority = url.authority().ok_or("URL has no host")?.clone();
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_string();

    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (barrier, addr, path, host) = (
            barrier.clone(),
            addr.clone(),
            path.clone(),
            authority.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let conn = async {
                let mut tries = 0;
                loop {
                    match TcpStream::connect(&addr).await {
                        Ok(s) => break Ok(s),
                        Err(e) if tries < 20 => {
                            tries += 1;
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            .await;
            let sender = match conn {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                        Ok((sender, conn)) => {
                            tokio::spawn(conn);
                            Some(sender)
                        }
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            };
            // Every client waits here, connected or not, so the barrier always opens.
            barrier.wait().await;
            let sent = Instant::now();
            let fail = |t: Instant| Sample {
                sent,
                first: t,
                done: t,
                bytes: 0,
                ok: false,
            };
            let Some(mut sender) = sender else {
                return fail(Instant::now());
            };
            let req = Request::get(path)
                .header("host", host)
                .body(Empty::<Bytes>::new())
                .expect("valid request");
            let run = async {
                let res = match sender.send_request(req).await {
                    Ok(r) => r,
                    Err(_) => return fail(Instant::now()),
                };
                let head = Instant::now();
                let status = res.status();
                let expect: Option<u64> = res
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let mut body = res.into_body();
                let mut first = None;
                let mut bytes = 0u64;
                let mut clean = true;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if let Ok(d) = f.into_data() {
                                if !d.is_empty() {
                                    first.get_or_insert_with(Instant::now);
                                    bytes += d.len() as u64;
                                }
                            }
                        }
                        Err(_) => {
                            clean = false;
                            break;
                        }
                    }
                }
                let done = Instant::now();
                Sample {
                    sent,
                    first: first.unwrap_or(head),
                    done,
                    bytes,
                    ok: clean && status == StatusCode::OK && expect.is_none_or(|e| e == bytes),
                }
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(s) => s,
                Err(_) => fail(Instant::now()),
            }
        }));
    }
    let mut samples = Vec::with_capacity(n);
    for t in tasks {
        samples.push(t.await?);
    }
    let start = samples.iter().map(|s| s.sent).min().ok_or("no clients")?;
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut ttfb: Vec<f64> = ok.iter().map(|s| ms(s.first - start)).collect();
    let mut done: Vec<f64> = ok.iter().map(|s| ms(s.done - start)).collect();
    ttfb.sort_by(f64::total_cmp);
    done.sort_by(f64::total_cmp);
    let p50 = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    println!(
        "clients={n} ok={} errors={} bytes={} ttfb_p50_ms={:.1} ttfb_max_ms={:.1} done_p50_ms={:.1} done_max_ms={:.1}",
        ok.len(),
        n - ok.len(),
        ok.first().map_or(0, |s| s.bytes),
        p50(&ttfb),
        max(&ttfb),
        p50(&done),
        max(&done),
    );
    Ok(())
}
