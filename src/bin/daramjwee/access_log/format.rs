//! Rendering a line, combined or JSON, in two steps. When the request arrives its fields are
//! rendered (escaped) into a [`Draft`], straight from the request's head, and the response's
//! `Cache-Status` when its head is known; when the response is over, the shard splices the
//! draft's pieces around what is known only then (the time, status, bytes and durations).
//! Each value is escaped once, from where it is, instead of being copied into the record and
//! escaped from the copy: that copy and the record's moves were a third of the log's cost.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode, Version};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use super::buf::{Buf, Out};
use super::Format;
#[cfg(test)]
use super::{Record, Text};

/// Renders lines of one format.
#[derive(Debug)]
pub struct LineFormat {
    format: Format,
    /// The combined format's timestamp has a resolution of one second: the last one rendered,
    /// reused for every line of that second (rendering it costs more than the rest of a line).
    stamp: Option<Stamp>,
}

/// A rendered timestamp and the second it stands for, `[from, until)`: a line checks its time
/// against the two ends, which costs less than turning it into seconds since the epoch.
#[derive(Debug)]
struct Stamp {
    from: SystemTime,
    until: SystemTime,
    text: String,
}

/// What a request says, borrowed from its head, for [`Draft::request`].
#[derive(Debug, Clone, Copy)]
pub struct RequestFields<'a> {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The request method.
    pub method: &'a Method,
    /// The request target (path and query).
    pub target: Option<&'a [u8]>,
    /// The client's HTTP version.
    pub version: Version,
    /// The request id.
    pub request_id: Option<&'a [u8]>,
    /// The request's `Referer`.
    pub referer: Option<&'a [u8]>,
    /// The request's `User-Agent`.
    pub user_agent: Option<&'a [u8]>,
}

/// What is known of an exchange only when it is over.
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// When the request arrived.
    pub start: SystemTime,
    /// The response status.
    pub status: StatusCode,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// From the request's arrival to the end of the response body (or its abandonment).
    pub duration: Duration,
    /// Time to the upstream's response head, when this request went upstream.
    pub upstream: Option<Duration>,
}

/// A line's request and `Cache-Status` fields, rendered in the line's format: pieces A to E
/// one after another in `buf`, each ending where `cuts` says (E runs to the end, and is empty
/// until [`Draft::cache_status`]). The line is A, time, B, status, bytes, C, durations, E, D
/// (combined: `A` is the client, `B` the request line, `C` referer and user agent, `D` the
/// request id and the newline; JSON likewise, in its field order).
#[derive(Debug)]
pub struct Draft {
    buf: Buf,
    cuts: [usize; 4],
}

impl Default for Draft {
    fn default() -> Draft {
        Draft::new()
    }
}

impl Draft {
    /// An empty draft: fill it in place ([`Draft::request`]), as it is too large to move
    /// cheaply.
    pub fn new() -> Draft {
        Draft {
            buf: Buf::new(),
            cuts: [0; 4],
        }
    }

    /// Renders the request's pieces (A to D), replacing whatever the draft held.
    pub fn request(&mut self, format: Format, req: &RequestFields<'_>) {
        self.buf.truncate(0);
        match format {
            Format::Combined => self.combined_request(req),
            Format::Json => self.json_request(req),
        }
    }

    /// Empties the draft (and frees what it held on the heap).
    pub fn clear(&mut self) {
        self.buf.truncate(0);
    }

    /// Renders the response's `Cache-Status` (piece E), replacing any earlier one.
    pub fn cache_status(&mut self, format: Format, value: Option<&[u8]>) {
        self.buf.truncate(self.cuts[3]);
        match format {
            Format::Combined => {
                self.buf.put(b" cs=");
                quoted(&mut self.buf, value);
            }
            Format::Json => {
                self.buf.put(b",\"cache_status\":");
                json_text(&mut self.buf, value);
            }
        }
    }

    /// Pieces A to E.
    fn pieces(&self) -> [&[u8]; 5] {
        let b = self.buf.as_bytes();
        let [a, bb, c, d] = self.cuts;
        [&b[..a], &b[a..bb], &b[bb..c], &b[c..d], &b[d..]]
    }

