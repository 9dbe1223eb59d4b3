//! Reading a Gang's status in tests, for use with [`crate::eventually`].

use muster_api::gang::{Gang, GangPhase, GangStatus};

use crate::TestNamespace;

/// The Gang's status; an error while it or its status does not exist yet.
pub async fn gang_status(ns: &TestNamespace<'_>, name: &str) -> Result<GangStatus, String> {
    let gang = ns.api::<Gang>().get_opt(name).await.map_err(|e| e.to_string())?.ok_or("no Gang yet")?;
    gang.status.ok_or_else(|| "no status yet".to_owned())
}

/// The Gang's status once it is in one of `phases`; otherwise an error naming its phase and reason.
pub async fn gang_in(ns: &TestNamespace<'_>, name: &str, phases: &[GangPhase]) -> Result<GangStatus, String> {
    let status = gang_status(ns, name).await?;
    if phases.contains(&status.phase) { Ok(status) } else { Err(format!("{:?}: {:?}", status.phase, status.reason)) }
}
