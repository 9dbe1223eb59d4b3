//! The pure core of gang admission: no Kubernetes I/O, no async.
//!
//! - [`model`]: the cluster as admission sees it — per node capacity, healthy GPUs from its `GPUNode`, what bound
//!   pods hold and what admitted gangs have reserved — fed incrementally (`apply_*` / `delete_*`), with indexes
//!   that keep a decision fast at thousands of nodes.
//! - [`demand`]: what a gang asks for, as plain data, converted from [`muster_api::gang::GangSpec`].
//! - [`placement`]: all-or-nothing, deterministic placement of every pod slot of a gang.
//! - [`queue`]: priority-then-arrival queues, head-gang reservations with backfill, requeue backoff.
//! - [`explain`]: why a gang does not fit, for people (`Gang.status.reason`) and for tools (counts per cause).
//! - [`snapshot`]: a model built at once from listed objects (the `kubectl-muster` plugin), with the rule for which
//!   recorded placements are reservations.
//!
//! A thin adapter (not here) turns watched Nodes, GPUNodes, Pods and Gangs into the plain structs of this module,
//! calls [`queue::Queues::pass`] and writes the outcome back:
//!
//! 1. Feed the model from reflectors: `apply_node` / `delete_node` (Node → [`model::NodeInfo`]),
//!    `apply_gpunode` ([`model::GpuReport::from_status`]), `apply_pod` / `delete_pod` for bound, non-terminated
//!    pods ([`objects`] converts the objects). CPU and memory are only as accurate as the pods
//!    fed; feeding only GPU pods over-estimates CPU/memory room (the scheduler still checks it).
//! 2. On start, before the first pass: `reserve` every Admitted/Running gang from its `Gang.status.placement`
//!    ([`placement::per_node_of`]) so nothing is admitted twice; queue every Pending/Requeued gang
//!    ([`queue::Queues::enqueue`], arrival = `status.queuedAt`).
//! 3. Each pass: `model.set_time(now)`, `queues.pass(&mut model, now)`; for each admitted gang write
//!    `Gang.status` (phase Admitted, placement) first, then un-suspend the JobSet. If the status write fails,
//!    `model.release` and `enqueue` it again. Write `status.reason` from [`queue::Queues::explain`] (cheap enough
//!    for the head gangs every pass; for the rest only when the queue or model generation changed).
//! 4. On JobSet completion or deletion: `model.release`; on a pods-ready timeout:
//!    [`queue::on_pods_ready_timeout`], `release`, then [`queue::Queues::requeue`] (or mark it finished when it
//!    says `Deactivate`).

pub mod demand;
pub mod explain;
pub mod model;
pub mod nodeset;
pub mod objects;
pub mod placement;
pub mod queue;
pub mod snapshot;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;
use std::sync::Arc;

/// A gang's identity, `<namespace>/<name>` of its JobSet (and of its `Gang`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GangKey(Arc<str>);

impl GangKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        GangKey(format!("{namespace}/{name}").into())
    }

    /// From the `<namespace>/<name>` text.
    pub fn parse(value: &str) -> Self {
        GangKey(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JobSet's namespace and name (the name is everything after the first `/`).
    pub fn namespace_and_name(&self) -> (&str, &str) {
        self.0.split_once('/').unwrap_or(("", &self.0))
    }
}

impl fmt::Display for GangKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of the resources admission accounts for. Per pod `pods` is 1; per node it is the pod capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources {
    pub gpus: u32,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub pods: u32,
}

impl Resources {
    pub const ZERO: Resources = Resources { gpus: 0, cpu_milli: 0, memory_bytes: 0, pods: 0 };

    pub fn new(gpus: u32, cpu_milli: u64, memory_bytes: u64, pods: u32) -> Self {
        Resources { gpus, cpu_milli, memory_bytes, pods }
    }

    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }

    pub fn saturating_add(self, o: Resources) -> Resources {
        Resources {
            gpus: self.gpus.saturating_add(o.gpus),
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            pods: self.pods.saturating_add(o.pods),
        }
    }

    pub fn saturating_sub(self, o: Resources) -> Resources {
        Resources {
            gpus: self.gpus.saturating_sub(o.gpus),
            cpu_milli: self.cpu_milli.saturating_sub(o.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            pods: self.pods.saturating_sub(o.pods),
        }
    }

    /// `self` times `n`, saturating.
    pub fn times(self, n: u32) -> Resources {
        Resources {
            gpus: self.gpus.saturating_mul(n),
            cpu_milli: self.cpu_milli.saturating_mul(u64::from(n)),
            memory_bytes: self.memory_bytes.saturating_mul(u64::from(n)),
            pods: self.pods.saturating_mul(n),
        }
    }

    /// Component-wise maximum.
    pub fn max(self, o: Resources) -> Resources {
        Resources {
            gpus: self.gpus.max(o.gpus),
            cpu_milli: self.cpu_milli.max(o.cpu_milli),
            memory_bytes: self.memory_bytes.max(o.memory_bytes),
            pods: self.pods.max(o.pods),
        }
    }

    /// Whether `self` fits within `room` in every dimension.
    pub fn fits_in(&self, room: &Resources) -> bool {
        self.gpus <= room.gpus
            && self.cpu_milli <= room.cpu_milli
            && self.memory_bytes <= room.memory_bytes
            && self.pods <= room.pods
    }

    /// How many copies of `per_pod` fit in `self` (`u32::MAX` when `per_pod` is zero in every dimension).
    pub fn how_many(&self, per_pod: &Resources) -> u32 {
        fn ratio(have: u64, each: u64) -> u64 {
            have.checked_div(each).unwrap_or(u64::MAX)
        }
        let n = ratio(u64::from(self.gpus), u64::from(per_pod.gpus))
            .min(ratio(self.cpu_milli, per_pod.cpu_milli))
            .min(ratio(self.memory_bytes, per_pod.memory_bytes))
            .min(ratio(u64::from(self.pods), u64::from(per_pod.pods)));
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}