    /// Ends the piece being rendered.
    fn cut(&mut self, piece: usize) {
        self.cuts[piece] = self.buf.len();
    }

    /// `client - - [`, `] "METHOD target VERSION" `, ` "referer" "user-agent" rt=`,
    /// ` rid=id`.
    fn combined_request(&mut self, req: &RequestFields<'_>) {
        let out = &mut self.buf;
        client(out, req.client);
        out.put(b" - - [");
        self.cut(0);
        let out = &mut self.buf;
        out.put(b"] \"");
        out.put(req.method.as_str().as_bytes());
        out.put_byte(b' ');
        escaped(out, req.target.unwrap_or(b"-"));
        out.put_byte(b' ');
        out.put(version_name(req.version).as_bytes());
        out.put(b"\" ");
        self.cut(1);
        let out = &mut self.buf;
        out.put_byte(b' ');
        quoted(out, req.referer);
        out.put_byte(b' ');
        quoted(out, req.user_agent);
        out.put(b" rt=");
        self.cut(2);
        let out = &mut self.buf;
        out.put(b" rid=");
        match req.request_id {
            Some(id) => escaped(out, id),
            None => out.put_byte(b'-'),
        }
        // The line's end too: one append fewer at the end.
        out.put_byte(b'\n');
        self.cut(3);
    }

    /// `{"time":"`, `","client":...,"status":`, nothing, `,"request_id":...}`: the fields, in
    /// their order, that serde wrote from a struct of them before (the tests keep that
    /// struct and check that both agree).
    fn json_request(&mut self, req: &RequestFields<'_>) {
        let out = &mut self.buf;
        out.put(b"{\"time\":\"");
        self.cut(0);
        let out = &mut self.buf;
        out.put(b"\",\"client\":");
        // Serializing plain strings into a `Buf` cannot fail.
        let _ = serde_json::to_writer(&mut *out, &req.client.map(|a| a.ip()));
        out.put(b",\"method\":");
        let _ = serde_json::to_writer(&mut *out, req.method.as_str());
        out.put(b",\"target\":");
        json_text(out, req.target);
        out.put(b",\"version\":\"");
        out.put(version_name(req.version).as_bytes());
        out.put(b"\",\"status\":");
        self.cut(1);
        self.cut(2);
        let out = &mut self.buf;
        out.put(b",\"request_id\":");
        json_text(out, req.request_id);
        out.put(b",\"referer\":");
        json_text(out, req.referer);
        out.put(b",\"user_agent\":");
        json_text(out, req.user_agent);
        out.put(b"}\n");
        self.cut(3);
    }
}

impl LineFormat {
    /// A renderer of `format`.
    pub fn new(format: Format) -> LineFormat {
        LineFormat {
            format,
            stamp: None,
        }
    }

    /// Appends the line of `draft` (rendered in this format) and `end`, with its newline, to
    /// `out`. Each piece is one append: what a line costs here is mostly per append.
    pub fn finish(&mut self, out: &mut Vec<u8>, draft: &Draft, end: &End) {
        let [a, b, c, d, e] = draft.pieces();
        match self.format {
            Format::Combined => {
                out.put(a);
                out.put(self.stamp(end.start).as_bytes());
                out.put(b);
                combined_end(out, c, end);
                match e {
                    [] => out.put(b" cs=\"-\""),
                    e => out.put(e),
                }
            }
            Format::Json => {
                out.put(a);
                rfc3339(out, end.start);
                out.put(b);
                json_end(out, end);
                match e {
                    [] => out.put(b",\"cache_status\":null"),
                    e => out.put(e),
                }
            }
        }
        // With the newline.
        out.put(d);
    }

    fn stamp(&mut self, t: SystemTime) -> &str {
        let stale = |s: &Stamp| t < s.from || t >= s.until;
        if self.stamp.as_ref().is_none_or(stale) {
            let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let from = UNIX_EPOCH
                .checked_add(Duration::from_secs(secs))
                .unwrap_or(UNIX_EPOCH);
            let text = OffsetDateTime::from(t)
                .format(format_description!(
                    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
                ))
                .unwrap_or_default();
            self.stamp = Some(Stamp {
                from,
                // At the end of time, `until == from`: every line renders its own (no panic).
                until: from.checked_add(Duration::from_secs(1)).unwrap_or(from),
                text,
            });
        }
        self.stamp.as_ref().map_or("", |s| &s.text)
    }
}

