//! Leader election on a `coordination.k8s.io/v1` Lease, as the reconciler and the admission controller both do it:
//! wait until this replica holds the Lease, work while it does, and stop for good once it does not (fail-stop, as
//! kube-controller-manager does: a replica that lost the Lease never writes again; its pod restarts and competes
//! anew with a fresh view). `kube-lease-manager` does the Lease itself.

use std::time::Duration;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

/// Which Lease to hold, and as whom.
#[derive(Clone, Debug)]
pub struct LeaseSpec {
    pub name: String,
    pub namespace: String,
    /// The holder identity written into the Lease: the pod name where there is one.
    pub identity: String,
    /// How long a standby waits before taking over a Lease its holder stopped renewing.
    pub duration: Duration,
}

impl LeaseSpec {
    /// `$POD_NAME`, else `<component>-<pid>`.
    pub fn identity_for(component: &str) -> String {
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("{component}-{}", std::process::id()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {0}")]
    Manager(#[from] LeaseManagerError),
    #[error("leader election stopped before this replica held the Lease")]
    Stopped,
}

/// This replica holds the Lease until [`Leadership::lost`] resolves.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    // Keeps the manager's task with the leadership it maintains.
    _task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: kube::Client, lease: &LeaseSpec) -> Result<Leadership, LeaderError> {
    let seconds = lease.duration.as_secs().max(1);
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(seconds)
        // Renew a third of the duration before it runs out, so a slow API server does not cost the Lease.
        .with_grace(seconds.div_ceil(3))
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, "waiting for the leader-election lease");
    while !*leading.borrow_and_update() {
        leading.changed().await.map_err(|_| LeaderError::Stopped)?;
    }
    tracing::info!(lease = %lease.name, "leading");
    Ok(Leadership { leading, _task: task })
}

impl Leadership {
    /// Resolves once this replica no longer holds the Lease (or its manager stopped).
    pub async fn lost(mut self) {
        while *self.leading.borrow_and_update() {
            if self.leading.changed().await.is_err() {
                break;
            }
        }
        tracing::error!("lost the leader-election lease");
    }
}
