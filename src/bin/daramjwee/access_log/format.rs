//! Rendering a [`Record`] as one line: combined or JSON.

use std::io::Write;
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
    stamp: Option<(u64, String)>,
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
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.stamp.as_ref().is_none_or(|(s, _)| *s != secs) {
            let text = OffsetDateTime::from(t)
                .format(format_description!(
                    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
                ))
                .unwrap_or_default();
            self.stamp = Some((secs, text));
        }
        self.stamp.as_ref().map_or("", |(_, text)| text)
    }
}

/// `client - - [time] "METHOD target VERSION" status bytes "referer" "user-agent" rt= urt= cs=
/// rid=`. Writing into a `Vec` cannot fail, so the results of `write!` are ignored.
fn combined(out: &mut Vec<u8>, rec: &Record, when: &str) {
    let client = rec.client.map(|a| a.ip());
    match client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
    let _ = write!(out, " - - [{when}] \"{} ", rec.method);
    escaped(out, rec.target.as_ref().map_or(&b"-"[..], Text::as_bytes));
    let _ = write!(
        out,
        " {:?}\" {} {} ",
        rec.version,
        rec.status.as_u16(),
        rec.bytes
    );
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

/// A header value in double quotes, or `"-"`.
/// `d` in seconds with six decimals (`0.001500`), from integers: the line is written once per
/// request, and float formatting was the writer's largest cost.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros();
    let _ = write!(out, "{}.{:06}", micros / 1_000_000, micros % 1_000_000);
}

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
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    client: Option<String>,
    method: &'a str,
    target: Option<String>,
    version: String,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    cache_status: Option<String>,
    request_id: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
}

fn json(out: &mut Vec<u8>, rec: &Record) {
    let text = |v: &Option<Text>| v.as_ref().map(|v| v.to_lossy().into_owned());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let line = JsonLine {
        time: OffsetDateTime::from(rec.start)
            .format(&Rfc3339)
            .unwrap_or_default(),
        client: rec.client.map(|a| a.ip().to_string()),
        method: rec.method.as_str(),
        target: text(&rec.target),
        version: format!("{:?}", rec.version),
        status: rec.status.as_u16(),
        bytes: rec.bytes,
        duration_ms: ms(rec.duration),
        upstream_ms: rec.upstream.map(ms),
        cache_status: text(&rec.cache_status),
        request_id: text(&rec.request_id),
        referer: text(&rec.referer),
        user_agent: text(&rec.user_agent),
    };
    // Serializing plain strings and numbers into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
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
}
