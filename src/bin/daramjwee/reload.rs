//! Reloading the configuration (SIGHUP): sites, upstreams, forwarding and header rules, and the
//! access log change for new requests; in-flight exchanges finish on the sites they started
//! on; a site whose cache settings did not change keeps its cache and contents.
//!
//! The listener's certificate and key are re-read on every reload, from the paths the file
//! names now (renewed in place, the common case, or moved): new handshakes present the new
//! certificate, established connections keep theirs.
//!
//! A reload is all or nothing: everything the new configuration needs (the file, the
//! listener's certificate, new tiers, TLS roots, the access log file) is prepared before any of
//! it is swapped in, so a bad file, a certificate that does not load or match its key, or a
//! failing tier leaves the running configuration serving, untouched. Settings bound at startup
//! (listeners and whether they speak TLS, workers, request ids, shutdown bounds) are kept, with
//! a warning.

use std::path::PathBuf;
use std::sync::Arc;

use daramjwee::WorkerRuntime;
use rustls::sign::CertifiedKey;

use crate::access_log::{self, AccessLogError, AccessLogSwitch};
use crate::config::{Cli, ConfigError, Settings, SiteSettings, TierSpec};
use crate::server::{same_cache, Router, Site, SiteError, Sites};
use crate::tls::{self, CertResolver, TlsError};

/// Why a reload was refused (the running configuration keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not validate.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A site's cache settings changed and its tiers persist: reopening them while the
    /// running cache still has them open could corrupt them.
    #[error("site `{site}`: its cache settings changed and its tiers persist; restart to apply")]
    TiersChanged {
        /// The site.
        site: String,
    },
    /// A new site's tier is a directory or store a running site still uses.
    #[error("site `{site}`: {} is still used by the running site `{other}`; restart to apply", dir.display())]
    DirInUse {
        /// The new site.
        site: String,
        /// The tier's directory or object store URL.
        dir: PathBuf,
        /// The running site using it.
        other: String,
    },
    /// A new site could not be built.
    #[error("site `{site}`: {source}")]
    Site {
        /// The site.
        site: String,
        /// What failed.
        #[source]
        source: SiteError,
    },
    /// The new access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// The listener's certificate or key could not be read, or they do not belong together
    /// (the running certificate keeps being presented).
    #[error(transparent)]
    ListenerTls(#[from] TlsError),
}

/// What a reload needs: how the configuration was given, and the running parts it replaces.
pub struct Reloader {
    cli: Cli,
    applied: Settings,
    router: Router,
    workers: WorkerRuntime,
    access_log: AccessLogSwitch,
    /// The listener's certificate, when it speaks TLS.
    certs: Option<Arc<CertResolver>>,
}

impl Reloader {
    /// A reloader for a proxy started from `cli` with `applied`; `certs` is the listener's
    /// certificate resolver when it speaks TLS.
    pub fn new(
        cli: Cli,
        applied: Settings,
        router: Router,
        workers: WorkerRuntime,
        access_log: AccessLogSwitch,
        certs: Option<Arc<CertResolver>>,
    ) -> Reloader {
        Reloader {
            cli,
            applied,
            router,
            workers,
            access_log,
            certs,
        }
    }

    /// Re-reads the configuration and swaps it in; returns how many sites kept their cache.
    pub async fn reload(&mut self) -> Result<usize, ReloadError> {
        let next = Settings::load(&self.cli)?;
        self.warn_fixed(&next);
        let cert = self.read_cert(&next)?;
        let old = self.router.sites();
        let (sites, kept) = self.build_sites(&next, &old).await?;
        let sink = match (&next.access_log, next.access_log != self.applied.access_log) {
            (_, false) => None,
            (Some(a), true) => Some(Some(access_log::start(a)?)),
            (None, true) => Some(None),
        };
        // Nothing can fail from here on: swap everything in.
        self.router.replace(sites);
        if let Some(sink) = sink {
            self.access_log.replace(sink);
        }
        if let (Some(certs), Some(key)) = (&self.certs, cert) {
            certs.replace(key);
            if let Some((cert, _)) = &next.tls {
                tracing::info!(cert = %cert.display(), "listener certificate re-read");
            }
        }
        self.applied = next;
        Ok(kept)
    }

    async fn build_sites(
        &self,
        next: &Settings,
        old: &Sites,
    ) -> Result<(Vec<Arc<Site>>, usize), ReloadError> {
        let mut sites = Vec::with_capacity(next.sites.len());
        let mut kept = 0;
        for s in &next.sites {
            let site_err = |source| ReloadError::Site {
                site: s.name.clone(),
                source,
            };
            let running = old.iter().find(|o| o.settings.name == s.name);
            let site = match running {
                Some(o) if same_cache(&o.settings, s) => {
                    kept += 1;
                    Site::with_cache(s.clone(), o.cache.clone(), o.purger.clone())
                        .map_err(site_err)?
                }
                Some(o) if persists(&o.settings) || persists(s) => {
                    return Err(ReloadError::TiersChanged {
                        site: s.name.clone(),
                    })
                }
                _ => {
                    check_dirs_free(s, old)?;
                    Site::open(s.clone(), &self.workers)
                        .await
                        .map_err(site_err)?
                }
            };
            sites.push(Arc::new(site));
        }
        Ok((sites, kept))
    }

    /// The listener's certificate and key, read again from the paths `next` names (even
    /// unchanged: certificates are renewed in place), when the listener speaks TLS and `next`
    /// keeps it on.
    fn read_cert(&self, next: &Settings) -> Result<Option<Arc<CertifiedKey>>, TlsError> {
        match (&self.certs, &next.tls) {
            (Some(_), Some((cert, key))) => tls::certified_key(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// Logs the settings a reload cannot change.
    fn warn_fixed(&self, next: &Settings) {
        let a = &self.applied;
        let fixed = [
            ("listen", a.listen != next.listen),
            ("send_buffer", a.send_buffer != next.send_buffer),
            ("admin", a.admin != next.admin),
            ("workers", a.workers != next.workers),
            ("request_ids", a.request_ids != next.request_ids),
            ("drain_timeout", a.drain_timeout != next.drain_timeout),
            ("close_timeout", a.close_timeout != next.close_timeout),
            // Whether the listener speaks TLS; its certificate is re-read (`read_cert`).
            (
                "tls_cert/tls_key (TLS on or off)",
                self.certs.is_some() != next.tls.is_some(),
            ),
        ];
        for (key, changed) in fixed {
            if changed {
                tracing::warn!(key, "changed in the file, but only a restart applies it");
            }
        }
    }
}

/// The directories and object stores of a site's tiers.
fn dirs(s: &SiteSettings) -> impl Iterator<Item = PathBuf> + '_ {
    [Some(&s.hot), s.cold.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|t| match t {
            TierSpec::Memory(_) => None,
            TierSpec::File(dir, _) => Some(dir.clone()),
            TierSpec::Object(url) => Some(PathBuf::from(url)),
        })
}

fn persists(s: &SiteSettings) -> bool {
    dirs(s).next().is_some()
}

/// A new site may not open a tier a running site (of another name) still has open.
fn check_dirs_free(s: &SiteSettings, old: &Sites) -> Result<(), ReloadError> {
    for dir in dirs(s) {
        if let Some(o) = old.iter().find(|o| dirs(&o.settings).any(|d| d == dir)) {
            return Err(ReloadError::DirInUse {
                site: s.name.clone(),
                dir,
                other: o.settings.name.clone(),
            });
        }
    }
    Ok(())
}
