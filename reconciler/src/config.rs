//! The controller configuration file, modelled on upstream's `config.jobset.x-k8s.io/v1alpha1` `Configuration`
//! so an existing file keeps working. Decoding is strict, as upstream's: a misspelt key is an error, not a
//! silently ignored setting. Sections that only the webhook uses are accepted here and read there.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::plan::FeatureGates;

pub const API_VERSION: &str = "config.jobset.x-k8s.io/v1alpha1";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("apiVersion must be {API_VERSION} and kind Configuration, got {0}/{1}")]
    Type(String, String),
    #[error("unknown feature gate {0} (known: InPlaceRestart, RestartJob, ElasticJobSet, TLSOptions)")]
    UnknownGate(String),
    #[error("feature gate InPlaceRestart is not supported by Muster")]
    InPlaceRestart,
    #[error("invalid duration {0:?}: use a number with a unit, e.g. 15s, 2m, 500ms")]
    Duration(String),
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Configuration {
    pub api_version: String,
    pub kind: String,
    /// Read by the webhook binary; opaque here.
    #[serde(default)]
    pub webhook: Option<serde_json::Value>,
    #[serde(default)]
    pub leader_election: LeaderElection,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub tls: Option<serde_json::Value>,
    #[serde(default)]
    pub internal_cert_management: Option<serde_json::Value>,
    #[serde(default)]
    pub client_connection: Option<serde_json::Value>,
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElection {
    pub leader_elect: Option<bool>,
    pub resource_name: Option<String>,
    pub resource_lock: Option<String>,
    pub resource_namespace: Option<String>,
    pub lease_duration: Option<String>,
    pub renew_deadline: Option<String>,
    pub retry_period: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsConfig {
    pub bind_address: Option<String>,
    pub cert_dir: Option<String>,
    pub secure_serving: Option<bool>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    pub health_probe_bind_address: Option<String>,
    pub readiness_endpoint_name: Option<String>,
    pub liveness_endpoint_name: Option<String>,
}

impl Configuration {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if config.api_version != API_VERSION || config.kind != "Configuration" {
            return Err(ConfigError::Type(config.api_version, config.kind));
        }
        config.feature_gates()?;
        config.lease_duration()?;
        Ok(config)
    }

    pub fn load(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text)
    }

    pub fn feature_gates(&self) -> Result<FeatureGates, ConfigError> {
        let mut gates = FeatureGates::default();
        for (name, on) in &self.feature_gates {
            match name.as_str() {
                "RestartJob" => gates.restart_job = *on,
                "ElasticJobSet" => gates.elastic_jobset = *on,
                "InPlaceRestart" if *on => return Err(ConfigError::InPlaceRestart),
                // TLSOptions is GA and locked on upstream; InPlaceRestart off is the default.
                "InPlaceRestart" | "TLSOptions" => {}
                other => return Err(ConfigError::UnknownGate(other.into())),
            }
        }
        Ok(gates)
    }

    /// Lease duration; upstream's default is 15 s.
    pub fn lease_duration(&self) -> Result<Duration, ConfigError> {
        self.leader_election.lease_duration.as_deref().map_or(Ok(Duration::from_secs(15)), parse_duration)
    }
}

/// Go `time.Duration` text in the forms configurations use: `15s`, `2m`, `1h`, `500ms`, `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Duration(text.into());
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_upstream_configuration() {
        let config = Configuration::parse(
            r#"
apiVersion: config.jobset.x-k8s.io/v1alpha1
kind: Configuration
leaderElection:
  leaderElect: true
  resourceName: 6d4f6a47.jobset.x-k8s.io
  leaseDuration: 15s
health:
  healthProbeBindAddress: :8081
metrics:
  bindAddress: :8443
webhook:
  port: 9443
internalCertManagement:
  enable: true
featureGates:
  RestartJob: true
"#,
        )
        .expect("valid");
        assert_eq!(config.leader_election.leader_elect, Some(true));
        assert_eq!(config.feature_gates().expect("gates"), FeatureGates { restart_job: true, elastic_jobset: false });
        assert_eq!(config.lease_duration().expect("duration"), Duration::from_secs(15));
    }

    #[test]
    fn rejects_typos_unknown_gates_and_in_place_restart() {
        let base = "apiVersion: config.jobset.x-k8s.io/v1alpha1\nkind: Configuration\n";
        assert!(matches!(Configuration::parse(&format!("{base}leaderElecton: {{}}\n")), Err(ConfigError::Parse(_))));
        assert!(matches!(
            Configuration::parse(&format!("{base}featureGates:\n  Teleport: true\n")),
            Err(ConfigError::UnknownGate(g)) if g == "Teleport"
        ));
        assert!(matches!(
            Configuration::parse(&format!("{base}featureGates:\n  InPlaceRestart: true\n")),
            Err(ConfigError::InPlaceRestart)
        ));
        assert!(matches!(Configuration::parse("apiVersion: v1\nkind: Configuration\n"), Err(ConfigError::Type(..))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s").expect("ok"), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").expect("ok"), Duration::from_millis(500));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("s").is_err());
    }
}
