//! `daramjwee`: a caching reverse proxy built from the crate's [`CacheLayer`] in front of a
//! pooled hyper client.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 2 for a bad configuration (the
//! message on stderr names the flag or key), 1 when startup fails for another reason (a port
//! in use, a tier directory that cannot be opened). It prints one line per listener on stdout
//! once it accepts connections (`daramjwee listening on http://ADDR`, `daramjwee admin on
//! http://ADDR`), so scripts can wait for readiness and learn ports bound as `:0`.
//!
//! [`CacheLayer`]: daramjwee::http::CacheLayer

mod access_log;
mod admin;
mod config;
mod forwarding;
mod header_rules;
#[cfg(test)]
mod hit_allocs;
mod proxy;
mod reload;
mod request_id;
mod route;
mod server;
mod swap;
mod tls;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use tokio::net::{TcpListener, TcpSocket};
use tracing_subscriber::EnvFilter;

use crate::access_log::AccessLogSwitch;
use crate::config::{Cli, Settings};
use crate::reload::Reloader;
use crate::server::{Router, Site};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Some(file)) = cli.check.clone() {
        if cli.config.as_ref().is_some_and(|c| *c != file) {
            eprintln!(
                "daramjwee: configuration error: --check FILE and --config name different files"
            );
            return ExitCode::from(2);
        }
        cli.config = Some(file);
        cli.check = Some(None);
    }
    let settings = match Settings::load(&cli).and_then(|s| check_tls(&s).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("daramjwee: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check.is_some() {
        print_settings(&settings);
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daramjwee: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daramjwee: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the proxy could not start serving. Each keeps the error that caused it as its source.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// A site's tiers or service could not be opened.
    #[error("site `{site}`: {source}")]
    Site {
        /// The site's name.
        site: String,
        /// Why.
        #[source]
        source: server::SiteError,
    },
    /// A listening socket could not be bound or read back.
    #[error("cannot listen on {addr}{which}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// `""` for the proxy, `" (admin)"` for the admin listener.
        which: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listener's certificate, key or TLS settings.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The access log could not be opened or its writer started.
    #[error(transparent)]
    AccessLog(#[from] access_log::AccessLogError),
}

async fn run(cli: Cli, settings: Settings) -> Result<(), StartError> {
    // Before any cache is built: the engine registers its metric handles at build time.
    let prometheus = install_prometheus();
    // One background runtime for every site: each site's cache is a weighted group of it.
    let workers = daramjwee::WorkerRuntime::new(settings.workers);
    let router = Router::new(open_sites(&settings, &workers).await?);
    let listen_error = |source| StartError::Listen {
        addr: settings.listen,
        which: "",
        source,
    };
    let listener = bind_listener(settings.listen, settings.send_buffer).map_err(listen_error)?;
    let draining = Arc::new(AtomicBool::new(false));
    let admin_task = start_admin(&settings, &router, &draining, prometheus).await?;
    let (tls, certs) = listener_tls(&settings)?.unzip();
    let drain_flag = draining.clone();
    let shutdown = async move {
        wait_for_signal().await;
        drain_flag.store(true, Ordering::Release);
    };
    let access_log = AccessLogSwitch::new(match &settings.access_log {
        Some(a) => Some(access_log::start(a)?),
        None => None,
    });
    let reloader = Reloader::new(
        cli,
        settings.clone(),
        router.clone(),
        workers.clone(),
        access_log.clone(),
        certs,
    );
    // Before the listener is announced: a SIGHUP sent as soon as it is must reload, not kill.
    let reload_task = reload_on_sighup(reloader);
    let local = listener.local_addr().map_err(listen_error)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("daramjwee listening on {scheme}://{local}");
    tracing::info!(%local, tls = tls.is_some(), "proxy listening (HTTP/1.1 and HTTP/2)");
    let still_open = server::serve(
        listener,
        router.clone(),
        shutdown,
        server::ServeOptions {
            drain: settings.drain_timeout,
            request_ids: settings.request_ids,
            access_log: access_log.clone(),
            tls,
            trace_requests: tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG),
        },
    )
    .await;
    reload_task.abort();
    flush_access_log(&access_log).await;
    report_shutdown(&settings, access_log.dropped(), still_open);
    close_sites(&router, settings.close_timeout).await;
    if let Some(t) = admin_task {
        t.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The Prometheus recorder behind `/metrics`, or none (with a warning) if another recorder is
/// installed already.
fn install_prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics shows stats only");
            None
        }
    }
}

/// Waits (up to 5 s, on a blocking thread) for the access log's writer to write every line.
/// Called once the connections are closed, so every line is rendered: the writer would write
/// the last ones up to a pause later, and the process must not exit first.
async fn flush_access_log(access_log: &AccessLogSwitch) {
    let log = access_log.clone();
    let flushed = tokio::task::spawn_blocking(move || log.flush(std::time::Duration::from_secs(5)));
    if !flushed.await.unwrap_or(false) {
        tracing::warn!(
            "the access log did not finish writing within 5 s; its last lines may be lost"
        );
    }
}

/// The listener's TLS acceptor, built once, and the resolver whose certificate a reload swaps;
/// none when the listener speaks plain HTTP.
fn listener_tls(
    settings: &Settings,
) -> Result<Option<(tokio_rustls::TlsAcceptor, Arc<tls::CertResolver>)>, tls::TlsError> {
    let Some((cert, key)) = &settings.tls else {
        return Ok(None);
    };
    let key = tls::certified_key(cert, key)?;
    let resolver = Arc::new(tls::CertResolver::new(key));
    let config = tls::server_config(resolver.clone())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Ok(Some((acceptor, resolver)))
}

