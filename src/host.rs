//! The host as the core sees it: the few capabilities the filter needs from Envoy.
//!
//! The real implementation (`filter::abi`) makes proxy-wasm hostcalls; unit tests use
//! [`memory::MemoryHost`]. Nothing outside `filter` calls the ABI.

/// A metric id as returned by the host's `define_metric`.
pub type MetricId = u32;

/// A non-Ok proxy-wasm status from a hostcall, kept as its raw number for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => "status",
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// Outcome of a compare-and-swap write to shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    Stored,
    Mismatch,
}

pub trait Host {
    /// Defines (or looks up by name) a counter. Envoy returns a new id on every call, so
    /// callers cache the id.
    fn define_counter(&mut self, name: &str) -> Result<MetricId, HostError>;
    fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError>;
    fn define_gauge(&mut self, name: &str) -> Result<MetricId, HostError>;
    fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError>;
    /// Adds to a gauge (negative subtracts): increments from every worker add up.
    fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError>;
    /// Process-wide data shared by every worker's VM: value and CAS token.
    fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;
    /// Writes shared data; `cas` 0 writes unconditionally.
    fn set_shared(&mut self, key: &str, value: &[u8], cas: u32) -> Result<CasOutcome, HostError>;
}

#[cfg(test)]
pub mod memory {
    //! An in-memory host with Envoy's semantics where the core depends on them: counters are
    //! looked up by name (two defines of one name share the value), ids are never reused.

    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct MemoryHost {
        names: Vec<String>,
        values: HashMap<String, u64>,
        shared: HashMap<String, (Vec<u8>, u32)>,
        pub hostcalls: u64,
        pub fail_define: bool,
        pub fail_increment: bool,
        /// Increments of this one counter fail, the others go through.
        pub refuse_counter: Option<String>,
    }

    impl MemoryHost {
        /// The value of a counter by its full encoded name, if defined.
        pub fn counter(&self, name: &str) -> Option<u64> {
            self.values.get(name).copied()
        }

        /// Every defined counter name with its value, sorted.
        pub fn counters(&self) -> Vec<(String, u64)> {
            let mut all: Vec<_> = self.values.iter().map(|(k, v)| (k.clone(), *v)).collect();
            all.sort();
            all
        }
    }

    impl Host for MemoryHost {
        fn define_counter(&mut self, name: &str) -> Result<MetricId, HostError> {
            self.hostcalls += 1;
            if self.fail_define {
                return Err(HostError(2));
            }
            self.values.entry(name.to_owned()).or_insert(0);
            self.names.push(name.to_owned());
            Ok(self.names.len() as MetricId - 1)
        }

        fn increment_counter(&mut self, id: MetricId, delta: u64) -> Result<(), HostError> {
            self.hostcalls += 1;
            if self.fail_increment {
                return Err(HostError(10));
            }
            // As Envoy's `Context::incrementMetric`: a counter takes only positive offsets.
            if delta == 0 {
                return Err(HostError(2));
            }
            let name = self.names.get(id as usize).ok_or(HostError(1))?;
            if self.refuse_counter.as_ref() == Some(name) {
                return Err(HostError(10));
            }
            *self.values.entry(name.clone()).or_insert(0) += delta;
            Ok(())
        }

        fn define_gauge(&mut self, name: &str) -> Result<MetricId, HostError> {
            self.define_counter(name)
        }

        fn set_gauge(&mut self, id: MetricId, value: u64) -> Result<(), HostError> {
            self.hostcalls += 1;
            let name = self.names.get(id as usize).ok_or(HostError(1))?;
            self.values.insert(name.clone(), value);
            Ok(())
        }

        fn add_gauge(&mut self, id: MetricId, delta: i64) -> Result<(), HostError> {
            self.hostcalls += 1;
            let name = self.names.get(id as usize).ok_or(HostError(1))?;
            let value = self.values.entry(name.clone()).or_insert(0);
            *value = value.saturating_add_signed(delta);
            Ok(())
        }

        fn get_shared(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
            Ok(self.shared.get(key).cloned())
        }

        fn set_shared(
            &mut self,
            key: &str,
            value: &[u8],
            cas: u32,
        ) -> Result<CasOutcome, HostError> {
            self.hostcalls += 1;
            let entry = self.shared.entry(key.to_owned()).or_insert((Vec::new(), 0));
            if cas != 0 && cas != entry.1 {
                return Ok(CasOutcome::Mismatch);
            }
            entry.0 = value.to_vec();
            entry.1 += 1;
            Ok(CasOutcome::Stored)
        }
    }
}