/// The combined line from its status to its durations, with piece C (referer, user agent,
/// ` rt=`) in between: `200 1024 "-" "ua" rt=0.000150 urt=-`.
fn combined_end(out: &mut Vec<u8>, c: &[u8], end: &End) {
    // Straight appends: putting `200 1024` together on the stack first cost more (measured).
    out.put(end.status.as_str().as_bytes());
    out.push(b' ');
    decimal(out, end.bytes);
    out.put(c);
    seconds(out, end.duration);
    match end.upstream {
        Some(d) => {
            out.put(b" urt=");
            seconds(out, d);
        }
        None => out.put(b" urt=-"),
    }
}

/// The JSON line from its status to `upstream_ms`, as serde writes them.
fn json_end(out: &mut Vec<u8>, end: &End) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    decimal(out, end.status.as_u16().into());
    out.put(b",\"bytes\":");
    decimal(out, end.bytes);
    out.put(b",\"duration_ms\":");
    // Serializing numbers into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, &ms(end.duration));
    out.put(b",\"upstream_ms\":");
    let _ = serde_json::to_writer(&mut *out, &end.upstream.map(ms));
}

/// `t` in RFC 3339, or nothing if it has no such form (a year past 9999).
fn rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let mark = out.len();
    if OffsetDateTime::from(t).format_into(out, &Rfc3339).is_err() {
        out.truncate(mark);
    }
}

/// The client's address (the IP only), or `-`. An IPv4 address is put together on the stack
/// and appended whole: one bounds check instead of one per digit.
fn client<O: Out + Write>(out: &mut O, client: Option<SocketAddr>) {
    match client.map(|a| a.ip()) {
        Some(IpAddr::V4(ip)) => {
            let mut text = [0; 15];
            let mut len = 0;
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                len = small_decimal(&mut text, len, octet);
            }
            out.put(&text[..len]);
        }
        // Writing into memory cannot fail.
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.put_byte(b'-'),
    }
}

