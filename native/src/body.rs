//! A body chunk as Envoy hands it to this ABI: slices of Envoy's buffer, read in place. The
//! frame reader's reads come from one slice without a copy; only a read that spans two slices
//! is copied.
//!
//! A WebSocket message is a chunk each way, so the slices' lists live on the stack: an
//! allocation here went through this library's `malloc`, whose code and free lists are cold
//! between messages (Envoy allocates through its own).

use smallvec::SmallVec;
use veza_observability_core::host::HostError;
use veza_observability_core::websocket::frames::ByteSource;

use crate::abi::{self, Buffer, EnvoyPtr};

/// Slices kept without an allocation; a chunk is one slice or a few (Envoy's buffer is a list
/// of 16 KiB slices).
const INLINE_SLICES: usize = 4;

pub struct Chunk<'a> {
    slices: SmallVec<[&'a [u8]; INLINE_SLICES]>,
    size: usize,
    scratch: Vec<u8>,
    failure: Option<HostError>,
}

impl<'a> Chunk<'a> {
    /// The chunk just received in `body_type`.
    ///
    /// # Safety
    /// `filter` is Envoy's object for the running hook; the chunk is used only within it.
    pub unsafe fn received(filter: EnvoyPtr, body_type: abi::BodyType) -> Chunk<'a> {
        // SAFETY: the caller's guarantee; the slices stay valid while the hook runs.
        unsafe {
            let count =
                abi::envoy_dynamic_module_callback_http_get_body_chunks_size(filter, body_type);
            let mut buffers: SmallVec<[Buffer; INLINE_SLICES]> =
                SmallVec::from_elem(Buffer::EMPTY, count);
            if count > 0
                && !abi::envoy_dynamic_module_callback_http_get_body_chunks(
                    filter,
                    body_type,
                    buffers.as_mut_ptr(),
                )
            {
                return Chunk::of(SmallVec::new(), Some(HostError(10)));
            }
            Chunk::of(buffers.iter().map(|b| b.bytes()).collect(), None)
        }
    }

    pub fn of(
        slices: SmallVec<[&'a [u8]; INLINE_SLICES]>,
        failure: Option<HostError>,
    ) -> Chunk<'a> {
        let size = slices.iter().map(|s| s.len()).sum();
        Chunk {
            slices,
            size,
            scratch: Vec::new(),
            failure,
        }
    }
}

impl ByteSource for Chunk<'_> {
    fn size(&self) -> usize {
        self.size
    }

    fn read(&mut self, offset: usize, len: usize) -> &[u8] {
        let end = offset.saturating_add(len).min(self.size);
        let mut start = 0;
        for slice in &self.slices {
            let slice_end = start + slice.len();
            if offset >= start && end <= slice_end {
                return slice.get(offset - start..end - start).unwrap_or_default();
            }
            if offset < slice_end {
                break;
            }
            start = slice_end;
        }
        // Spans slices: copy the range.
        self.scratch.clear();
        let mut start = 0;
        for slice in &self.slices {
            let slice_end = start + slice.len();
            let from = offset.max(start);
            let to = end.min(slice_end);
            if from < to {
                self.scratch
                    .extend_from_slice(slice.get(from - start..to - start).unwrap_or_default());
            }
            start = slice_end;
        }
        &self.scratch
    }

    fn failure(&self) -> Option<HostError> {
        self.failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_within_and_across_slices() {
        let whole: Vec<u8> = (0u8..20).collect();
        // Three slices stay on the stack, five spill to the heap.
        let splits: [&[&[u8]]; 2] = [
            &[&whole[..5], &whole[5..6], &whole[6..]],
            &[
                &whole[..5],
                &whole[5..6],
                &whole[6..10],
                &whole[10..11],
                &whole[11..],
            ],
        ];
        for split in splits {
            let mut chunk = Chunk::of(split.iter().copied().collect(), None);
            assert_eq!(chunk.slices.spilled(), split.len() > INLINE_SLICES);
            assert_eq!(chunk.size(), 20);
            for offset in 0..22 {
                for len in 0..22 {
                    let end = (offset + len).min(20);
                    let expected = whole.get(offset..end).unwrap_or_default().to_vec();
                    assert_eq!(
                        chunk.read(offset, len),
                        expected,
                        "{} slices, offset {offset} len {len}",
                        split.len()
                    );
                }
            }
        }
        let mut empty = Chunk::of(SmallVec::new(), None);
        assert_eq!(empty.read(0, 4), b"");
    }
}