/// Binds the proxy listener with `send_buffer` as its sockets' send buffer. Connections it
/// accepts inherit it (Linux copies a listening socket's buffer sizes to the sockets it
/// accepts, tcp(7)), so no per-connection call and no other crate is needed.
fn bind_listener(addr: SocketAddr, send_buffer: Option<u64>) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart can bind while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if let Some(size) = send_buffer {
        socket.set_send_buffer_size(u32::try_from(size).unwrap_or(u32::MAX))?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Starts the admin listener on its own address, if there is one.
async fn start_admin(
    settings: &Settings,
    router: &Router,
    draining: &Arc<AtomicBool>,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<Option<tokio::task::JoinHandle<()>>, StartError> {
    let Some(addr) = settings.admin else {
        return Ok(None);
    };
    let listen_error = |source| StartError::Listen {
        addr,
        which: " (admin)",
        source,
    };
    let l = TcpListener::bind(addr).await.map_err(listen_error)?;
    let local = l.local_addr().map_err(listen_error)?;
    println!("daramjwee admin on http://{local}");
    let state = admin::AdminState {
        router: router.clone(),
        draining: draining.clone(),
        prometheus,
    };
    Ok(Some(tokio::spawn(admin::serve(l, state))))
}

/// Logs how the drain went: access-log lines dropped, connections cut at the drain timeout.
fn report_shutdown(settings: &Settings, dropped: u64, still_open: usize) {
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "access log lines dropped because the writer was behind"
        );
    }
    if still_open > 0 {
        tracing::warn!(
            drain_timeout = ?settings.drain_timeout,
            "drain timeout reached with connections still open; closing them"
        );
    } else {
        tracing::info!("all connections drained");
    }
}

/// Opens every site's tiers and service.
async fn open_sites(
    settings: &Settings,
    workers: &daramjwee::WorkerRuntime,
) -> Result<Vec<Arc<Site>>, StartError> {
    let mut sites = Vec::with_capacity(settings.sites.len());
    for s in &settings.sites {
        let site = Site::open(s.clone(), workers)
            .await
            .map_err(|source| StartError::Site {
                site: s.name.clone(),
                source,
            })?;
        tracing::info!(
            site = %s.name,
            upstream = %s.upstream,
            weight = s.weight,
            hot = %s.hot,
            cold = %s.cold.as_ref().map_or("none".into(), |c| c.to_string()),
            "site ready"
        );
        sites.push(Arc::new(site));
    }
    Ok(sites)
}

/// Closes the current sites' caches, each waiting at most `timeout` for its background work.
async fn close_sites(router: &Router, timeout: std::time::Duration) {
    for site in router.sites().iter() {
        site.purger.shutdown();
        if let Err(e) = site.cache.close(timeout).await {
            tracing::warn!(site = %site.settings.name, error = %e, "background work did not finish");
        }
    }
}

/// Listens for SIGHUP from now on (replacing its default action, which ends the process) and
/// spawns the task that reloads the configuration on each, until aborted.
fn reload_on_sighup(reloader: Reloader) -> tokio::task::JoinHandle<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hup) => tokio::spawn(reload_loop(reloader, hup)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading is off");
                tokio::spawn(async {})
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        tokio::spawn(async {})
    }
}

/// Reloads on every signal `hup` receives. A refused reload is logged and changes nothing.
#[cfg(unix)]
async fn reload_loop(mut reloader: Reloader, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading the configuration");
        match reloader.reload().await {
            Ok(kept) => tracing::info!(kept_caches = kept, "configuration reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                "configuration reload refused; the running configuration keeps serving"
            ),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    r = tokio::signal::ctrl_c() => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "cannot listen for SIGINT");
                            std::future::pending::<()>().await;
                        }
                        tracing::info!("SIGINT received");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the proxy");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Loads the listener's certificate and key, and builds the TLS client of every https site
/// now, so an unreadable `tls_cert`, a key that does not match it, or an unreadable `ca_file`
/// (or no usable platform store) is a configuration error that `--check` reports, not a
/// startup failure.
fn check_tls(s: &Settings) -> Result<(), config::ConfigError> {
    if let Some((cert, key)) = &s.tls {
        tls::certified_key(cert, key).map_err(config::ConfigError::Tls)?;
    }
    for site in &s.sites {
        if site.upstream.scheme == http::uri::Scheme::HTTPS {
            tls::client_config(site.ca_file.as_deref())
                .map_err(|e| config::ConfigError::Tls(e).in_site(&site.name))?;
        }
    }
    Ok(())
}

fn print_settings(s: &Settings) {
    println!("listen = {}", s.listen);
    println!(
        "admin = {}",
        s.admin.map_or("off".to_string(), |a| a.to_string())
    );
    println!("drain_timeout = {:?}", s.drain_timeout);
    println!("workers = {} (shared by all sites)", s.workers);
    println!("request_ids = {}", s.request_ids);
    match &s.tls {
        Some((cert, key)) => println!("tls = {} {}", cert.display(), key.display()),
        None => println!("tls = off"),
    }
    match &s.access_log {
        Some(a) => println!("access_log = {:?} ({:?})", a.destination, a.format),
        None => println!("access_log = off"),
    }
    for site in &s.sites {
        println!(
            "site {}: host={} prefix={} upstream={} hot={} cold={} eviction={} policy={:?} weight={} queue={}",
            site.name,
            site.host.as_deref().unwrap_or("*"),
            site.prefix,
            site.upstream,
            site.hot,
            site.cold.as_ref().map_or("none".into(), |c| c.to_string()),
            site.eviction.name(),
            site.mode,
            site.weight,
            site.queue,
        );
        println!(
            "site {}: preserve_host={} public_host={} forward_target_headers={} drop_headers=[{}]",
            site.name,
            site.preserve_host,
            site.public_host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-"),
            site.forward_target_headers,
            site.drop_headers
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
}
