//! The `Age` field and a response's age when it arrives (RFC 9111 §4.2.3, §5.1).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};

/// The largest age a cache has to represent (RFC 9111 §1.2.2): an `Age` past it is read as
/// 2^31 s, older than any lifetime a response can give (`max-age` saturates at 2^31 - 1).
const MAX_AGE_VALUE: u64 = 1 << 31;

/// The `Age` a response arrived with, in seconds (0 when it has none, or an invalid one).
///
/// `Age` is a singleton field; a sender that merged several lines into one list
/// (`Age: 7200, 0`) is read like several lines: by the first member, as the first line would
/// be. A value that is not delta-seconds (non-numeric, negative, fractional) is ignored.
pub(crate) fn age_value(headers: &HeaderMap) -> u64 {
    let Some(first) = headers.get(header::AGE) else {
        return 0;
    };
    let Ok(line) = first.to_str() else { return 0 };
    let member = line.split(',').next().unwrap_or_default().trim();
    if member.is_empty() || !member.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    // Only a value too large for u64 fails to parse here: it is past the cap as well.
    member
        .parse::<u64>()
        .map_or(MAX_AGE_VALUE, |v| v.min(MAX_AGE_VALUE))
}

/// The instant a response was generated: `now` minus its corrected initial age (RFC 9111
/// §4.2.3), the larger of its apparent age (from `Date`) and its `Age` plus the time the
/// request took. Entries are stored "as of" this instant, so an entry's age is
/// `now - stored_at`.
pub(crate) fn generated_at(
    headers: &HeaderMap,
    date: Option<SystemTime>,
    requested_at: SystemTime,
    now: SystemTime,
) -> SystemTime {
    let apparent = date
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or_default();
    let response_delay = now.duration_since(requested_at).unwrap_or_default();
    let corrected = Duration::from_secs(age_value(headers)).saturating_add(response_delay);
    let initial_age = apparent.max(corrected);
    // Out of the platform's range only for absurd `Date`s: the oldest instant we store.
    now.checked_sub(initial_age).unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(v: &[&str]) -> u64 {
        let mut h = HeaderMap::new();
        for line in v {
            h.append(header::AGE, line.parse().unwrap());
        }
        age_value(&h)
    }

    #[test]
    fn a_list_in_one_line_is_read_by_its_first_member() {
        assert_eq!(age(&["7200, 0"]), 7200);
        assert_eq!(age(&["7200", "0"]), 7200);
        assert_eq!(age(&[" 30 ,7200"]), 30);
    }

    #[test]
    fn invalid_values_are_ignored() {
        for bad in ["-5", "1.5", "abc", "", "0x10", "5s", ", 7200"] {
            assert_eq!(age(&[bad]), 0, "{bad:?}");
        }
        assert_eq!(age(&[]), 0);
    }

    #[test]
    fn values_past_2_pow_31_are_read_as_2_pow_31() {
        assert_eq!(age(&["2147483648"]), 1 << 31);
        assert_eq!(age(&["9999999999"]), 1 << 31);
        assert_eq!(age(&["99999999999999999999999999"]), 1 << 31);
        assert_eq!(age(&["2147483647"]), (1 << 31) - 1);
    }

    #[test]
    fn generated_at_takes_the_larger_of_apparent_and_corrected_age() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        h.insert(header::AGE, "40".parse().unwrap());
        let at = generated_at(&h, Some(now - Duration::from_secs(10)), now, now);
        assert_eq!(at, now - Duration::from_secs(40));
        let at = generated_at(&h, Some(now - Duration::from_secs(90)), now, now);
        assert_eq!(at, now - Duration::from_secs(90));
    }
}
