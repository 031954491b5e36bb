//! The answer: turns what the engine found into the response a client gets: a hit, a 304 for
//! the client's own conditional, a 206 or 416 for a range, a HEAD, a pass-through, or an error
//! response of the cache's own when the origin failed for a fill this request followed.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::body::{drain_detached, CacheBody};
use super::config::HttpConfig;
use super::policy::{self, RequestDirectives};
use super::range::{self, RangeAnswer};
use super::request::origin_head;
use super::status::{self, CacheStatus};
use super::vary;
use super::CACHE_STATUS;
use crate::cache::{Cache, Lookup, Outcome, Storing, Verdict};
use crate::entry::{with_header_room, EntryBody, Metadata, StoredEntry, HEADER_ROOM};

/// The request fields that can make a stored answer a 304 or a 206 (`If-Range` matters only
/// with a `Range`).
const CONDITIONAL_FIELDS: [header::HeaderName; 3] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::RANGE,
];

/// What turns a lookup into a response: the parts of a request's context the answer needs,
/// borrowed, so the fresh-hit path builds nothing it does not send.
pub(crate) struct Answer<'a> {
    pub(crate) cache: &'a Cache,
    pub(crate) config: &'a HttpConfig,
    pub(crate) head: bool,
}

impl Answer<'_> {
    /// The response for a fresh hit in the first tier, if there is one; otherwise what was
    /// found there (to be handed to the full lookup, so it is not read twice).
    pub(crate) fn fresh_hit<ResB>(
        &self,
        key: &str,
        parts: &Parts,
        directives: &RequestDirectives,
    ) -> Result<Response<CacheBody<ResB>>, Option<StoredEntry>> {
        let judge = |meta: &Metadata, now| {
            if vary::is_marker(meta) {
                // Resolved below, through the variant's own key.
                Verdict::Validate
            } else {
                policy::verdict(self.config.rules(), directives, meta, now)
            }
        };
        match self.cache.lookup_now(key, judge) {
            Ok((lookup, now)) => Ok(self.respond_at(lookup, parts, now)),
            Err(Some(found)) if vary::is_marker(&found.meta) => {
                // The URL varies: a fresh hit of this client's variant is answered just as
                // well. The marker itself goes to the full lookup otherwise.
                let Some((nonce, names)) = vary::read_marker(&found.meta) else {
                    return Err(Some(found));
                };
                let origin = origin_head(parts, self.config.target_headers);
                let vkey = vary::variant_key(key, &nonce, &names, &origin.headers);
                let judge = |meta: &Metadata, now| {
                    policy::verdict(self.config.rules(), directives, meta, now)
                };
                match self.cache.lookup_now(&vkey, judge) {
                    Ok((lookup, now)) => Ok(self.respond_at(lookup, parts, now)),
                    Err(_) => Err(Some(found)),
                }
            }
            Err(found) => Err(found),
        }
    }

    /// The origin's own response, passed through unstored.
    pub(crate) fn pass<ResB>(
        &self,
        res: Response<ResB>,
        reason: &'static str,
    ) -> Response<CacheBody<ResB>> {
        let mut res = res.map(CacheBody::origin);
        if self.head {
            *res.body_mut() = CacheBody::empty();
        }
        super::strip_hop_by_hop(res.headers_mut());
        tracing::debug!(reason, "response not stored");
        self.stamp(
            &mut res,
            CacheStatus {
                fwd: Some("uri-miss"),
                detail: Some(reason),
                ..Default::default()
            },
        );
        res
    }

    /// A response of the cache's own for an origin that failed or did not answer in time:
    /// what followers of a failed fill, and callers whose origin call timed out, receive.
    pub(crate) fn origin_failed<ResB>(
        &self,
        status: StatusCode,
        detail: &'static str,
    ) -> Response<CacheBody<ResB>> {
        let mut res = Response::new(CacheBody::empty());
        *res.status_mut() = status;
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        self.stamp(
            &mut res,
            CacheStatus {
                fwd: Some("uri-miss"),
                detail: Some(detail),
                ..Default::default()
            },
        );
        res
    }

    /// The `504` for an origin call that gave no response head within the origin timeout.
    pub(crate) fn origin_timed_out<ResB>(
        &self,
        after: std::time::Duration,
    ) -> Response<CacheBody<ResB>> {
        tracing::warn!(?after, "the origin did not answer in time");
        self.origin_failed(StatusCode::GATEWAY_TIMEOUT, "origin-timeout")
    }

    /// The response for an entry the engine found, stored or streaming.
    pub(crate) fn respond<ResB>(&self, lookup: Lookup, parts: &Parts) -> Response<CacheBody<ResB>> {
        self.respond_at(lookup, parts, SystemTime::now())
    }

    /// [`respond`](Self::respond) with `now` the time the entry was judged fresh at: its `Age`
    /// and `ttl` are from the same reading (and the clock is read once).
    fn respond_at<ResB>(
        &self,
        lookup: Lookup,
        parts: &Parts,
        now: SystemTime,
    ) -> Response<CacheBody<ResB>> {
        let status = self.status_for(&lookup);
        self.respond_as(lookup, parts, status, now)
    }

    /// [`respond`](Self::respond), reporting why the request went forward as `fwd` (RFC 9211
    /// §2.2.2): `vary-miss` when the URL's stored variants did not include this request's,
    /// `request` when the request's own directives sent a usable entry to the origin.
    pub(crate) fn respond_fwd<ResB>(
        &self,
        lookup: Lookup,
        parts: &Parts,
        fwd: &'static str,
    ) -> Response<CacheBody<ResB>> {
        let mut status = self.status_for(&lookup);
        status.fwd = Some(fwd);
        self.respond_as(lookup, parts, status, SystemTime::now())
    }

    fn respond_as<ResB>(
        &self,
        lookup: Lookup,
        parts: &Parts,
        mut status: CacheStatus,
        now: SystemTime,
    ) -> Response<CacheBody<ResB>> {
        let Lookup {
            outcome,
            meta,
            body,
            ..
        } = lookup;
        status.ttl = policy::ttl_seconds(&meta, now);
        // A body that is also a fill in progress must be read to its end even when this
        // client needs none or part of it, or the fill is abandoned.
        let filling = matches!(outcome, Outcome::Miss | Outcome::Coalesced);
        let from_store = !matches!(outcome, Outcome::Pass);
        // Most requests carry none of the fields a conditional or ranged answer reads: one
        // pass over their (few) names says so, rather than a hashed lookup per field.
        let conditional = from_store
            && parts
                .headers
                .keys()
                .any(|name| CONDITIONAL_FIELDS.contains(name));
        let needs_none = conditional && policy::client_not_modified(&parts.headers, &meta);
        let len = meta.content_length.or_else(|| body.remaining_len());
        let ranged = if self.head || !conditional || needs_none {
            RangeAnswer::Full
        } else {
            range::evaluate(&parts.headers, &meta, len)
        };
        let mut res = match ranged {
            _ if needs_none => {
                if filling {
                    drain_detached(body);
                }
                not_modified(&meta)
            }
            RangeAnswer::Full => self.full(&meta, body, len),
            RangeAnswer::Partial { start, end, len } => {
                partial(&meta, body, start, end, len, filling)
            }
            RangeAnswer::Unsatisfiable { len } => {
                if filling {
                    drain_detached(body);
                }
                unsatisfiable(&meta, len)
            }
        };
        if from_store {
            let age = status::decimal_header(meta.age(now).as_secs());
            res.headers_mut().insert(header::AGE, age);
        }
        self.stamp(&mut res, status);
        res
    }

    /// What `Cache-Status` says of a lookup's outcome (and, for a miss, of where its fill
    /// stores the body).
    fn status_for(&self, lookup: &Lookup) -> CacheStatus {
        let mut status = CacheStatus::default();
        match lookup.outcome {
            Outcome::Hit { tier, .. } => {
                status.hit = true;
                status.detail = Some(self.cache.tier_name(tier));
            }
            Outcome::NotModified => status.hit = true,
            Outcome::Miss => {
                status.fwd = Some("uri-miss");
                match lookup.storing {
                    Storing::TooLarge => status.detail = Some("too-large"),
                    Storing::NoTier => {}
                    _ => status.stored = true,
                }
            }
            Outcome::Coalesced => {
                status.fwd = Some("uri-miss");
                status.collapsed = true;
            }
            Outcome::Revalidated { tier } => {
                status.fwd = Some("stale");
                status.fwd_status = Some(304);
                status.detail = Some(self.cache.tier_name(tier));
            }
            Outcome::StaleOnError { status: code, .. } => {
                status.fwd = Some("stale");
                status.fwd_status = code;
                status.detail = Some("stale-if-error");
            }
            _ => status.fwd = Some("uri-miss"),
        }
        status
    }

    /// The whole entry (or its head alone, for HEAD).
    fn full<ResB>(
        &self,
        meta: &Metadata,
        body: EntryBody,
        len: Option<u64>,
    ) -> Response<CacheBody<ResB>> {
        let mut res = Response::new(if self.head {
            CacheBody::empty()
        } else {
            CacheBody::cached(body, len)
        });
        *res.status_mut() = meta.status;
        *res.headers_mut() = with_room(&meta.headers);
        // The origin's length may have come from its framing alone; a HEAD answer must still
        // say how long the GET body is.
        if let (Some(len), false) = (len, res.headers().contains_key(header::CONTENT_LENGTH)) {
            if !self.head || meta.status != StatusCode::NO_CONTENT {
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, status::decimal_header(len));
            }
        }
        res
    }

    pub(crate) fn stamp<T>(&self, res: &mut Response<T>, status: CacheStatus) {
        self.config.rules().strip_targeted(res.headers_mut());
        if self.config.cache_status {
            res.headers_mut().insert(CACHE_STATUS, status.to_header());
        }
    }
}

