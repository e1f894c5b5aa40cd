//! Gateway-wide state in Envoy's shared data, which every worker VM of one Envoy sees: every
//! key the filter uses, and the one compare-and-swap update they all go through.

use crate::host::{CasOutcome, Host, HostError};

/// Every shared-data key and key prefix, in one place so no two parts collide.
pub mod keys {
    /// `http_requests_total` label sets admitted gateway-wide, and a marker per set.
    pub const SERIES_SET: &str = "veza_observability.series_set";
    pub const SERIES_PREFIX: &str = "veza_observability.series.";
    /// Chat rooms tracked, each with its count of member connections ([`super::Members`]).
    pub const ROOMS: &str = "veza_observability.rooms";
    /// `stream_id` values admitted, and a marker per id.
    pub const STREAM_ID_SET: &str = "veza_observability.stream_id_set";
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

/// The most names one [`Budget`] admits: its set is one shared value of 8 bytes a name.
pub const MAX_BUDGET: u32 = 100_000;

/// A gateway-wide cap on distinct names (metric label sets, chat rooms, stream ids): a name is
/// admitted once, by whichever worker sees it first, while fewer than `cap` are admitted.
///
/// The admitted names are one shared value (their count, then each name's 64-bit hash),
/// changed by compare-and-swap, so a name seen by several workers at once takes one place.
/// Shared data cannot create a key only if it is absent, so the value is made at
/// configuration ([`prepare`]) and a worker never writes it where it is missing. A marker per
/// name answers an admitted name without reading the set. Without shared data (a host error,
/// or no set), the cap holds per worker.
#[derive(Debug)]
pub struct Budget {
    set_key: &'static str,
    marker_prefix: &'static str,
    admitted_here: u32,
    /// The set was seen full: names are never released, so a name without a marker is
    /// refused without reading the set again.
    full: bool,
}

/// The budgets' sets and the member counts, every one the filter keeps.
const BUDGET_SETS: [&str; 3] = [keys::SERIES_SET, keys::ROOMS, keys::STREAM_ID_SET];

/// Makes each budget's set (and the member counts) where there is none yet, at configuration.
/// Envoy configures a filter on its main thread before any worker takes traffic, and workers
/// never make a set, so nothing can write between the read and the write here.
pub fn prepare(host: &mut dyn Host) -> Result<(), HostError> {
    for key in BUDGET_SETS {
        if host.get_shared(key)?.is_none() {
            host.set_shared(key, &0u32.to_le_bytes(), 0)?;
        }
    }
    Ok(())
}

/// What a budget's set says of a name.
enum Admission {
    Admitted,
    Full,
    NoSet,
}

/// A value of counted entries, each a name's 64-bit hash then `size - 8` bytes of its own:
/// the one layout of a budget's set and of the member counts.
struct Entries<'a> {
    value: &'a [u8],
    size: usize,
}

impl<'a> Entries<'a> {
    fn new(value: &'a [u8], size: usize) -> Entries<'a> {
        Entries { value, size }
    }

    fn count(&self) -> usize {
        decode_u32(self.value) as usize
    }

    /// Every entry, in order.
    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let size = self.size;
        self.value
            .get(4..)
            .unwrap_or_default()
            .chunks_exact(size)
            .take(self.count())
    }

    /// The index of the entry for `hash`.
    fn find(&self, hash: u64) -> Option<usize> {
        self.iter().position(|entry| decode_u64(entry) == hash)
    }

    /// The value with `entry` appended.
    fn appended(&self, entry: &[u8]) -> Vec<u8> {
        let count = self.count();
        let kept = self.value.get(4..).unwrap_or_default();
        let kept = kept.get(..count * self.size).unwrap_or(kept);
        let mut next = Vec::with_capacity(4 + kept.len() + entry.len());
        next.extend_from_slice(&(count as u32 + 1).to_le_bytes());
        next.extend_from_slice(kept);
        next.extend_from_slice(entry);
        next
    }
}

/// A name's place in a set: the active-user sketch's hash, the same in every worker and build.
fn name_hash(name: &str) -> u64 {
    crate::active_users::hyperloglog::hash(name.as_bytes())
}

