//! `active_users`: distinct users seen in a sliding window, one number for the gateway.
//!
//! The window is cut into [`SLOTS_PER_WINDOW`] slots. Each worker VM adds the users it sees to
//! a local sketch of the current slot and, on its tick, merges that sketch into the slot's
//! sketch in Envoy's shared data (max of registers, under compare-and-swap). The gauge is the
//! estimate of the union of the slots that cover the window, which every worker computes from
//! the same shared sketches. Memory is fixed: a ring of `SLOTS_PER_WINDOW + 2` shared
//! sketches of 4 KB, and one local sketch per worker.
//!
//! A user counts from their first request until between one window and one window plus one
//! slot (a tenth) after their last.

pub mod hyperloglog;
pub mod identity;

use crate::config::business::ActiveUsersSettings;
use crate::host::Host;
use crate::metrics::names;
use crate::metrics::registry::{GaugeHandle, Operation, Registry};
use crate::shared::{self, keys::ACTIVE_USERS_PREFIX as KEY_PREFIX, Update};

use hyperloglog::{Sketch, REGISTERS};

pub const SLOTS_PER_WINDOW: u64 = 10;
/// The ring holds every slot of the window, the current one, and the next, so a worker whose
/// clock is a slot ahead never overwrites a slot another worker still counts.
const RING: u64 = SLOTS_PER_WINDOW + 2;
/// The gauge is recomputed at most this often (each recomputation reads the ring).
const ESTIMATE_INTERVAL_NANOS: u64 = 1_000_000_000;
/// Slot number (8 bytes, little-endian) then the registers.
const ENTRY_LEN: usize = 8 + REGISTERS;

pub struct ActiveUsers {
    slot_nanos: u64,
    /// The slot `local` belongs to.
    slot: u64,
    local: Sketch,
    /// `local` has registers the shared sketch may not have.
    dirty: bool,
    gauge: Option<GaugeHandle>,
    last_estimate_nanos: Option<u64>,
}

impl ActiveUsers {
    pub fn new(
        settings: &ActiveUsersSettings,
        registry: &mut Registry,
        host: &mut dyn Host,
    ) -> ActiveUsers {
        ActiveUsers {
            slot_nanos: (u64::from(settings.window_seconds) * 1_000_000_000 / SLOTS_PER_WINDOW)
                .max(1),
            slot: 0,
            local: Sketch::default(),
            dirty: false,
            gauge: registry.define_gauge(host, names::ACTIVE_USERS, &[]),
            last_estimate_nanos: None,
        }
    }

    /// A request from the user whose id hashes to `user`.
    pub fn observe(&mut self, registry: &mut Registry, host: &mut dyn Host, now: u64, user: u64) {
        let slot = now / self.slot_nanos;
        if slot != self.slot {
            // The previous slot's sketch is complete: hand it over before starting the next.
            self.merge_into_shared(registry, host);
            self.local.clear();
            self.slot = slot;
        }
        if self.local.insert(user) {
            self.dirty = true;
        }
    }

    /// On the root context's tick: share what this worker saw, and bring the gauge up to date.
    pub fn publish(&mut self, registry: &mut Registry, host: &mut dyn Host, now: u64) {
        self.merge_into_shared(registry, host);
        let due = self
            .last_estimate_nanos
            .is_none_or(|last| now.saturating_sub(last) >= ESTIMATE_INTERVAL_NANOS);
        if !due {
            return;
        }
        self.last_estimate_nanos = Some(now);
        let current = now / self.slot_nanos;
        let oldest = current.saturating_sub(SLOTS_PER_WINDOW);
        let mut union = Sketch::default();
        for slot in oldest..=current {
            match host.get_shared(&key(slot)) {
                Ok(Some((entry, _))) => {
                    if let Some(registers) = registers_of(&entry, slot) {
                        union.merge(registers);
                    }
                }
                Ok(None) => {}
                Err(err) => registry.host_error(Operation::SharedData, err, KEY_PREFIX),
            }
        }
        // This worker's current slot, in case its merge lost every CAS race.
        if self.slot >= oldest {
            union.merge(self.local.as_bytes());
        }
        if let Some(gauge) = self.gauge {
            registry.set_gauge(host, gauge, union.estimate());
        }
    }

