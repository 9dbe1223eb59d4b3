//! `deploy/daemonset/`: the DaemonSet runs the agent as this crate builds it (flags it accepts, the port it
//! listens on, the socket directory it reads), with the least privilege the agent needs.

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::rbac::v1::ClusterRole;
use muster_gpu_agent::cli::Args;
use serde_json::Value;

fn documents() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/daemonset/gpu-agent.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/daemonset/gpu-agent.yaml");
    serde_saphyr::from_multiple(&text).expect("YAML")
}

fn document<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = documents().into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn the_daemonset_runs_the_agent_with_flags_it_accepts() {
    let daemonset: DaemonSet = document("DaemonSet");
    let pod = daemonset.spec.template.spec.expect("pod spec");
    assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));
    assert_eq!(pod.service_account_name.as_deref(), Some("muster-gpu-agent"));
    let agent = &pod.containers[0];
    let mut argv = vec!["muster-gpu-agent".to_string()];
    argv.extend(agent.args.clone().unwrap_or_default());
    let args = Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("the DaemonSet's args: {e}"));
    let port = agent.ports.as_ref().and_then(|p| p.first()).map(|p| p.container_port).expect("a port");
    assert_eq!(i32::from(args.listen.port()), port);
    let env = agent.env.clone().unwrap_or_default();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").expect("NODE_NAME");
    let field = node_name.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));
    let mounts = agent.volume_mounts.clone().unwrap_or_default();
    let socket_dir = args.pod_resources_socket.parent().expect("socket directory");
    assert!(
        mounts.iter().any(|m| std::path::Path::new(&m.mount_path) == socket_dir && m.read_only == Some(true)),
        "the pod-resources directory is mounted read-only at {}",
        socket_dir.display()
    );
    let security = agent.security_context.as_ref().expect("container securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let dropped = security.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
    assert_eq!(dropped, vec!["ALL".to_string()]);
    let resources = agent.resources.as_ref().expect("resources");
    assert!(resources.requests.as_ref().is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
    assert!(resources.limits.as_ref().is_some_and(|l| l.contains_key("memory")));
}

#[test]
fn rbac_covers_what_the_agent_does_and_no_more() {
    let role: ClusterRole = document("ClusterRole");
    let mut grants: Vec<String> = Vec::new();
    for rule in role.rules.unwrap_or_default() {
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    grants.push(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    grants.sort();
    assert_eq!(
        grants,
        [
            "/nodes:get",
            "/pods:list",
            "/pods:watch",
            "muster.dev/gpunodes/status:patch",
            "muster.dev/gpunodes:create",
            "muster.dev/gpunodes:get",
            "muster.dev/gpunodes:patch",
        ]
    );
}