impl Budget {
    pub fn new(set_key: &'static str, marker_prefix: &'static str) -> Budget {
        Budget {
            set_key,
            marker_prefix,
            admitted_here: 0,
            full: false,
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
        if self.full {
            return (false, None);
        }
        let hash = name_hash(name);
        let admission = update(host, self.set_key, |value| {
            let Some(value) = value else {
                return Update::Keep(Admission::NoSet);
            };
            let set = Entries::new(value, 8);
            // Another worker admitted it and has not written its marker yet.
            if set.find(hash).is_some() {
                return Update::Keep(Admission::Admitted);
            }
            if set.count() >= cap as usize {
                return Update::Keep(Admission::Full);
            }
            Update::Write(set.appended(&hash.to_le_bytes()), Admission::Admitted)
        });
        match admission {
            Ok(Some(Admission::Admitted)) => {
                self.admitted_here += 1;
                (true, host.set_shared(&marker, b"1", 0).err())
            }
            Ok(Some(Admission::Full)) => {
                self.full = true;
                (false, None)
            }
            Ok(Some(Admission::NoSet)) => (self.admit_locally(cap), None),
            // Other workers kept winning: refused this time, asked again next time.
            Ok(None) => (false, None),
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

/// Gateway-wide member counts of capped names (the connections in each chat room): one value,
/// made at configuration like a budget's set, holding each name's hash and count, changed by
/// compare-and-swap, so joins and leaves on several workers at once are all counted. A name
/// stays in the value at 0 members, as a budget never releases a name.
#[derive(Debug)]
pub struct Members {
    key: &'static str,
}

/// One entry of [`Members`]' value: a name's hash, then its count.
const MEMBER_ENTRY: usize = 12;

impl Members {
    pub fn new(key: &'static str) -> Members {
        Members { key }
    }

    /// Adds one member to `name` (admitting it while fewer than `cap` names are held), or
    /// takes one away. `Some(change)`: how the number of names with members changed (+1, -1
    /// or 0); `None`: nothing was counted (the cap is reached, there is no value, or other
    /// workers kept winning), so the caller must not count the member's leave either.
    pub fn change(
        &self,
        host: &mut dyn Host,
        name: &str,
        join: bool,
        cap: u32,
    ) -> Result<Option<i64>, HostError> {
        let hash = name_hash(name);
        let changed = update(host, self.key, |value| {
            let Some(value) = value else {
                return Update::Keep(None);
            };
            let rooms = Entries::new(value, MEMBER_ENTRY);
            let Some(at) = rooms.find(hash) else {
                if !join || rooms.count() >= cap as usize {
                    return Update::Keep(None);
                }
                let mut entry = hash.to_le_bytes().to_vec();
                entry.extend_from_slice(&1u32.to_le_bytes());
                return Update::Write(rooms.appended(&entry), Some(1));
            };
            let offset = 4 + at * MEMBER_ENTRY + 8;
            let members = value.get(offset..).map_or(0, decode_u32);
            let after = if join {
                members.saturating_add(1)
            } else {
                members.saturating_sub(1)
            };
            if after == members {
                return Update::Keep(Some(0));
            }
            let change = match (members, after) {
                (0, 1..) => 1,
                (1.., 0) => -1,
                _ => 0,
            };
            let mut next = value.to_vec();
            if let Some(slot) = next.get_mut(offset..offset + 4) {
                slot.copy_from_slice(&after.to_le_bytes());
            }
            Update::Write(next, Some(change))
        })?;
        Ok(changed.flatten())
    }
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
        prepare(&mut host).unwrap();
        let mut first = Budget::new(keys::SERIES_SET, "name.");
        let mut second = Budget::new(keys::SERIES_SET, "name.");
        assert_eq!(first.admit(&mut host, "a", 2), (true, None));
        assert_eq!(
            second.admit(&mut host, "a", 2),
            (true, None),
            "already admitted"
        );
        assert_eq!(second.admit(&mut host, "b", 2), (true, None));
        assert_eq!(first.admit(&mut host, "c", 2), (false, None));
        assert_eq!(first.admit(&mut host, "b", 2), (true, None));
        assert_eq!(admitted(&host), 2);
    }

    /// The names in the series budget's set.
    fn admitted(host: &MemoryHost) -> u32 {
        let (value, _) = host.get_shared(keys::SERIES_SET).unwrap().unwrap();
        assert_eq!(
            Entries::new(&value, 8).iter().count(),
            decode_u32(&value) as usize
        );
        decode_u32(&value)
    }

    #[test]
    fn a_name_two_workers_see_at_once_takes_one_place() {
        let mut host = MemoryHost::default();
        prepare(&mut host).unwrap();
        let mut first = Budget::new(keys::SERIES_SET, "name.");
        let mut second = Budget::new(keys::SERIES_SET, "name.");
        assert_eq!(first.admit(&mut host, "a", 2), (true, None));
        // The second worker looks before the first wrote its marker.
        host.remove_shared("name.a");
        assert_eq!(second.admit(&mut host, "a", 2), (true, None));
        assert_eq!(admitted(&host), 1);
        assert_eq!(second.admit(&mut host, "b", 2), (true, None));
        assert_eq!(admitted(&host), 2);
    }

    #[test]
    fn a_full_budget_refuses_without_reading_its_set_again() {
        let mut host = MemoryHost::default();
        prepare(&mut host).unwrap();
        let mut budget = Budget::new(keys::SERIES_SET, "name.");
        assert_eq!(budget.admit(&mut host, "a", 1), (true, None));
        assert_eq!(budget.admit(&mut host, "b", 1), (false, None));
        let reads = host.shared_reads.get();
        assert_eq!(budget.admit(&mut host, "c", 1), (false, None));
        assert_eq!(host.shared_reads.get() - reads, 1, "the marker only");
        assert_eq!(budget.admit(&mut host, "a", 1), (true, None));
    }

    #[test]
    fn configuration_makes_the_sets_once_and_never_empties_them() {
        let mut host = MemoryHost::default();
        prepare(&mut host).unwrap();
        let mut budget = Budget::new(keys::SERIES_SET, "name.");
        assert_eq!(budget.admit(&mut host, "a", 5), (true, None));
        // A later configuration (another worker, a reload) keeps what was admitted.
        prepare(&mut host).unwrap();
        assert_eq!(admitted(&host), 1);
    }

    #[test]
    fn without_a_set_the_cap_holds_per_worker_and_nothing_is_written() {
        let mut host = MemoryHost::default();
        let mut budget = Budget::new(keys::SERIES_SET, "name.");
        assert_eq!(budget.admit(&mut host, "a", 1), (true, None));
        assert_eq!(budget.admit(&mut host, "b", 1), (false, None));
        assert_eq!(host.get_shared(keys::SERIES_SET), Ok(None));
    }

    #[test]
    fn members_count_joins_and_leaves_and_names_with_members() {
        let mut host = MemoryHost::default();
        prepare(&mut host).unwrap();
        let rooms = Members::new(keys::ROOMS);
        assert_eq!(rooms.change(&mut host, "c1", true, 2), Ok(Some(1)));
        assert_eq!(rooms.change(&mut host, "c1", true, 2), Ok(Some(0)));
        assert_eq!(rooms.change(&mut host, "c2", true, 2), Ok(Some(1)));
        // The cap holds names, not members: a third room is not counted, nor its leave.
        assert_eq!(rooms.change(&mut host, "c3", true, 2), Ok(None));
        assert_eq!(rooms.change(&mut host, "c3", false, 2), Ok(None));
        assert_eq!(rooms.change(&mut host, "c1", false, 2), Ok(Some(0)));
        assert_eq!(rooms.change(&mut host, "c1", false, 2), Ok(Some(-1)));
        // Never below zero, and a room at 0 keeps its place.
        assert_eq!(rooms.change(&mut host, "c1", false, 2), Ok(Some(0)));
        assert_eq!(rooms.change(&mut host, "c3", true, 2), Ok(None));
        assert_eq!(rooms.change(&mut host, "c1", true, 2), Ok(Some(1)));
    }

    #[test]
    fn without_the_value_no_member_is_counted() {
        let mut host = MemoryHost::default();
        let rooms = Members::new(keys::ROOMS);
        assert_eq!(rooms.change(&mut host, "c1", true, 2), Ok(None));
        assert_eq!(host.get_shared(keys::ROOMS), Ok(None));
    }
}
