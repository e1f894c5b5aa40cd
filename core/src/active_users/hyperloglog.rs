//! A HyperLogLog sketch (Flajolet et al., 2007) with 2^12 one-byte registers: 4 KB that count
//! any number of distinct users with a standard error of 1.04 / sqrt(4096) = 1.6%, and that
//! merge by taking the larger register, so every worker's sketch unions into one.
//!
//! A sketch holds no user id: only, per register, the longest run of leading zeros among the
//! hashes that fell into it.

/// Index bits.
const PRECISION: u32 = 12;
/// Register count, and the sketch's size in bytes.
pub const REGISTERS: usize = 1 << PRECISION;

#[derive(Clone, PartialEq, Eq)]
pub struct Sketch {
    registers: Vec<u8>,
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch(~{})", self.estimate())
    }
}

impl Default for Sketch {
    fn default() -> Sketch {
        Sketch {
            registers: vec![0; REGISTERS],
        }
    }
}

impl Sketch {
    /// Adds a 64-bit hash; whether a register changed.
    pub fn insert(&mut self, hash: u64) -> bool {
        let index = (hash >> (64 - PRECISION)) as usize;
        // The rank of the remaining bits: position of the first 1, capped when they are all 0.
        let rest = hash << PRECISION;
        let rank = (rest.leading_zeros() + 1).min(64 - PRECISION + 1) as u8;
        match self.registers.get_mut(index) {
            Some(register) if *register < rank => {
                *register = rank;
                true
            }
            _ => false,
        }
    }

    /// Unions another sketch's registers (as [`Sketch::as_bytes`] gave them) into this one.
    /// Bytes of another length are ignored.
    pub fn merge(&mut self, other: &[u8]) {
        if other.len() != REGISTERS {
            return;
        }
        for (mine, theirs) in self.registers.iter_mut().zip(other) {
            *mine = (*mine).max(*theirs);
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.registers
    }

    pub fn is_empty(&self) -> bool {
        self.registers.iter().all(|&r| r == 0)
    }

    pub fn clear(&mut self) {
        self.registers.fill(0);
    }

    /// The estimated number of distinct hashes inserted. Below 2.5 × registers, linear
    /// counting over the empty registers, which is exact in practice for small counts.
    pub fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0u32;
        for &register in &self.registers {
            sum += 1.0 / (1u64 << register) as f64;
            if register == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / f64::from(zeros)).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// A 64-bit hash of a user id: FNV-1a, then MurmurHash3's finalizer so every bit of the
/// input reaches the index and the rank bits. Fixed, so every worker and every version agrees.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(range: std::ops::Range<u32>) -> Sketch {
        let mut sketch = Sketch::default();
        for user in range {
            sketch.insert(hash(format!("user-{user}").as_bytes()));
        }
        sketch
    }

    /// Linear counting: a handful of users is counted exactly, a few hundred within 2%.
    #[test]
    fn small_counts_are_exact_or_close() {
        assert_eq!(Sketch::default().estimate(), 0);
        for n in 1..=20 {
            assert_eq!(sketch_of(0..n).estimate(), u64::from(n), "{n} users");
        }
        for n in 21..=500 {
            let estimate = sketch_of(0..n).estimate();
            assert!(
                estimate.abs_diff(u64::from(n)) * 50 <= u64::from(n),
                "{n} users: {estimate}"
            );
        }
    }

    #[test]
    fn repeats_count_once() {
        let mut sketch = sketch_of(0..10);
        let before = sketch.clone();
        for user in 0..10 {
            assert!(!sketch.insert(hash(format!("user-{user}").as_bytes())));
        }
        assert_eq!(sketch, before);
        assert_eq!(sketch.estimate(), 10);
    }

    /// Within three standard errors (4.9%) at every scale tried.
    #[test]
    fn large_counts_are_within_the_error_bound() {
        for n in [1_000u32, 10_000, 100_000, 1_000_000] {
            let estimate = sketch_of(0..n).estimate() as f64;
            let error = (estimate - f64::from(n)).abs() / f64::from(n);
            assert!(error < 0.049, "{n} users estimated {estimate} ({error:.4})");
        }
    }

    #[test]
    fn merged_sketches_count_the_union() {
        let mut a = sketch_of(0..600);
        let b = sketch_of(400..1000);
        a.merge(b.as_bytes());
        assert_eq!(a, sketch_of(0..1000));
        // Foreign bytes change nothing.
        a.merge(&[255; 10]);
        assert_eq!(a, sketch_of(0..1000));
    }

    #[test]
    fn rank_is_capped_for_an_all_zero_tail() {
        let mut sketch = Sketch::default();
        sketch.insert(0);
        assert_eq!(sketch.as_bytes().first(), Some(&53));
        sketch.clear();
        assert!(sketch.is_empty());
    }
}
