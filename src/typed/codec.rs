//! [`Codec`]: how a [`TypedCache`](super::TypedCache) turns values into stored bytes and back.
//!
//! Two are provided: [`Postcard`] (the default: compact binary) and [`Json`]. A codec must be
//! deterministic about failure: bytes it cannot read as a whole `T` are an error, never a
//! partial or default value, because the cache treats a decode error as a miss and refetches.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes values for storage and decodes stored bytes.
///
/// The [`name`](Codec::name) is stored with every value (in a digest with the cache's schema),
/// so bytes written by one codec are never handed to another.
///
/// ```
/// use daramjwee::typed::{Codec, Json};
///
/// let bytes = Json.encode(&vec![1u32, 2]).unwrap();
/// assert_eq!(bytes, b"[1,2]");
/// let back: Vec<u32> = Json.decode(&bytes).unwrap();
/// assert_eq!(back, [1, 2]);
/// ```
pub trait Codec: Send + Sync + 'static {
    /// Why a value could not be encoded or decoded.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A short, stable name for the format (`"postcard"`, `"json"`).
    fn name(&self) -> &'static str;

    /// Encodes `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, Self::Error>;

    /// Decodes all of `bytes` as one `T`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, Self::Error>;
}

/// The compact binary default: [postcard](https://docs.rs/postcard).
///
/// Chosen because its wire format is specified and stable since 1.0, integers are varints (a
/// small struct is a few bytes), it is serde-native and maintained; bincode, the usual
/// alternative, stopped at a final unmaintained release. postcard is **not self-describing**:
/// a change of `T` that keeps the byte layout (two fields of one type swapped) still decodes,
/// into the wrong fields. Give the cache a new [`schema`](super::TypedCache::schema) whenever
/// `T` changes shape; values stored under another schema are refetched, never decoded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

/// Why [`Postcard`] could not encode or decode a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostcardError {
    /// postcard's own error.
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    /// The bytes held more than one value: they were written for a different type.
    #[error("{0} byte(s) left over after the value")]
    TrailingBytes(usize),
}

impl Codec for Postcard {
    type Error = PostcardError;

    fn name(&self) -> &'static str {
        "postcard"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, PostcardError> {
        Ok(postcard::to_stdvec(value)?)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, PostcardError> {
        // `from_bytes` ignores bytes past the value; a stored value of another (longer) type
        // must not pass for this one.
        let (value, rest) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(PostcardError::TrailingBytes(rest.len()));
        }
        Ok(value)
    }
}

/// JSON through [serde_json](https://docs.rs/serde_json): larger and slower than [`Postcard`],
/// but readable in a store and self-describing, so a field added with `#[serde(default)]`
/// still reads older values.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    type Error = serde_json::Error;

    fn name(&self) -> &'static str {
        "json"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(value)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Small {
        id: u32,
        name: String,
    }

    #[test]
    fn postcard_round_trips_compactly() {
        let v = Small {
            id: 7,
            name: "dotori".into(),
        };
        let bytes = Postcard.encode(&v).unwrap();
        assert_eq!(bytes.len(), 1 + 1 + 6, "varint id, length, bytes");
        assert_eq!(Postcard.decode::<Small>(&bytes).unwrap(), v);
    }

    #[test]
    fn postcard_refuses_bytes_left_over_after_the_value() {
        let bytes = Postcard.encode(&(7u32, 9u32)).unwrap();
        let err = Postcard.decode::<u32>(&bytes).unwrap_err();
        assert!(matches!(err, PostcardError::TrailingBytes(1)), "{err}");
    }

    #[test]
    fn json_refuses_a_value_missing_a_required_field() {
        assert!(Json.decode::<Small>(br#"{"id":7}"#).is_err());
    }
}
