//! The file tier's on-disk entry decoder, end to end: fuzz bytes are written as an entry file
//! (raw, or a valid entry that is then damaged) in a fresh directory, a `FileStore` is opened
//! on it and the key is read back. Opening and reading must never panic; a read must be a miss,
//! an error, or a body that is exactly the one that was stored (never wrong bytes), and an
//! undamaged entry must be a hit.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use daramjwee::store::{codec, FileStore, Store};
use daramjwee::Metadata;
use futures_util::StreamExt;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const KEYS: &[&str] = &["http://fuzz/a", "http://fuzz/b?q=1", ""];
const NAMES: &[&str] = &["content-type", "etag", "cache-control", "x-a", "vary"];

#[derive(Arbitrary, Debug)]
enum Edit {
    Flip { at: u32, xor: u8 },
    Truncate { at: u32 },
    Append(Vec<u8>),
    Insert { at: u32, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// The whole file from the fuzzer.
    Raw {
        key: u8,
        file: Vec<u8>,
        temp: Option<Vec<u8>>,
    },
    /// A valid entry, then damaged.
    Built {
        key: u8,
        /// Filed under another key's name (a hash mismatch the store must notice).
        placed_as: Option<u8>,
        status: u16,
        headers: Vec<(u8, Vec<u8>)>,
        body: Vec<u8>,
        /// Pads the body past the store's 32 KiB single-read tail, to reach the streaming path.
        pad: Option<u16>,
        /// A body length in the record that disagrees with the footer.
        declared_len: Option<u32>,
        edits: Vec<Edit>,
    },
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn entry_path(root: &Path, key: &str) -> PathBuf {
    let hex: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    root.join("objects")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(hex)
}

fn footer(body_len: u64, body_crc: u32, record_len: u32) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&body_len.to_le_bytes());
    out[8..12].copy_from_slice(&body_crc.to_le_bytes());
    out[12..16].copy_from_slice(&record_len.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out[20..].copy_from_slice(b"DJF1");
    out
}

fn apply(file: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits.iter().take(8) {
        let len = file.len().max(1);
        match e {
            Edit::Flip { at, xor } => {
                if let Some(b) = file.get_mut(*at as usize % len) {
                    *b ^= xor;
                }
            }
            Edit::Truncate { at } => file.truncate(*at as usize % len),
            Edit::Append(bytes) => file.extend_from_slice(bytes),
            Edit::Insert { at, bytes } => {
                let at = (*at as usize % len).min(file.len());
                file.splice(at..at, bytes.iter().copied());
            }
        }
    }
}

/// What the file should yield if the store accepts it.
struct Expect {
    key: &'static str,
    body: Vec<u8>,
    meta: Option<Metadata>,
    /// The file is a valid entry for `key`: the store must serve it.
    intact: bool,
}

fuzz_target!(|input: Input| {
    let dir = tempfile::Builder::new()
        .prefix("djfuzz")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    let root = dir.path();
    let (path, file, expect, temp) = match input {
        Input::Raw { key, file, temp } => {
            let key = KEYS[key as usize % KEYS.len()];
            let expect = Expect {
                key,
                body: Vec::new(),
                meta: None,
                intact: false,
            };
            (entry_path(root, key), file, expect, temp)
        }
        Input::Built {
            key,
            placed_as,
            status,
            headers,
            mut body,
            pad,
            declared_len,
            edits,
        } => {
            let key = KEYS[key as usize % KEYS.len()];
            let placed = placed_as.map_or(key, |p| KEYS[p as usize % KEYS.len()]);
            let Ok(status) = StatusCode::from_u16(status % 1000) else {
                return;
            };
            if let Some(pad) = pad {
                body.extend((0..32 * 1024 + usize::from(pad)).map(|i| (i % 251) as u8));
            }
            let mut map = HeaderMap::new();
            for (n, v) in headers.iter().take(16) {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    map.append(HeaderName::from_static(NAMES[*n as usize % NAMES.len()]), v);
                }
            }
            let body_len = body.len() as u64;
            let meta = Metadata::new(status).with_headers(map);
            let mut recorded = meta.clone();
            recorded.content_length = Some(declared_len.map_or(body_len, u64::from));
            let record = codec::encode(key, &recorded);
            let mut file = body.clone();
            file.extend_from_slice(&record);
            file.extend_from_slice(&footer(
                body_len,
                crc32fast::hash(&body),
                record.len() as u32,
            ));
            let original = file.clone();
            apply(&mut file, &edits);
            let intact =
                file == original && placed == key && recorded.content_length == Some(body_len);
            let expect = Expect {
                key,
                body,
                meta: Some(recorded),
                intact,
            };
            (entry_path(root, placed), file, expect, None)
        }
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &file).unwrap();
    if let Some(t) = temp {
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp").join("left.tmp"), t).unwrap();
    }

    runtime().block_on(async {
        let store = match FileStore::builder(root).fsync(false).open().await {
            Ok(s) => s,
            Err(e) => panic!("open failed on a directory with one bad file: {e}"),
        };
        // Temp files never survive an open.
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);

        let got = store.get(expect.key).await;
        let entry = match got {
            Ok(Some(entry)) => entry,
            Ok(None) | Err(_) => {
                assert!(!expect.intact, "a valid entry was not served");
                return;
            }
        };
        let mut body = Vec::new();
        let mut stream = entry.body;
        let mut clean = true;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(_) => {
                    clean = false;
                    break;
                }
            }
        }
        if !clean {
            assert!(!expect.intact, "a valid entry's body failed");
            return;
        }
        assert_eq!(
            entry.meta.content_length,
            Some(body.len() as u64),
            "served body length disagrees with its metadata"
        );
        match &expect.meta {
            Some(meta) => {
                assert!(body == expect.body, "wrong body served");
                assert_eq!(entry.meta.status, meta.status, "wrong status served");
                assert_eq!(entry.meta.headers, meta.headers, "wrong headers served");
            }
            None => assert!(
                file.starts_with(&body),
                "a raw file served bytes that are not its body"
            ),
        }
        let head = store.head(expect.key).await;
        if let Ok(Some(m)) = head {
            assert_eq!(m.content_length, Some(body.len() as u64));
        }
    });
});
