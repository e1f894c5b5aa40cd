//! Decoding the proxy-wasm ABI's serialized header map, as `proxy_get_header_map_pairs`
//! returns it: a little-endian u32 pair count, then (key length, value length) as u32 pairs,
//! then each key and value followed by a NUL byte.
//!
//! Reading the whole map costs one hostcall; reading headers one by one costs one each, and
//! every hostcall that returns data also makes the host call back into the VM to allocate.

/// Finds the values of `names` (lowercase, as Envoy stores them) in one pass. The result has
/// one slot per name: the first value of that header, borrowed from `map`. A malformed map
/// yields what was decoded before the fault.
pub fn find<'m, const N: usize>(map: &'m [u8], names: [&str; N]) -> [Option<&'m [u8]>; N] {
    let mut found = [None; N];
    for (key, value) in pairs(map) {
        for (slot, name) in found.iter_mut().zip(names) {
            if slot.is_none() && key == name.as_bytes() {
                *slot = Some(value);
            }
        }
    }
    found
}

/// Every `(name, value)` pair, in order; a malformed map yields what was decoded before the
/// fault.
pub fn pairs(map: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let count = read_u32(map, 0).unwrap_or(0);
    let mut data = 4usize.checked_add(count.saturating_mul(8));
    (0..count).map_while(move |index| {
        let sizes = index.checked_mul(8)?.checked_add(4)?;
        let key_len = read_u32(map, sizes)?;
        let value_len = read_u32(map, sizes.checked_add(4)?)?;
        let (key, after_key) = take(map, data?, key_len)?;
        let (value, after_value) = take(map, after_key, value_len)?;
        data = Some(after_value);
        Some((key, value))
    })
}

/// `len` bytes at `at`, and the offset past them and their NUL terminator.
fn take(map: &[u8], at: usize, len: usize) -> Option<(&[u8], usize)> {
    let end = at.checked_add(len)?;
    Some((map.get(at..end)?, end.checked_add(1)?))
}

fn read_u32(map: &[u8], at: usize) -> Option<usize> {
    let bytes = map.get(at..at.checked_add(4)?)?;
    let bytes: [u8; 4] = bytes.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

/// Serializes pairs the way the host does (for tests and tools).
pub fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    serialize_into(
        &mut out,
        pairs.iter().map(|(key, value)| (key.as_bytes(), *value)),
    );
    out
}

/// Serializes pairs of bytes over `out`, grown at most once to the exact size: what a host
/// whose header map is not in this form (a native module) hands the core. Two passes: the
/// sizes, then each pair's lengths and bytes written in place (appending each piece cost a
/// native host a quarter of its header read).
pub fn serialize_into<'a>(
    out: &mut Vec<u8>,
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) {
    let (count, data) = pairs.clone().fold((0usize, 0usize), |(n, size), (k, v)| {
        (n + 1, size + k.len() + v.len() + 2)
    });
    let lengths = 4 + 8 * count;
    out.clear();
    out.reserve_exact(lengths + data);
    out.resize(lengths + data, 0);
    let Some((head, mut rest)) = out.split_at_mut_checked(lengths) else {
        return;
    };
    let Some((count_bytes, mut sizes)) = head.split_first_chunk_mut::<4>() else {
        return;
    };
    *count_bytes = (count as u32).to_le_bytes();
    for (key, value) in pairs {
        let Some((size, after)) = sizes.split_first_chunk_mut::<8>() else {
            return;
        };
        let (key_size, value_size) = size.split_at_mut(4);
        key_size.copy_from_slice(&(key.len() as u32).to_le_bytes());
        value_size.copy_from_slice(&(value.len() as u32).to_le_bytes());
        sizes = after;
        // Each piece is followed by its NUL, which `resize` wrote.
        for piece in [key, value] {
            let Some((place, after)) = rest.split_at_mut_checked(piece.len()) else {
                return;
            };
            place.copy_from_slice(piece);
            rest = after.get_mut(1..).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_value_of_each_name() {
        let map = serialize(&[
            (":authority", b"veza"),
            (":path", b"/api/v1/tracks/1?x=1"),
            (":method", b"GET"),
            ("x-dup", b"one"),
            ("x-dup", b"two"),
            ("bin", b"\xff\x00\x01"),
        ]);
        let [method, path, dup, bin, missing] =
            find(&map, [":method", ":path", "x-dup", "bin", "nope"]);
        assert_eq!(method, Some(&b"GET"[..]));
        assert_eq!(path, Some(&b"/api/v1/tracks/1?x=1"[..]));
        assert_eq!(dup, Some(&b"one"[..]));
        assert_eq!(bin, Some(&b"\xff\x00\x01"[..]));
        assert_eq!(missing, None);
    }

    /// The bytes proxy-wasm's host writes for the same map, and a buffer that held a longer
    /// map before is written over, not appended to.
    #[test]
    fn serializes_as_the_abi_does() {
        let mut out = vec![7u8; 64];
        serialize_into(
            &mut out,
            [(&b":path"[..], &b"/a"[..]), (b"x", b"")].into_iter(),
        );
        let expected: &[u8] = b"\x02\0\0\0\x05\0\0\0\x02\0\0\0\x01\0\0\0\0\0\0\0:path\0/a\0x\0\0";
        assert_eq!(out, expected);
        serialize_into(&mut out, std::iter::empty());
        assert_eq!(out, b"\0\0\0\0");
    }

    #[test]
    fn pairs_in_order() {
        let map = serialize(&[("b3", b"0"), ("x-dup", b"one"), ("x-dup", b"two")]);
        let all: Vec<(&[u8], &[u8])> = pairs(&map).collect();
        assert_eq!(
            all,
            [
                (&b"b3"[..], &b"0"[..]),
                (b"x-dup", b"one"),
                (b"x-dup", b"two")
            ]
        );
        // A count far beyond the data stops at the data.
        let mut lying = map.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(pairs(&lying).count() <= 3);
    }

    #[test]
    fn malformed_maps_never_panic() {
        let good = serialize(&[(":method", b"GET"), (":path", b"/x")]);
        for len in 0..good.len() {
            let _ = find(&good[..len], [":method", ":path"]);
        }
        assert_eq!(
            find(&good[..good.len() - 4], [":method", ":path"]),
            [Some(&b"GET"[..]), None]
        );
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find(&huge, [":method"]), [None]);
        let mut lying = good.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find(&lying, [":method", ":path"]), [None, None]);
        assert_eq!(find(&[], [":method"]), [None]);
    }
}
