//! Gateway-wide state in Envoy's shared data, which every worker VM of one Envoy sees: every
//! key the filter uses, and the one compare-and-swap update they all go through.

use crate::host::{CasOutcome, Host, HostError};

/// Every shared-data key and key prefix, in one place so no two parts collide.
pub mod keys {
    /// `http_requests_total` label sets admitted gateway-wide, and a marker per set.
    pub const SERIES_COUNT: &str = "veza_observability.series_count";
    pub const SERIES_PREFIX: &str = "veza_observability.series.";
    /// Chat rooms tracked, and a reference count per room.
    pub const ROOM_COUNT: &str = "veza_observability.room_count";
    pub const ROOM_PREFIX: &str = "veza_observability.room.";
    /// `stream_id` values admitted, and a marker per id.
    pub const STREAM_ID_COUNT: &str = "veza_observability.stream_id_count";
    pub const STREAM_ID_PREFIX: &str = "veza_observability.stream_id.";
    /// The active-user sketches, one per slot of the window's ring.
    pub const ACTIVE_USERS_PREFIX: &str = "veza_observability.active_users.";
    /// When the latest background round of health checks started, gateway-wide.
    pub const HEALTH_ROUND: &str = "veza_observability.health_round_nanos";
    /// When the first worker configured the filter: `/live`'s uptime.
    pub const STARTED: &str = "veza_observability.started_nanos";
}

/// CAS retries before giving up (another worker keeps winning the race).
const CAS_ATTEMPTS: usize = 8;

/// What an update makes of the value it read.
pub enum Update<T> {
    /// Store these bytes (if nobody wrote in between), then answer `T`.
    Write(Vec<u8>, T),
    /// Leave the value as it is and answer `T`.
    Keep(T),
}

/// Reads `key`, asks `change` what to make of it (`None` when absent) and stores the result
/// with compare-and-swap, reading again when another worker wrote first. `Ok(None)` when
/// other workers won every one of the attempts.
pub fn update<T>(
    host: &mut dyn Host,
    key: &str,
    mut change: impl FnMut(Option<&[u8]>) -> Update<T>,
) -> Result<Option<T>, HostError> {
    for _ in 0..CAS_ATTEMPTS {
        let (value, cas) = match host.get_shared(key)? {
            Some((value, cas)) => (Some(value), cas),
            None => (None, 0),
        };
        match change(value.as_deref()) {
            Update::Keep(answer) => return Ok(Some(answer)),
            Update::Write(bytes, answer) => match host.set_shared(key, &bytes, cas)? {
                CasOutcome::Stored => return Ok(Some(answer)),
                CasOutcome::Mismatch => continue,
            },
        }
    }
    Ok(None)
}

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
    /// Nothing is written until the first admission: an absent count is 0, and a write of
    /// 0 at start-up could undo another worker's first admission.
    pub fn new(count_key: &'static str, marker_prefix: &'static str) -> Budget {
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
        let admitted = update(host, self.count_key, |value| {
            let count = value.map_or(0, decode_u32);
            if count >= cap {
                Update::Keep(false)
            } else {
                Update::Write((count + 1).to_le_bytes().to_vec(), true)
            }
        });
        match admitted {
            Ok(Some(true)) => {
                self.admitted_here += 1;
                (true, host.set_shared(&marker, b"1", 0).err())
            }
            Ok(Some(false) | None) => (false, None),
            Err(err) => (self.admit_locally(cap), Some(err)),
        }
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
    update(host, key, |value| {
        let count = value.map_or(0, decode_u32);
        let next = u32::try_from((i64::from(count) + delta).max(0)).unwrap_or(u32::MAX);
        Update::Write(next.to_le_bytes().to_vec(), (count, next))
    })
}

pub fn decode_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
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
        let mut first = Budget::new("count", "name.");
        let mut second = Budget::new("count", "name.");
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
