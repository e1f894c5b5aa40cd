//! Gateway-wide state in Envoy's shared data, which every worker VM of one Envoy sees.

use crate::host::{CasOutcome, Host, HostError};

/// CAS retries before giving up (another worker keeps winning the race).
const CAS_ATTEMPTS: usize = 8;

/// A gateway-wide cap on distinct names (metric label sets, chat rooms, stream ids): a name is
/// admitted once, by whichever worker sees it first, while fewer than `cap` are admitted.
/// Without shared data (a host error), the cap holds per worker.
#[derive(Debug)]
pub struct Budget {
    count_key: &'static str,
    marker_prefix: &'static str,
    admitted_here: u32,
}

impl Budget {
    pub fn new(
        host: &mut dyn Host,
        count_key: &'static str,
        marker_prefix: &'static str,
    ) -> Budget {
        // Another worker may have started it: write only if absent.
        if let Ok(None) = host.get_shared(count_key) {
            let _ = host.set_shared(count_key, &0u32.to_le_bytes(), 0);
        }
        Budget {
            count_key,
            marker_prefix,
            admitted_here: 0,
        }
    }

    /// Whether `name` is (or now becomes) one of the admitted names; `Err` carries the host
    /// error after which the per-worker answer was given.
    pub fn admit(
        &mut self,
        host: &mut dyn Host,
        name: &str,
        cap: u32,
    ) -> (bool, Option<HostError>) {
        let marker = format!("{}{name}", self.marker_prefix);
        match host.get_shared(&marker) {
            Ok(Some(_)) => return (true, None),
            Ok(None) => {}
            Err(err) => return (self.admit_locally(cap), Some(err)),
        }
        for _ in 0..CAS_ATTEMPTS {
            let (count, cas) = match host.get_shared(self.count_key) {
                Ok(Some((bytes, cas))) => (decode_u32(&bytes), cas),
                Ok(None) => (0, 0),
                Err(err) => return (self.admit_locally(cap), Some(err)),
            };
            if count >= cap {
                return (false, None);
            }
            match host.set_shared(self.count_key, &(count + 1).to_le_bytes(), cas) {
                Ok(CasOutcome::Stored) => {
                    self.admitted_here += 1;
                    return (true, host.set_shared(&marker, b"1", 0).err());
                }
                Ok(CasOutcome::Mismatch) => continue,
                Err(err) => return (self.admit_locally(cap), Some(err)),
            }
        }
        (false, None)
    }

    fn admit_locally(&mut self, cap: u32) -> bool {
        let admitted = self.admitted_here < cap;
        if admitted {
            self.admitted_here += 1;
        }
        admitted
    }
}

/// Adds `delta` to a gateway-wide reference count under `key`; returns the count before and
/// after, or `None` if the host kept refusing.
pub fn add_to_count(
    host: &mut dyn Host,
    key: &str,
    delta: i64,
) -> Result<Option<(u32, u32)>, HostError> {
    for _ in 0..CAS_ATTEMPTS {
        let (count, cas) = match host.get_shared(key)? {
            Some((bytes, cas)) => (decode_u32(&bytes), cas),
            None => (0, 0),
        };
        let next = u32::try_from((i64::from(count) + delta).max(0)).unwrap_or(u32::MAX);
        match host.set_shared(key, &next.to_le_bytes(), cas)? {
            CasOutcome::Stored => return Ok(Some((count, next))),
            CasOutcome::Mismatch => continue,
        }
    }
    Ok(None)
}

pub fn decode_u32(bytes: &[u8]) -> u32 {
    bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::memory::MemoryHost;

    #[test]
    fn budgets_admit_each_name_once_up_to_the_cap_across_workers() {
        let mut host = MemoryHost::default();
        let mut first = Budget::new(&mut host, "count", "name.");
        let mut second = Budget::new(&mut host, "count", "name.");
        assert_eq!(first.admit(&mut host, "a", 2), (true, None));
        assert_eq!(
            second.admit(&mut host, "a", 2),
            (true, None),
            "already admitted"
        );
        assert_eq!(second.admit(&mut host, "b", 2), (true, None));
        assert_eq!(first.admit(&mut host, "c", 2), (false, None));
        assert_eq!(first.admit(&mut host, "b", 2), (true, None));
    }

    #[test]
    fn counts_never_go_below_zero() {
        let mut host = MemoryHost::default();
        assert_eq!(add_to_count(&mut host, "room", 1), Ok(Some((0, 1))));
        assert_eq!(add_to_count(&mut host, "room", 1), Ok(Some((1, 2))));
        assert_eq!(add_to_count(&mut host, "room", -1), Ok(Some((2, 1))));
        assert_eq!(add_to_count(&mut host, "room", -1), Ok(Some((1, 0))));
        assert_eq!(add_to_count(&mut host, "room", -1), Ok(Some((0, 0))));
    }
}
