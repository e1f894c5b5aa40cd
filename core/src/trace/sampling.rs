//! Head sampling for a new trace, deterministic on the trace id as OpenTelemetry's
//! TraceIdRatioBased sampler is: sampled when the low 64 bits are below `ratio × 2^64`, so
//! every hop that samples by ratio agrees on the same trace.

use super::context::TraceId;

pub fn sampled(trace: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    // ratio < 1: the bound fits in u64.
    let bound = (ratio * 18_446_744_073_709_551_616.0) as u64;
    (trace.0 as u64) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_ten_thousand_random_traces() {
        // splitmix64, fixed seed: the same 10,000 ids every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let ids: Vec<TraceId> = (0..10_000)
            .map(|_| TraceId((u128::from(next()) << 64) | u128::from(next())))
            .collect();
        let count = ids.iter().filter(|id| sampled(**id, 0.25)).count();
        assert!((2300..=2700).contains(&count), "{count} of 10,000");
        // The same id always gets the same decision.
        for id in &ids {
            assert_eq!(sampled(*id, 0.25), sampled(*id, 0.25));
        }
    }

    #[test]
    fn bounds_and_the_low_bits() {
        assert!(sampled(TraceId(u128::MAX), 1.0));
        assert!(!sampled(TraceId(1), 0.0));
        assert!(!sampled(TraceId(1), f64::NAN));
        // Only the low 64 bits count.
        assert!(sampled(TraceId(u128::MAX << 64), 0.01));
        assert!(!sampled(TraceId(u128::from(u64::MAX)), 0.99));
        assert!(sampled(TraceId(u128::from(u64::MAX / 2 - 1)), 0.5));
        assert!(!sampled(TraceId(u128::from(u64::MAX / 2 + 2)), 0.5));
    }
}
