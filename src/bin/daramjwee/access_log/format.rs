//! Rendering a [`Record`] as one line: combined or JSON.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use super::{Format, Record, Text};

/// Renders records as lines of one format.
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

impl LineFormat {
    /// A renderer of `format`.
    pub fn new(format: Format) -> LineFormat {
        LineFormat {
            format,
            stamp: None,
        }
    }

    /// Appends `rec`, with its newline, to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, rec: &Record) {
        match self.format {
            Format::Combined => {
                let stamp = self.stamp(rec.start);
                combined(out, rec, stamp);
            }
            Format::Json => json(out, rec),
        }
        out.push(b'\n');
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

/// `client - - [time] "METHOD target VERSION" status bytes "referer" "user-agent" rt= urt= cs=
/// rid=`. Writing into a `Vec` cannot fail, so the results of `write!` are ignored.
fn combined(out: &mut Vec<u8>, rec: &Record, when: &str) {
    match rec.client.map(|a| a.ip()) {
        Some(IpAddr::V4(ip)) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                small_decimal(out, octet);
            }
        }
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
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
    decimal(out, rec.bytes);
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

/// `d` in seconds with six decimals (`0.001500`), from integers: the line is written once per
/// request, and float formatting was the writer's largest cost. The fraction's six digits,
/// leading zeros included, are written directly rather than through `itoa` and a padding copy.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    decimal(out, d.as_secs());
    let mut frac = [b'.', 0, 0, 0, 0, 0, 0];
    let mut micros = d.subsec_micros();
    for digit in frac[1..].iter_mut().rev() {
        // `micros % 10` fits in a u8.
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&frac);
}

/// `n` in decimal, without `itoa`'s general loop (an address has four of these).
fn small_decimal(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

fn decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A header value in double quotes, or `"-"`.
fn quoted(out: &mut Vec<u8>, v: Option<&Text>) {
    out.push(b'"');
    match v {
        Some(v) => escaped(out, v.as_bytes()),
        None => out.push(b'-'),
    }
    out.push(b'"');
}

/// Bytes a client chose, with `"`, `\`, spaces' control-character cousins and non-ASCII
/// written as `\xHH` (as nginx does), so no client can forge a field or a line.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    // Nearly every value needs no escape: a clean one is copied whole.
    if all_plain(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
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

/// Control characters, `"`, `\`, DEL and non-ASCII: what [`escaped`] writes as `\xHH`.
fn needs_escape(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\'
}

/// Whether no byte [`needs_escape`], eight bytes at a time: the values are short (a target, a
/// request id), and a byte-by-byte loop was the largest cost of a line.
fn all_plain(bytes: &[u8]) -> bool {
    const fn each(b: u8) -> u64 {
        0x0101_0101_0101_0101 * b as u64
    }
    // Whether some byte of `v` is below `n` (n <= 0x80): exact as a yes/no answer.
    let below = |v: u64, n: u8| v.wrapping_sub(each(n)) & !v & each(0x80);
    let unsafe_in = |v: u64| {
        (v & each(0x80))
            | below(v, 0x20)
            | below(v ^ each(b'"'), 1)
            | below(v ^ each(b'\\'), 1)
            | below(v ^ each(0x7f), 1)
            != 0
    };
    let word = |w: &[u8]| {
        let mut v = [0; 8];
        v.copy_from_slice(w);
        u64::from_le_bytes(v)
    };
    if bytes.len() < 8 {
        return !bytes.iter().any(|&b| needs_escape(b));
    }
    let mut words = bytes.chunks_exact(8);
    if words.any(|w| unsafe_in(word(w))) {
        return false;
    }
    // The last eight bytes, overlapping words already checked: a yes/no answer allows it.
    !unsafe_in(word(&bytes[bytes.len() - 8..]))
}

/// A JSON line's fields, borrowed from the record where they can be: the line is rendered on
/// the request's thread, so it should allocate as little as the combined one.
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

fn json(out: &mut Vec<u8>, rec: &Record) {
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
    // Serializing plain strings and numbers into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
}

fn lossy(v: &Option<Text>) -> Option<Cow<'_, str>> {
    v.as_ref().map(Text::to_lossy)
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

    /// What rendering one combined line (a 1 KiB hit's, as the bench sends it) costs with warm
    /// caches:
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
}
