//! The plugin's only I/O: connecting as kubectl would, and reading the objects a model is built from.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use muster_api::JobSet;
use muster_api::gang::Gang;
use muster_api::gpunode::GPUNode;
use serde::de::DeserializeOwned;

use super::PluginError;

/// Pods that hold node resources: bound and not finished (the admission controller watches the same).
const BOUND_POD_SELECTOR: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

/// A client and what the kubeconfig says about where it points.
pub struct Connection {
    pub client: Client,
    /// The context's namespace (`default` when it names none).
    pub namespace: String,
    pub server: String,
}

/// Everything a model is built from.
pub(super) struct Objects {
    pub nodes: Vec<Node>,
    pub gpunodes: Vec<GPUNode>,
    pub pods: Vec<Pod>,
    pub gangs: Vec<Gang>,
}

impl Connection {
    /// From `kubeconfig` (else `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster service account) and
    /// `context` (else the current one).
    pub async fn open(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Self, PluginError> {
        // kube's TLS is rustls with ring only; make it the process default (a second install is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = KubeConfigOptions { context: context.map(str::to_owned), ..KubeConfigOptions::default() };
        let bad = |e: kube::config::KubeconfigError| PluginError::Kubeconfig(e.to_string());
        let mut config = match kubeconfig {
            Some(path) => Config::from_custom_kubeconfig(Kubeconfig::read_from(path).map_err(bad)?, &options)
                .await
                .map_err(bad)?,
            None => match Config::from_kubeconfig(&options).await {
                Ok(config) => config,
                // Like kubectl in a pod: no kubeconfig, but a service account.
                Err(e) if context.is_none() => Config::incluster().map_err(|_| bad(e))?,
                Err(e) => return Err(bad(e)),
            },
        };
        // Fail fast on an unreachable cluster instead of waiting for the OS's TCP timeout.
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        let server = config.cluster_url.to_string();
        let namespace = config.default_namespace.clone();
        let client = Client::try_from(config)
            .map_err(|e| PluginError::Unreachable { server: server.clone(), reason: e.to_string() })?;
        Ok(Connection { client, namespace, server })
    }

    pub(super) async fn gangs(&self) -> Result<Vec<Gang>, PluginError> {
        self.list("gangs.muster.dev", ListParams::default()).await
    }

    pub(super) async fn snapshot(&self) -> Result<Objects, PluginError> {
        let (nodes, gpunodes, pods, gangs) = futures::try_join!(
            self.list::<Node>("nodes", ListParams::default()),
            self.list::<GPUNode>("gpunodes.muster.dev", ListParams::default()),
            self.list::<Pod>("pods", ListParams::default().fields(BOUND_POD_SELECTOR)),
            self.gangs(),
        )?;
        Ok(Objects { nodes, gpunodes, pods, gangs })
    }

    pub(super) async fn jobset(&self, namespace: &str, name: &str) -> Result<Option<JobSet>, PluginError> {
        let api: Api<JobSet> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(|e| self.error("get", "jobsets.jobset.x-k8s.io", e))
    }

    /// PriorityClass values by name; empty when the user may not list them (only queue order depends on them).
    pub(super) async fn priority_classes(&self) -> Result<HashMap<String, i32>, PluginError> {
        match self.list::<PriorityClass>("priorityclasses.scheduling.k8s.io", ListParams::default()).await {
            Ok(list) => {
                Ok(list.into_iter().filter_map(|pc| Some((pc.metadata.name?, pc.value.unwrap_or(0)))).collect())
            }
            Err(PluginError::Forbidden { .. }) => Ok(HashMap::new()),
            Err(e) => Err(e),
        }
    }

    async fn list<K>(&self, what: &'static str, lp: ListParams) -> Result<Vec<K>, PluginError>
    where
        K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned,
    {
        Api::<K>::all(self.client.clone()).list(&lp).await.map(|l| l.items).map_err(|e| self.error("list", what, e))
    }

    fn error(&self, verb: &'static str, what: &'static str, e: kube::Error) -> PluginError {
        match e {
            // A whole resource missing (not a named object) means its CRD is not installed.
            kube::Error::Api(s) if s.code == 404 && verb == "list" => PluginError::CrdMissing(what),
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => {
                PluginError::Forbidden { verb, what, message: s.message.clone() }
            }
            kube::Error::Api(s) => PluginError::Api { verb, what, message: s.message.clone() },
            other => PluginError::Unreachable { server: self.server.clone(), reason: other.to_string() },
        }
    }
}
