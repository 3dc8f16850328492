//! The bounds every policy call runs within.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The bounds of one policy call. Defaults come from the platform; a tenant
/// may tighten or loosen them in `tenant.toml` within [`Limits::CEILING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one call.
    pub deadline: Duration,
    /// The most linear memory a Wasm instance may grow to.
    pub memory_bytes: usize,
    /// The largest output a policy may return, serialised as JSON.
    pub max_output_bytes: usize,
    /// The most candidates a criterion may return.
    pub max_candidates: usize,
    /// The tenant's budget of Wasm fuel per call (`limits.fuel`), if any.
    /// Fuel counts the instructions a component runs: unlike the deadline it
    /// does not depend on how busy the machine is.
    pub fuel: Option<u64>,
    /// The tenant's budget of Rhai operations per call (`limits.operations`),
    /// if any, below the engine's own cap.
    pub operations: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(20),
            memory_bytes: 16 << 20,
            max_output_bytes: 256 << 10,
            max_candidates: 1_000,
            fuel: None,
            operations: None,
        }
    }
}

impl Limits {
    /// The loosest limits a tenant may ask for.
    pub const CEILING: Limits = Limits {
        deadline: Duration::from_millis(1_000),
        memory_bytes: 256 << 20,
        max_output_bytes: 4 << 20,
        max_candidates: 10_000,
        fuel: Some(Self::MAX_FUEL),
        operations: Some(super::rhai_engine::MAX_OPERATIONS),
    };

    /// The largest fuel budget a tenant may set.
    pub const MAX_FUEL: u64 = 10_000_000_000;

    /// Applies a `[limits]` table over these limits, refusing values beyond
    /// the ceiling.
    pub fn with_overrides(mut self, o: &LimitsToml) -> Result<Self, String> {
        if let Some(ms) = o.deadline_ms {
            let max = Self::CEILING.deadline.as_millis() as u64;
            if ms == 0 || ms > max {
                return Err(format!("limits.deadline_ms must be between 1 and {max} (got {ms})"));
            }
            self.deadline = Duration::from_millis(ms);
        }
        if let Some(mib) = o.memory_mib {
            let max = Self::CEILING.memory_bytes >> 20;
            if mib == 0 || mib > max {
                return Err(format!("limits.memory_mib must be between 1 and {max} (got {mib})"));
            }
            self.memory_bytes = mib << 20;
        }
        if let Some(kib) = o.max_output_kib {
            let max = Self::CEILING.max_output_bytes >> 10;
            if kib == 0 || kib > max {
                return Err(format!("limits.max_output_kib must be between 1 and {max} (got {kib})"));
            }
            self.max_output_bytes = kib << 10;
        }
        if let Some(n) = o.max_candidates {
            let max = Self::CEILING.max_candidates;
            if n == 0 || n > max {
                return Err(format!("limits.max_candidates must be between 1 and {max} (got {n})"));
            }
            self.max_candidates = n;
        }
        if let Some(fuel) = o.fuel {
            if fuel == 0 || fuel > Self::MAX_FUEL {
                return Err(format!("limits.fuel must be between 1 and {} (got {fuel})", Self::MAX_FUEL));
            }
            self.fuel = Some(fuel);
        }
        if let Some(ops) = o.operations {
            let max = super::rhai_engine::MAX_OPERATIONS;
            if ops == 0 || ops > max {
                return Err(format!("limits.operations must be between 1 and {max} (got {ops})"));
            }
            self.operations = Some(ops);
        }
        Ok(self)
    }
}

/// The `[limits]` table of `defaults.toml` or `tenant.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsToml {
    pub deadline_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub max_output_kib: Option<usize>,
    pub max_candidates: Option<usize>,
    /// Wasm fuel per call: a deterministic budget, stopped with
    /// `BUDGET_EXHAUSTED`.
    pub fuel: Option<u64>,
    /// Rhai operations per call, stopped with `BUDGET_EXHAUSTED`.
    pub operations: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_beyond_the_ceiling_is_refused() {
        let o = LimitsToml { deadline_ms: Some(5_000), ..Default::default() };
        assert!(Limits::default().with_overrides(&o).unwrap_err().contains("deadline_ms"));
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let o = LimitsToml { memory_mib: Some(32), ..Default::default() };
        let l = Limits::default().with_overrides(&o).unwrap();
        assert_eq!(l.memory_bytes, 32 << 20);
        assert_eq!(l.deadline, Limits::default().deadline);
    }
}