    fn merge_into_shared(&mut self, registry: &mut Registry, host: &mut dyn Host) {
        if !self.dirty {
            return;
        }
        let key = key(self.slot);
        let (slot, local) = (self.slot, &self.local);
        let merged = shared::update(host, &key, |entry| {
            let mut sketch = Sketch::default();
            match entry.map(|entry| (registers_of(entry, slot), entry_slot(entry))) {
                Some((Some(registers), _)) => sketch.merge(registers),
                // A newer slot's sketch: this one has left the window.
                Some((None, Some(newer))) if newer > slot => return Update::Keep(()),
                // Absent, or an older slot's sketch to replace.
                _ => {}
            }
            sketch.merge(local.as_bytes());
            let mut entry = Vec::with_capacity(ENTRY_LEN);
            entry.extend_from_slice(&slot.to_le_bytes());
            entry.extend_from_slice(sketch.as_bytes());
            Update::Write(entry, ())
        });
        match merged {
            Ok(Some(())) => self.dirty = false,
            // Lost every race: stay dirty and try again on the next tick.
            Ok(None) => {}
            Err(err) => registry.host_error(Operation::SharedData, err, KEY_PREFIX),
        }
    }
}

fn key(slot: u64) -> String {
    format!("{KEY_PREFIX}{}", slot % RING)
}

fn entry_slot(entry: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = entry.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The registers of a shared entry, if it holds `slot`.
fn registers_of(entry: &[u8], slot: u64) -> Option<&[u8]> {
    if entry.len() != ENTRY_LEN || entry_slot(entry)? != slot {
        return None;
    }
    entry.get(8..)
}

#[cfg(test)]
mod tests {
    use super::hyperloglog::hash;
    use super::*;
    use crate::config::business::UserSource;
    use crate::host::memory::MemoryHost;

    const SECOND: u64 = 1_000_000_000;

    fn settings() -> ActiveUsersSettings {
        ActiveUsersSettings {
            enabled: true,
            source: UserSource::default(),
            window_seconds: 300,
        }
    }

    fn worker(host: &mut MemoryHost) -> (ActiveUsers, Registry) {
        let mut registry = Registry::new(host);
        (ActiveUsers::new(&settings(), &mut registry, host), registry)
    }

    fn user(n: u32) -> u64 {
        hash(format!("user-{n}").as_bytes())
    }

    #[test]
    fn workers_add_up_to_one_distinct_count() {
        let mut host = MemoryHost::default();
        let (mut a, mut ra) = worker(&mut host);
        let (mut b, mut rb) = worker(&mut host);
        let now = 1_000 * SECOND;
        for n in 0..12 {
            a.observe(&mut ra, &mut host, now, user(n));
        }
        // 8..20 on the other worker: 4 users seen by both.
        for n in 8..20 {
            b.observe(&mut rb, &mut host, now + SECOND, user(n));
        }
        a.publish(&mut ra, &mut host, now + SECOND);
        b.publish(&mut rb, &mut host, now + SECOND);
        assert_eq!(host.counter(names::ACTIVE_USERS), Some(20));
        a.publish(&mut ra, &mut host, now + 3 * SECOND);
        assert_eq!(host.counter(names::ACTIVE_USERS), Some(20));
    }

    #[test]
    fn users_leave_the_window_after_it_passes() {
        let mut host = MemoryHost::default();
        let (mut users, mut registry) = worker(&mut host);
        let start = 10_000 * SECOND;
        for n in 0..10 {
            users.observe(&mut registry, &mut host, start, user(n));
        }
        // One of them keeps coming back every minute.
        for minute in 1..=6 {
            let at = start + minute * 60 * SECOND;
            users.observe(&mut registry, &mut host, at, user(0));
            users.publish(&mut registry, &mut host, at);
            let expected = if minute * 60 <= 300 { 10 } else { 1 };
            assert_eq!(
                host.counter(names::ACTIVE_USERS),
                Some(expected),
                "after {minute} min"
            );
        }
        // Nobody for a whole window and a slot.
        users.publish(&mut registry, &mut host, start + (360 + 330) * SECOND);
        assert_eq!(host.counter(names::ACTIVE_USERS), Some(0));
    }

    #[test]
    fn the_ring_stays_bounded() {
        let mut host = MemoryHost::default();
        let (mut users, mut registry) = worker(&mut host);
        for second in (0..3_600).step_by(7) {
            let at = second * SECOND;
            users.observe(&mut registry, &mut host, at, user(second as u32));
            users.publish(&mut registry, &mut host, at);
        }
        let keys = (0..100)
            .filter(|i| {
                host.get_shared(&format!("{KEY_PREFIX}{i}"))
                    .unwrap()
                    .is_some()
            })
            .count();
        assert_eq!(keys as u64, RING);
        // The last publish is at 3598 s, in slot 119: slots 109..=119 (3270..3598 s) hold
        // one user every 7 s from 3276 s, 47 users.
        assert_eq!(host.counter(names::ACTIVE_USERS), Some(47));
    }
}