/// `d` in seconds with six decimals (`0.001500`), from integers: the line is written once per
/// request, and float formatting was the writer's largest cost. The last digit of the seconds
/// and the fraction go out as one 8-byte copy, the fraction's digits two at a time from a
/// table (a request takes well under ten seconds: no `itoa` call then).
fn seconds(out: &mut Vec<u8>, d: Duration) {
    const PAIRS: [u8; 200] = {
        let mut t = [0; 200];
        let mut i = 0;
        while i < 100 {
            t[2 * i] = b'0' + (i / 10) as u8;
            t[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        t
    };
    // Below 100, so `2 * n + 1` is in the table.
    let pair = |n: u32| {
        let i = (n % 100) as usize * 2;
        (PAIRS[i], PAIRS[i + 1])
    };
    let secs = d.as_secs();
    if secs >= 10 {
        decimal(out, secs / 10);
    }
    let micros = d.subsec_micros();
    let (a, b, c) = (pair(micros / 10_000), pair(micros / 100), pair(micros));
    // `secs % 10` fits in a u8.
    let last = b'0' + (secs % 10) as u8;
    out.extend_from_slice(&[last, b'.', a.0, a.1, b.0, b.1, c.0, c.1]);
}

/// `n` in decimal at `at` in `text`, without `itoa`'s general loop (an address has four of
/// these); returns where it ends. `text` has room for an address's 15 bytes.
fn small_decimal(text: &mut [u8; 15], mut at: usize, n: u8) -> usize {
    let mut put = |b: u8| {
        if let Some(slot) = text.get_mut(at) {
            *slot = b;
            at += 1;
        }
    };
    if n >= 100 {
        put(b'0' + n / 100);
    }
    if n >= 10 {
        put(b'0' + n / 10 % 10);
    }
    put(b'0' + n % 10);
    at
}

fn decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A header value in double quotes, or `"-"`.
fn quoted<O: Out>(out: &mut O, v: Option<&[u8]>) {
    out.put_byte(b'"');
    match v {
        Some(v) => escaped(out, v),
        None => out.put_byte(b'-'),
    }
    out.put_byte(b'"');
}

/// A value as a JSON string (invalid UTF-8 replaced), or `null`.
fn json_text<O: Write>(out: &mut O, v: Option<&[u8]>) {
    // Serializing a string into memory cannot fail.
    let _ = serde_json::to_writer(out, &v.map(String::from_utf8_lossy));
}

/// Bytes a client chose, with `"`, `\`, spaces' control-character cousins and non-ASCII
/// written as `\xHH` (as nginx does), so no client can forge a field or a line.
fn escaped<O: Out>(out: &mut O, bytes: &[u8]) {
    // Nearly every value needs no escape: a clean one is copied whole.
    if all_plain(bytes) {
        out.put(bytes);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| needs_escape(b)) {
        let (plain, tail) = rest.split_at(at);
        out.put(plain);
        let b = tail[0];
        out.put(&[
            b'\\',
            b'x',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ]);
        rest = &tail[1..];
    }
    out.put(rest);
}

/// Control characters, `"`, `\`, DEL and non-ASCII: what [`escaped`] writes as `\xHH`.
fn needs_escape(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\'
}

/// Whether no byte [`needs_escape`], eight bytes at a time: the values are short (a target, a
/// request id), and a byte-by-byte loop was the largest cost of a line. Inlined into
/// [`escaped`], its only caller, which otherwise does little but call it.
#[inline]
fn all_plain(bytes: &[u8]) -> bool {
    let word = |w: &[u8]| {
        let mut v = [0; 8];
        v.copy_from_slice(w);
        u64::from_le_bytes(v)
    };
    let half = |w: &[u8]| {
        let mut v = [0; 4];
        v.copy_from_slice(w);
        u64::from(u32::from_le_bytes(v))
    };
    let n = bytes.len();
    if n < 4 {
        return !bytes.iter().any(|&b| needs_escape(b));
    }
    if n < 8 {
        // The first four bytes and the last four, overlapping, make one word (a yes/no
        // answer allows the overlap): cheaper than a byte loop.
        return !unsafe_in(half(&bytes[..4]) | (half(&bytes[n - 4..]) << 32));
    }
    let mut words = bytes.chunks_exact(8);
    if words.any(|w| unsafe_in(word(w))) {
        return false;
    }
    // The last eight bytes, overlapping words already checked: a yes/no answer allows it.
    !unsafe_in(word(&bytes[n - 8..]))
}

/// Whether some byte of `v` [`needs_escape`]: exact as a yes/no answer. A byte with its top
/// bit set answers yes by itself; when no byte has it, no sum or difference below carries or
/// borrows into the next byte unless an earlier byte already answered yes, so each byte's top
/// bit says whether it is below 0x20, is 0x7f, `"` or `\`. Fewer operations than checking
/// each range exactly, and this runs once per eight bytes of every value.
fn unsafe_in(v: u64) -> bool {
    const fn each(b: u8) -> u64 {
        0x0101_0101_0101_0101 * b as u64
    }
    let control = v.wrapping_sub(each(0x20));
    let del = v.wrapping_add(each(1));
    let quote = (v ^ each(b'"')).wrapping_sub(each(1));
    let backslash = (v ^ each(b'\\')).wrapping_sub(each(1));
    (v | control | del | quote | backslash) & each(0x80) != 0
}

/// The version as `http::Version`'s `Debug` writes it (`HTTP/1.1`), without formatting.
fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "-",
    }
}

#[cfg(test)]
impl LineFormat {
    /// Appends `rec`, with its newline, to `out`, rendered as a request's would be.
    pub fn write(&mut self, out: &mut Vec<u8>, rec: &Record) {
        let (draft, end) = rec.parts(self.format);
        self.finish(out, &draft, &end);
    }
}

