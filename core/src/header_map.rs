//! A request's headers as the core reads them ([`Headers`]), and the proxy-wasm ABI's
//! serialized header map, as `proxy_get_header_map_pairs` returns it: a little-endian u32
//! pair count, then (key length, value length) as u32 pairs, then each key and value
//! followed by a NUL byte.
//!
//! Reading the whole map costs one hostcall; reading headers one by one costs one each, and
//! every hostcall that returns data also makes the host call back into the VM to allocate.

/// A request's headers as a host lends them to the core, every pair read in one call. A
/// host may lend its own header map (a native module reads Envoy's in place): the core takes
/// what it needs before its next call into the host, which may change the map.
pub trait Headers {
    /// Every `(name, value)` pair, in order; names lowercase, as Envoy keeps them.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The first value of each of `names` (lowercase), found in one pass. An empty name finds
    /// nothing: it stands for a header the configuration does not name.
    fn find<const N: usize>(&self, names: [&str; N]) -> [Option<&[u8]>; N] {
        self.find_and_visit(names, |_, _| {})
    }

    /// As [`Headers::find`], handing every pair to `visit` in the same pass: one walk of the
    /// map for everything a request's headers decide.
    fn find_and_visit<'a, const N: usize>(
        &'a self,
        names: [&str; N],
        mut visit: impl FnMut(&'a [u8], &'a [u8]),
    ) -> [Option<&'a [u8]>; N] {
        let mut found = [None; N];
        for (key, value) in self.pairs() {
            visit(key, value);
            if key.is_empty() {
                continue;
            }
            for (slot, name) in found.iter_mut().zip(names) {
                if slot.is_none() && key == name.as_bytes() {
                    *slot = Some(value);
                }
            }
        }
        found
    }
}

/// The map in proxy-wasm's serialized form; a malformed map yields what was decoded before
/// the fault.
#[derive(Debug, Clone, Copy)]
pub struct Serialized<B>(pub B);

impl<B: AsRef<[u8]>> Headers for Serialized<B> {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        pairs(self.0.as_ref())
    }
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

/// Serializes pairs the way the host does: a local reply's headers, tests and tools.
pub fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let data: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + 8 * pairs.len() + data);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        for piece in [key.as_bytes(), value] {
            out.extend_from_slice(piece);
            out.push(0);
        }
    }
    out
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
        let map = Serialized(map);
        let [method, path, dup, bin, missing] =
            map.find([":method", ":path", "x-dup", "bin", "nope"]);
        assert_eq!(method, Some(&b"GET"[..]));
        assert_eq!(path, Some(&b"/api/v1/tracks/1?x=1"[..]));
        assert_eq!(dup, Some(&b"one"[..]));
        assert_eq!(bin, Some(&b"\xff\x00\x01"[..]));
        assert_eq!(missing, None);
    }

    #[test]
    fn an_empty_name_finds_nothing_and_every_pair_is_visited() {
        let map = Serialized(serialize(&[("", b"empty"), ("x-a", b"1"), ("x-b", b"2")]));
        let mut visited = Vec::new();
        let [a, empty] = map.find_and_visit(["x-a", ""], |key, value| {
            visited.push((key.to_vec(), value.to_vec()))
        });
        assert_eq!(a, Some(&b"1"[..]));
        assert_eq!(empty, None);
        assert_eq!(
            visited,
            [
                (b"".to_vec(), b"empty".to_vec()),
                (b"x-a".to_vec(), b"1".to_vec()),
                (b"x-b".to_vec(), b"2".to_vec())
            ]
        );
    }

    /// The bytes proxy-wasm's host writes for the same map.
    #[test]
    fn serializes_as_the_abi_does() {
        let expected: &[u8] = b"\x02\0\0\0\x05\0\0\0\x02\0\0\0\x01\0\0\0\0\0\0\0:path\0/a\0x\0\0";
        assert_eq!(serialize(&[(":path", b"/a"), ("x", b"")]), expected);
        assert_eq!(serialize(&[]), b"\0\0\0\0");
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
            let _ = Serialized(&good[..len]).find([":method", ":path"]);
        }
        assert_eq!(
            Serialized(&good[..good.len() - 4]).find([":method", ":path"]),
            [Some(&b"GET"[..]), None]
        );
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Serialized(&huge).find([":method"]), [None]);
        let mut lying = good.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Serialized(&lying).find([":method", ":path"]), [None, None]);
        assert_eq!(Serialized(&[]).find([":method"]), [None]);
    }
}