/// A copy of the stored fields, in their order, with room for what the answer adds
/// ([`HEADER_ROOM`]). A response's headers are stored with that room in their index
/// (`policy::storable_headers`), and a clone keeps it: no field is hashed again. Headers
/// without it (read back from the file tier, from a store of the user's, or grown by a
/// refresh) are rebuilt with it instead: a clone would grow its index, rehashing every field,
/// on the first field added.
fn with_room(stored: &HeaderMap) -> HeaderMap {
    if stored.capacity() >= stored.keys_len() + HEADER_ROOM || stored.keys_len() > 64 {
        // Past 64 fields (far beyond what origins send) a rebuild is not worth it.
        return stored.clone();
    }
    with_header_room(stored)
}

/// RFC 9111 §4.3.2: the client's own validator matches the entry.
fn not_modified<ResB>(meta: &Metadata) -> Response<CacheBody<ResB>> {
    let mut res = Response::new(CacheBody::empty());
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::EXPIRES,
        header::VARY,
    ] {
        for v in meta.headers.get_all(&name) {
            res.headers_mut().append(name.clone(), v.clone());
        }
    }
    res
}

/// RFC 9110 §15.3.7: one range of the entry.
fn partial<ResB>(
    meta: &Metadata,
    body: EntryBody,
    start: u64,
    end: u64,
    len: u64,
    filling: bool,
) -> Response<CacheBody<ResB>> {
    let take = end - start + 1;
    let mut res = Response::new(CacheBody::ranged(body, start, take, filling));
    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    *res.headers_mut() = with_room(&meta.headers);
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, status::decimal_header(take));
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    res
}

/// RFC 9110 §15.5.17: no part of the entry is in the requested range.
fn unsatisfiable<ResB>(meta: &Metadata, len: u64) -> Response<CacheBody<ResB>> {
    let mut res = Response::new(CacheBody::empty());
    *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    for name in [header::DATE, header::ETAG, header::LAST_MODIFIED] {
        if let Some(v) = meta.headers.get(&name) {
            res.headers_mut().insert(name, v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        h.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Both ways of copying give the stored fields in their order, repeated values included,
    /// with room for what an answer adds.
    #[test]
    fn with_room_copies_every_field_with_room_to_spare() {
        let mut tight = HeaderMap::with_capacity(0);
        tight.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        tight.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        tight.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        tight.append("x-custom", HeaderValue::from_static("c"));
        let mut roomy = tight.clone();
        roomy.reserve(64);
        for stored in [&tight, &roomy] {
            let copy = with_room(stored);
            assert_eq!(fields(&copy), fields(stored));
            assert!(copy.capacity() >= copy.keys_len() + HEADER_ROOM);
        }
        assert!(
            tight.capacity() < tight.keys_len() + HEADER_ROOM,
            "not a tight map"
        );
    }
}