#[cfg(test)]
impl Record {
    /// The draft and end fields a request with these values would give.
    pub fn parts(&self, format: Format) -> (Draft, End) {
        fn text(t: &Option<Text>) -> Option<&[u8]> {
            t.as_ref().map(Text::as_bytes)
        }
        let mut draft = Draft::new();
        let req = RequestFields {
            client: self.client,
            method: &self.method,
            target: text(&self.target),
            version: self.version,
            request_id: text(&self.request_id),
            referer: text(&self.referer),
            user_agent: text(&self.user_agent),
        };
        draft.request(format, &req);
        draft.cache_status(format, text(&self.cache_status));
        let end = End {
            start: self.start,
            status: self.status,
            bytes: self.bytes,
            duration: self.duration,
            upstream: self.upstream,
        };
        (draft, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client: Some("192.0.2.1:5000".parse().unwrap()),
            method: http::Method::GET,
            target: Some(Text::new(b"/a?b=c")),
            version: http::Version::HTTP_11,
            status: http::StatusCode::OK,
            bytes: 1024,
            duration: Duration::from_micros(1500),
            upstream: None,
            cache_status: Some(Text::new(b"daramjwee; hit")),
            request_id: Some(Text::new(b"abc-1")),
            referer: None,
            user_agent: Some(Text::new(b"x\" \"forged\\")),
        }
    }

