//! The metadata codec shared by the file and object-store tiers: arbitrary bytes never panic,
//! and whatever decodes survives a re-encode unchanged (encoding is not canonical, since header
//! names are case-folded and repeated fields regrouped, but the meaning is stable).
//!
//! An input starting with `0` is taken whole; any other is a payload that the target frames
//! with a valid magic, length and checksum, so the fuzzer reaches the payload decoder instead
//! of spending its time on the checksum.
#![no_main]

use daramjwee::store::codec;
use libfuzzer_sys::fuzz_target;

fn check(record: &[u8]) {
    let len = codec::record_len(record);
    if let Ok((key, meta)) = codec::decode(record) {
        assert_eq!(len, Ok(record.len()), "a decoded record's length disagrees");
        let again = codec::encode(&key, &meta);
        let (key2, meta2) = codec::decode(&again).expect("a re-encoded record decodes");
        assert_eq!(key2, key);
        assert!(
            meta2 == meta,
            "a record changed meaning through a re-encode"
        );
        assert_eq!(
            codec::encode(&key2, &meta2),
            again,
            "a second re-encode differs"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, raw)) => check(raw),
        Some((_, payload)) => {
            let mut framed = b"DJM1".to_vec();
            framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            framed.extend_from_slice(payload);
            framed.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            check(&framed);
        }
        None => check(data),
    }
});
