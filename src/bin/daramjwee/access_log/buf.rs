//! Where a line's pieces are rendered: the shard's `Vec`, or a request's own [`Buf`].

/// Something bytes are appended to. The renderers write through this so the request's
/// pieces ([`Buf`]) and the finished line (the shard's `Vec`) share one escaping code.
pub trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);

    /// Appends one byte.
    fn put_byte(&mut self, b: u8) {
        self.put(&[b]);
    }
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_byte(&mut self, b: u8) {
        self.push(b);
    }
}

/// Bytes kept in place up to [`Buf::INLINE`], then on the heap: the request's rendered
/// pieces live in the boxed record of the request, so a typical line costs no allocation of
/// its own, and a long one (a browser's user agent and referer) still fits whole.
pub struct Buf {
    /// Bytes used of `inline`, or [`Buf::SPILLED`] once they are on the heap: one number
    /// to check before an append, not two (the inline room and whether the bytes spilled).
    len: usize,
    inline: [u8; Buf::INLINE],
    /// Every byte, once they no longer fit inline.
    heap: Vec<u8>,
}

impl Buf {
    /// The most bytes kept without an allocation. The record that holds this is about
    /// 0.5 KiB in all, as the copied request values it replaces were.
    pub const INLINE: usize = 384;

    /// `len` when the bytes are on the heap: past the inline room, so that no append finds
    /// room there.
    const SPILLED: usize = Buf::INLINE + 1;

    /// An empty buffer.
    pub fn new() -> Buf {
        Buf {
            len: 0,
            inline: [0; Buf::INLINE],
            heap: Vec::new(),
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self.inline.get(..self.len) {
            Some(bytes) => bytes,
            None => &self.heap,
        }
    }

    /// How many bytes there are.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Keeps the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        if self.len != Buf::SPILLED {
            self.len = self.len.min(n);
            return;
        }
        self.heap.truncate(n);
        // What fits goes back inline (and the heap's allocation is freed).
        if let Some(room) = self.inline.get_mut(..self.heap.len()) {
            room.copy_from_slice(&self.heap);
            self.len = self.heap.len();
            self.heap = Vec::new();
        }
    }

    /// Moves the bytes to the heap and appends `bytes` there.
    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        if self.len != Buf::SPILLED {
            let mut heap = Vec::with_capacity((self.len + bytes.len()) * 2);
            heap.extend_from_slice(&self.inline[..self.len]);
            self.heap = heap;
            self.len = Buf::SPILLED;
        }
        self.heap.extend_from_slice(bytes);
    }
}

impl Out for Buf {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.inline.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.spill(bytes),
        }
    }

    fn put_byte(&mut self, b: u8) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.spill(&[b]),
        }
    }
}

/// For `write!` and `serde_json`, which write through `io::Write`.
impl std::io::Write for Buf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.put(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes past the inline room move to the heap, in order, and a truncation back below
    /// it returns them inline.
    #[test]
    fn long_contents_spill_whole_and_truncate_back() {
        let mut b = Buf::new();
        let mut want = Vec::new();
        for i in 0..(Buf::INLINE + 10) {
            let byte = (i % 251) as u8;
            if i % 3 == 0 {
                b.put_byte(byte);
            } else {
                b.put(&[byte]);
            }
            want.push(byte);
            assert_eq!(b.as_bytes(), &want[..]);
        }
        b.put(&want.clone());
        want.extend_from_slice(&want.clone());
        assert_eq!(b.as_bytes(), &want[..]);
        b.truncate(Buf::INLINE + 1);
        assert_eq!(b.as_bytes(), &want[..Buf::INLINE + 1]);
        b.truncate(5);
        assert_eq!(b.as_bytes(), &want[..5]);
        assert_eq!(b.len(), 5);
        b.put(b"xy");
        assert_eq!(&b.as_bytes()[5..], b"xy");
    }
}
