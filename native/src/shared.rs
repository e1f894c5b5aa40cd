//! Gateway-wide data shared by every worker, with Envoy's shared-data semantics (value and CAS
//! token; a token of 0 writes unconditionally), which the core's CAS updates rely on. One
//! library copy serves the whole process, so this is plain memory behind one lock, held only
//! to copy a value in or out.

use std::collections::HashMap;
use std::sync::Mutex;

use veza_observability_core::host::{CasOutcome, HostError};

/// The lock was poisoned by a panic in another thread: reported as Envoy's `InternalFailure`.
const POISONED: HostError = HostError(10);

#[derive(Debug, Default)]
pub struct SharedData {
    entries: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedData {
    pub fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        let entries = self.entries.lock().map_err(|_| POISONED)?;
        Ok(entries.get(key).cloned())
    }

    pub fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<CasOutcome, HostError> {
        let mut entries = self.entries.lock().map_err(|_| POISONED)?;
        let current = entries.get(key).map(|(_, token)| *token);
        if cas != 0 && current != Some(cas) {
            return Ok(CasOutcome::Mismatch);
        }
        // Tokens are never 0, which means "unconditional".
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        entries.insert(key.to_owned(), (value.to_vec(), next));
        Ok(CasOutcome::Stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_follows_envoys_shared_data() {
        let shared = SharedData::default();
        assert_eq!(shared.get("k"), Ok(None));
        assert_eq!(shared.set("k", b"a", 0), Ok(CasOutcome::Stored));
        let (value, token) = shared.get("k").unwrap().unwrap();
        assert_eq!((value.as_slice(), token), (&b"a"[..], 1));
        assert_eq!(shared.set("k", b"b", 7), Ok(CasOutcome::Mismatch));
        assert_eq!(shared.set("k", b"b", 1), Ok(CasOutcome::Stored));
        assert_eq!(shared.set("k", b"c", 1), Ok(CasOutcome::Mismatch));
        assert_eq!(shared.get("k").unwrap(), Some((b"b".to_vec(), 2)));
        assert_eq!(shared.set("new", b"x", 3), Ok(CasOutcome::Mismatch));
    }
}
