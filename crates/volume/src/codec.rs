//! Little-endian byte reading and writing for the image header and metadata. By hand because
//! the format is a handful of fixed fields; every read is bounds-checked and returns a
//! [`Truncated`] error instead of panicking.

use crate::keys::{NONCE_LEN, WrappedKey};

/// Input ended in the middle of `what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated(pub &'static str);

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Truncated> {
        if self.bytes.len() < n {
            return Err(Truncated(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u16 length, then that many bytes.
    pub(crate) fn blob(&mut self, what: &'static str) -> Result<&'a [u8], Truncated> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    pub(crate) fn wrapped_key(&mut self, what: &'static str) -> Result<WrappedKey, Truncated> {
        let nonce = self.array::<NONCE_LEN>(what)?;
        let ciphertext = self.blob(what)?.to_vec();
        Ok(WrappedKey { nonce, ciphertext })
    }
}

pub(crate) fn put_blob(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("metadata blobs are far below 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) fn put_wrapped_key(out: &mut Vec<u8>, key: &WrappedKey) {
    out.extend_from_slice(&key.nonce);
    put_blob(out, &key.ciphertext);
}