    #[test]
    fn combined_line_escapes_quotes_and_names_every_field() {
        let mut out = Vec::new();
        LineFormat::new(Format::Combined).write(&mut out, &record());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "192.0.2.1 - - [14/Nov/2023:22:13:20 +0000] \"GET /a?b=c HTTP/1.1\" 200 1024 \"-\" \
             \"x\\x22 \\x22forged\\x5C\" rt=0.001500 urt=- cs=\"daramjwee; hit\" rid=abc-1\n"
        );
    }

    #[test]
    fn control_and_non_ascii_bytes_are_escaped_and_ipv6_clients_written_whole() {
        let mut rec = record();
        rec.client = Some("[2001:db8::1]:5000".parse().unwrap());
        rec.target = Some(Text::new("/a\nb/é".as_bytes()));
        rec.request_id = Some(Text::new(&[0x7f, b'x', 0x1b]));
        let mut out = Vec::new();
        LineFormat::new(Format::Combined).write(&mut out, &rec);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("2001:db8::1 - - ["), "{line}");
        assert!(
            line.contains("\"GET /a\\x0Ab/\\xC3\\xA9 HTTP/1.1\""),
            "{line}"
        );
        assert!(line.ends_with(" rid=\\x7Fx\\x1B\n"), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn durations_are_seconds_with_six_decimals() {
        for (d, text) in [
            (Duration::ZERO, "0.000000"),
            (Duration::from_nanos(999), "0.000000"),
            (Duration::from_micros(1), "0.000001"),
            (Duration::from_micros(1_000_001), "1.000001"),
            (Duration::new(12, 345_678_901), "12.345678"),
            (Duration::new(86_400, 999_999_999), "86400.999999"),
        ] {
            let mut out = Vec::new();
            seconds(&mut out, d);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    /// Lines of one second share one rendered timestamp; the next second renders its own.
    #[test]
    fn the_timestamp_changes_with_the_second() {
        let mut format = LineFormat::new(Format::Combined);
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let stamp = |f: &mut LineFormat, t| f.stamp(t).to_owned();
        let first = stamp(&mut format, at);
        assert_eq!(first, "14/Nov/2023:22:13:20 +0000");
        assert_eq!(stamp(&mut format, at + Duration::from_millis(999)), first);
        let next = stamp(&mut format, at + Duration::from_secs(1));
        assert_eq!(next, "14/Nov/2023:22:13:21 +0000");
        assert_eq!(
            stamp(&mut format, at - Duration::from_millis(1)),
            "14/Nov/2023:22:13:19 +0000"
        );
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_byte_check() {
        for bad in 0..=255u8 {
            for len in 1..=17 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = bad;
                    let want = !needs_escape(bad);
                    assert_eq!(all_plain(&v), want, "byte {bad:#x} at {at} of {len}");
                }
            }
        }
        assert!(all_plain(b""));
    }

    #[test]
    fn json_line_is_one_object() {
        let mut out = Vec::new();
        LineFormat::new(Format::Json).write(&mut out, &record());
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["target"], "/a?b=c");
        assert_eq!(v["user_agent"], "x\" \"forged\\");
        assert_eq!(v["cache_status"], "daramjwee; hit");
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert!(v["upstream_ms"].is_null());
    }

    /// What rendering one combined line (a 1 KiB hit's, as the bench sends it: the request's
    /// draft, then the splice at the end) costs with warm caches:
    /// `cargo test --release --features proxy --bin daramjwee render_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run it with --release --ignored --nocapture"]
    fn render_speed() {
        let rec = Record {
            start: SystemTime::now(),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            target: Some(Text::new(b"/obj/1k")),
            duration: Duration::from_micros(150),
            cache_status: Some(Text::new(b"daramjwee; hit; ttl=3599; detail=memory")),
            request_id: Some(Text::new(b"1f2a3b4c5d-1234567")),
            user_agent: None,
            ..record()
        };
        let mut f = LineFormat::new(Format::Combined);
        let mut out = Vec::with_capacity(1 << 20);
        let t = std::time::Instant::now();
        let n = 2_000_000;
        for _ in 0..n {
            if out.len() > (1 << 20) - 512 {
                out.clear();
            }
            f.write(&mut out, std::hint::black_box(&rec));
        }
        println!(
            "{:.1} ns per line",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }

    /// The line as a whole record rendered it before drafts (kept to check the splice
    /// against).
    mod reference {
        use std::borrow::Cow;
        use std::io::Write;
        use std::net::IpAddr;
        use std::time::Duration;

        use time::format_description::well_known::Rfc3339;
        use time::OffsetDateTime;

        use super::super::{needs_escape, seconds, version_name};
        use crate::access_log::{Record, Text};

        /// The combined line, without its newline, with `when` as its timestamp.
        pub fn combined(out: &mut Vec<u8>, rec: &Record, when: &str) {
            match rec.client.map(|a| a.ip()) {
                Some(IpAddr::V4(ip)) => {
                    for (i, octet) in ip.octets().into_iter().enumerate() {
                        if i > 0 {
                            out.push(b'.');
                        }
                        out.extend_from_slice(octet.to_string().as_bytes());
                    }
                }
                Some(ip) => write!(out, "{ip}").unwrap(),
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" - - [");
            out.extend_from_slice(when.as_bytes());
            out.extend_from_slice(b"] \"");
            out.extend_from_slice(rec.method.as_str().as_bytes());
            out.push(b' ');
            escaped(out, rec.target.as_ref().map_or(&b"-"[..], Text::as_bytes));
            out.push(b' ');
            out.extend_from_slice(version_name(rec.version).as_bytes());
            out.extend_from_slice(b"\" ");
            out.extend_from_slice(rec.status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(rec.bytes.to_string().as_bytes());
            out.push(b' ');
            quoted(out, rec.referer.as_ref());
            out.push(b' ');
            quoted(out, rec.user_agent.as_ref());
            out.extend_from_slice(b" rt=");
            seconds(out, rec.duration);
            out.extend_from_slice(b" urt=");
            match rec.upstream {
                Some(d) => seconds(out, d),
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" cs=");
            quoted(out, rec.cache_status.as_ref());
            out.extend_from_slice(b" rid=");
            match &rec.request_id {
                Some(id) => escaped(out, id.as_bytes()),
                None => out.push(b'-'),
            }
        }

        fn quoted(out: &mut Vec<u8>, v: Option<&Text>) {
            out.push(b'"');
            match v {
                Some(v) => escaped(out, v.as_bytes()),
                None => out.push(b'-'),
            }
            out.push(b'"');
        }

        #[derive(serde::Serialize)]
        struct JsonLine<'a> {
            time: String,
            client: Option<IpAddr>,
            method: &'a str,
            target: Option<Cow<'a, str>>,
            version: &'static str,
            status: u16,
            bytes: u64,
            duration_ms: f64,
            upstream_ms: Option<f64>,
            cache_status: Option<Cow<'a, str>>,
            request_id: Option<Cow<'a, str>>,
            referer: Option<Cow<'a, str>>,
            user_agent: Option<Cow<'a, str>>,
        }

        /// The JSON line, without its newline.
        pub fn json(out: &mut Vec<u8>, rec: &Record) {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let line = JsonLine {
                time: OffsetDateTime::from(rec.start)
                    .format(&Rfc3339)
                    .unwrap_or_default(),
                client: rec.client.map(|a| a.ip()),
                method: rec.method.as_str(),
                target: lossy(&rec.target),
                version: version_name(rec.version),
                status: rec.status.as_u16(),
                bytes: rec.bytes,
                duration_ms: ms(rec.duration),
                upstream_ms: rec.upstream.map(ms),
                cache_status: lossy(&rec.cache_status),
                request_id: lossy(&rec.request_id),
                referer: lossy(&rec.referer),
                user_agent: lossy(&rec.user_agent),
            };
            serde_json::to_writer(&mut *out, &line).unwrap();
        }

        fn lossy(v: &Option<Text>) -> Option<Cow<'_, str>> {
            v.as_ref().map(Text::to_lossy)
        }

        /// The byte-by-byte escape.
        fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            for &b in bytes {
                if needs_escape(b) {
                    out.extend_from_slice(&[
                        b'\\',
                        b'x',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 15)],
                    ]);
                } else {
                    out.push(b);
                }
            }
        }
    }

    /// Records with values that exercise every escape and every absent field.
    fn tricky_records() -> Vec<Record> {
        const MIX: &[u8] = b"ab\"\\\x01\x7f\xc3\xa9~ \n";
        let long: Vec<u8> = (0..600).map(|i| MIX[i % MIX.len()]).collect();
        let mut cases = vec![record()];
        let mut rec = record();
        rec.client = Some("[2001:db8::1]:5000".parse().unwrap());
        rec.target = Some(Text::new("/a\nb/é?\"q\"=\\".as_bytes()));
        rec.request_id = Some(Text::new(&[0x7f, b'x', 0x1b, 0xff]));
        rec.referer = Some(Text::new(b"http://x/\"\t"));
        rec.user_agent = Some(Text::new(&[0xc3, 0x28, b'a', 0, b'z']));
        rec.cache_status = Some(Text::new(b"a\"b; hit"));
        rec.upstream = Some(Duration::new(3, 7_000));
        rec.status = http::StatusCode::from_u16(599).unwrap();
        rec.method = http::Method::from_bytes(b"PURGE").unwrap();
        rec.version = http::Version::HTTP_2;
        rec.bytes = u64::MAX;
        rec.start = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        cases.push(rec);
        let mut rec = record();
        rec.client = None;
        rec.target = None;
        rec.cache_status = None;
        rec.request_id = None;
        rec.user_agent = None;
        rec.version = http::Version::HTTP_10;
        cases.push(rec);
        let mut rec = record();
        rec.target = Some(Text::new(&long));
        rec.referer = Some(Text::new(&long[..200]));
        rec.user_agent = Some(Text::new(&long[..300]));
        rec.request_id = Some(Text::new(&long[..90]));
        rec.cache_status = Some(Text::new(&long[..100]));
        cases.push(rec);
        let mut rec = record();
        rec.client = Some("255.0.10.9:1".parse().unwrap());
        rec.target = Some(Text::new(&[b'p'; 379]));
        rec.user_agent = Some(Text::new(b""));
        rec.cache_status = Some(Text::new(&[b'c'; 50]));
        cases.push(rec);
        cases
    }

    /// The spliced line is byte for byte the line a whole record gave, in both formats,
    /// whatever the values (escapes, invalid UTF-8, absent fields, values past the inline
    /// room, IPv6 clients).
    #[test]
    fn spliced_lines_equal_whole_record_lines() {
        for (i, rec) in tricky_records().iter().enumerate() {
            let same = |format: Format, mut want: Vec<u8>| {
                want.push(b'\n');
                let mut got = Vec::new();
                LineFormat::new(format).write(&mut got, rec);
                let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                assert_eq!(lossy(&got), lossy(&want), "{format:?} {i}");
                assert_eq!(got, want, "{format:?} {i}");
            };
            let mut combined = Vec::new();
            let stamp = LineFormat::new(Format::Combined)
                .stamp(rec.start)
                .to_owned();
            reference::combined(&mut combined, rec, &stamp);
            same(Format::Combined, combined);
            let mut json = Vec::new();
            reference::json(&mut json, rec);
            same(Format::Json, json);
        }
    }
}
