//! The bench's arithmetic, kept apart from the processes the `gateway` bench target drives so
//! that it is tested (`make unit`): how a form's one-second slices make one measurement, the
//! medians, the CPU a form adds above another and its share of another's rate within each round,
//! and when a p99 stalled.

/// One wrk run of a form's measurement: the bench alternates forms between slices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slice {
    pub requests: f64,
    pub seconds: f64,
    pub envoy_cpu_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// A form's measurement on one route in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub envoy_cpu_us_per_request: f64,
}

impl Measurement {
    /// A form's slices of one round as one measurement: requests/s and CPU per request over
    /// all of them (a slice that served more weighs more), the latency percentiles as the
    /// median slice's.
    pub fn of(slices: &[Slice]) -> Measurement {
        let requests: f64 = slices.iter().map(|s| s.requests).sum();
        let seconds: f64 = slices.iter().map(|s| s.seconds).sum();
        let cpu: f64 = slices.iter().map(|s| s.envoy_cpu_us).sum();
        Measurement {
            requests_per_second: requests / seconds,
            p50_us: median(slices.iter().map(|s| s.p50_us).collect()),
            p99_us: median(slices.iter().map(|s| s.p99_us).collect()),
            envoy_cpu_us_per_request: cpu / requests,
        }
    }
}

/// The middle value (the upper one of an even count); NaN for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The medians of each half of the rounds' pairs.
pub fn median_pair(runs: &[(f64, f64)]) -> (f64, f64) {
    (
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
    )
}

/// Envoy CPU per request that `ours` adds above `theirs`, measured in the same rounds: the
/// median over the rounds of the difference within each, so what moves a whole round (its
/// forms share the same minutes) cancels.
pub fn added_within_rounds(ours: &[Measurement], theirs: &[Measurement]) -> f64 {
    median(
        ours.iter()
            .zip(theirs)
            .map(|(a, b)| a.envoy_cpu_us_per_request - b.envoy_cpu_us_per_request)
            .collect(),
    )
}

/// `ours`'s rate (requests or messages per second) as a share of `theirs`, measured in the
/// same rounds: the median over the rounds of the ratio within each, as
/// [`added_within_rounds`] takes the CPU, so a round that runs every form slower cancels.
pub fn share_within_rounds(ours: &[f64], theirs: &[f64]) -> f64 {
    median(ours.iter().zip(theirs).map(|(a, b)| a / b).collect())
}

/// The order of `n` forms at turn `turn` (a round, a slice): forward on even turns, back on
/// odd ones, so each form sits as often early as late.
pub fn turn_order(n: usize, turn: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if turn % 2 == 1 {
        order.reverse();
    }
    order
}

/// Stalls of the host only add latency: when a form's median p99 over its slices is more
/// than twice its best slice's, most of its slices stalled. The range, when they did.
pub fn stalled(p99s: &[f64]) -> Option<(f64, f64)> {
    let low = p99s.iter().copied().fold(f64::INFINITY, f64::min);
    let high = p99s.iter().copied().fold(0.0, f64::max);
    (median(p99s.to_vec()) > 2.0 * low).then_some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(requests: f64, seconds: f64, envoy_cpu_us: f64, p99_us: f64) -> Slice {
        Slice {
            requests,
            seconds,
            envoy_cpu_us,
            p50_us: p99_us / 2.0,
            p99_us,
        }
    }

    fn cpu(per_request: f64) -> Measurement {
        Measurement {
            requests_per_second: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            envoy_cpu_us_per_request: per_request,
        }
    }

    #[test]
    fn slices_add_up_by_requests_and_take_the_median_latency() {
        let m = Measurement::of(&[
            slice(1000.0, 1.0, 15_000.0, 800.0),
            slice(3000.0, 1.0, 39_000.0, 600.0),
            slice(2000.0, 2.0, 28_000.0, 5000.0),
        ]);
        // 6,000 requests in 4 s; 82,000 µs of CPU for them, not the mean of 15, 13 and 14.
        assert_eq!(m.requests_per_second, 1500.0);
        assert_eq!(m.envoy_cpu_us_per_request, 82_000.0 / 6000.0);
        assert_eq!(m.p99_us, 800.0);
        assert_eq!(m.p50_us, 400.0);
    }

    #[test]
    fn a_round_that_moves_every_form_cancels() {
        // The second and fourth rounds ran 5 and 10 µs slower for both forms.
        let ours = [cpu(16.0), cpu(21.5), cpu(17.0), cpu(26.0), cpu(16.25)];
        let theirs = [cpu(14.0), cpu(19.0), cpu(15.25), cpu(24.0), cpu(14.0)];
        // Round by round: 2, 2.5, 1.75, 2, 2.25. The medians' difference would be 1.75.
        assert_eq!(added_within_rounds(&ours, &theirs), 2.0);
        assert_eq!(added_within_rounds(&theirs, &ours), -2.0);
    }

    #[test]
    fn a_round_that_slows_every_form_cancels_in_a_share() {
        // The second round ran every form at half the rate, the fourth at 1.2 times.
        let ours = [900.0, 475.0, 920.0, 1140.0, 880.0];
        let theirs = [1000.0, 500.0, 1000.0, 1200.0, 1000.0];
        // Round by round: 0.90, 0.95, 0.92, 0.95, 0.88. The medians' ratio would be 0.9.
        assert_eq!(share_within_rounds(&ours, &theirs), 0.92);
        assert!(share_within_rounds(&[], &[]).is_nan());
    }

    #[test]
    fn turns_go_forward_then_back() {
        assert_eq!(turn_order(3, 0), [0, 1, 2]);
        assert_eq!(turn_order(3, 1), [2, 1, 0]);
        assert_eq!(turn_order(3, 4), [0, 1, 2]);
        assert_eq!(turn_order(0, 1), [0usize; 0]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
        assert_eq!(
            median_pair(&[(1.0, 30.0), (3.0, 10.0), (2.0, 20.0)]),
            (2.0, 20.0)
        );
    }

    #[test]
    fn a_p99_stalled_when_most_slices_did() {
        assert_eq!(stalled(&[2000.0, 2100.0, 40_000.0, 2050.0, 90_000.0]), None);
        assert_eq!(
            stalled(&[2000.0, 40_000.0, 41_000.0, 2050.0, 90_000.0]),
            Some((2000.0, 90_000.0))
        );
    }
}
