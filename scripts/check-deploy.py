#!/usr/bin/env python3
"""Checks of the install under deploy/ that rendering alone cannot do; run by scripts/check-deploy.sh, which renders
every kustomization with `kubectl kustomize` into the directory given as the argument (one file per kustomization,
named after its path with `/` as `_`).

- Every rendered document is a Kubernetes object: apiVersion, kind, metadata.name, and a namespace where the kind is
  namespaced; no object twice.
- Every object of every manifest under deploy/ is installed by some kustomization (nothing is left out by mistake).
- The installs need no Prometheus Operator; deploy/monitoring holds only its objects.
- Placement modes and certificates: every install registers upstream's four webhooks (mjobset, vjobset, mpod,
  vpod); the default install runs the Muster scheduler and has muster-admission set its schedulerName on gang pods;
  pod-pinning runs no second scheduler, runs muster-admission with --placement-mode=pod-pinning and sets no
  schedulerName; self-managed-certs has nothing of cert-manager, runs --self-managed-certs without waiting for a
  Secret volume, and may update the webhook configurations it patches.
- Every Service selects the pods of some workload and names a port those pods have.
- The ServiceMonitors produce exactly the scrape jobs the alert rules select (`job="..."`).

Needs PyYAML (Debian: python3-yaml).
"""

import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    raise SystemExit("PyYAML not found: the deploy checks need it (apt-get install python3-yaml, or pip install pyyaml)")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "monitoring/muster.rules.yaml"

INSTALLS = ["deploy", "deploy/variants/self-managed-certs", "deploy/variants/pod-pinning",
            "deploy/variants/pod-pinning-self-managed-certs"]
MONITORING = "deploy/monitoring"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
WORKLOADS = {"Deployment", "DaemonSet"}

failures = []


def fail(message):
    failures.append(message)


def key(doc):
    meta = doc.get("metadata") or {}
    return (doc.get("kind"), meta.get("namespace", ""), meta.get("name"))


def load_render(rendered, path):
    file = rendered / (path.replace("/", "_") + ".yaml")
    docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    seen = set()
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            fail(f"{path}: a document without apiVersion/kind: {str(doc)[:80]}")
            continue
        k = key(doc)
        if not k[2]:
            fail(f"{path}: {k[0]} without metadata.name")
        if k[0] not in CLUSTER_SCOPED and not k[1]:
            fail(f"{path}: {k[0]} {k[2]} has no namespace")
        if k in seen:
            fail(f"{path}: {k} twice")
        seen.add(k)
    return docs


def find(docs, kind, name):
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def admission_args(path, docs):
    dep = find(docs, "Deployment", "muster-admission")
    if dep is None:
        fail(f"{path}: no Deployment muster-admission")
        return [], {}
    pod = dep["spec"]["template"]["spec"]
    return pod["containers"][0].get("args", []), pod


def check_installs(rendered):
    installed = set()
    for path in INSTALLS:
        docs = load_render(rendered, path)
        installed.update(key(d) for d in docs)
        if any(d["apiVersion"].startswith("monitoring.coreos.com/") for d in docs):
            fail(f"{path}: installs Prometheus Operator objects; they belong in {MONITORING}")
        for name in ["jobsets.jobset.x-k8s.io", "gangs.muster.dev", "gpunodes.muster.dev"]:
            if find(docs, "CustomResourceDefinition", name) is None:
                fail(f"{path}: CRD {name} missing")
        for kind, name in [("Deployment", "muster-reconciler"), ("DaemonSet", "muster-gpu-agent"),
                           ("Namespace", "muster-system")]:
            if find(docs, kind, name) is None:
                fail(f"{path}: {kind} {name} missing")
        args, pod = admission_args(path, docs)
        scheduler = find(docs, "Deployment", "muster-scheduler")
        # Upstream's four webhooks in every install: the pod ones do exclusive placement, and pinning in pod-pinning.
        configurations = [d for d in docs
                          if d["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")]
        webhooks = {w["name"] for d in configurations for w in d.get("webhooks") or []}
        for name in ["mjobset.kb.io", "vjobset.kb.io", "mpod.kb.io", "vpod.kb.io"]:
            if name not in webhooks:
                fail(f"{path}: webhook {name} missing")
        if "pod-pinning" in path:
            if scheduler is not None:
                fail(f"{path}: pod-pinning must run no second scheduler")
            if "--placement-mode=pod-pinning" not in args or any(a.startswith("--gang-scheduler-name") for a in args):
                fail(f"{path}: muster-admission args {args}: want --placement-mode=pod-pinning, no scheduler name")
        else:
            if scheduler is None:
                fail(f"{path}: extender mode must run the Muster scheduler")
            if "--gang-scheduler-name=muster-scheduler" not in args or any(a.startswith("--placement-mode") for a in args):
                fail(f"{path}: muster-admission args {args}: want --gang-scheduler-name=muster-scheduler")
        cert_manager = [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")
                        or "cert-manager.io/inject-ca-from" in (d["metadata"].get("annotations") or {})]
        if "self-managed-certs" in path:
            if cert_manager:
                fail(f"{path}: still uses cert-manager: {[key(d) for d in cert_manager]}")
            if "--self-managed-certs" not in args:
                fail(f"{path}: muster-admission runs without --self-managed-certs: {args}")
            secrets = [v for v in pod.get("volumes") or [] if "secret" in v]
            if secrets:
                fail(f"{path}: muster-admission mounts {secrets}; the pod would wait for a Secret only it creates")
            role = find(docs, "ClusterRole", "muster-admission") or {}
            for resource in ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"]:
                if not any(resource in r.get("resources", []) and "update" in r.get("verbs", [])
                           for r in role.get("rules", [])):
                    fail(f"{path}: muster-admission may not update {resource} (it replaces them to set caBundle)")
        else:
            if "--self-managed-certs" in args:
                fail(f"{path}: --self-managed-certs outside the self-managed-certs variant")
            if find(docs, "Certificate", "muster-serving-cert") is None:
                fail(f"{path}: no cert-manager Certificate for the webhook")
        check_services(path, docs)
    return installed


def check_services(path, docs):
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    for svc in (d for d in docs if d["kind"] == "Service"):
        name = svc["metadata"]["name"]
        selector = svc["spec"].get("selector") or {}
        pods = [w["spec"]["template"] for w in workloads
                if w["metadata"].get("namespace") == svc["metadata"].get("namespace")
                and selector and all((w["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v
                                     for k, v in selector.items())]
        if not pods:
            fail(f"{path}: Service {name} selects no workload's pods")
            continue
        ports = {(p.get("name"), p.get("containerPort")) for t in pods for c in t["spec"]["containers"]
                 for p in c.get("ports") or []}
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            if not any(target in (n, number) for n, number in ports):
                fail(f"{path}: Service {name} targets port {target!r}, which its pods do not have ({sorted(ports)})")


def check_manifests_installed(installed, monitoring):
    for file in sorted(DEPLOY.rglob("*.yaml")):
        rel = file.relative_to(ROOT)
        if file.name == "kustomization.yaml" or file == RULES or "tests" in rel.parts:
            continue
        for doc in yaml.safe_load_all(file.read_text()):
            if not isinstance(doc, dict) or "kind" not in doc:
                continue
            if key(doc) not in installed and key(doc) not in monitoring:
                fail(f"{rel}: {key(doc)} is installed by no kustomization")


def check_monitoring(rendered):
    docs = load_render(rendered, MONITORING)
    others = [key(d) for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    if others:
        fail(f"{MONITORING}: not Prometheus Operator objects: {others}")
    services = [d for d in load_render(rendered, "deploy") if d["kind"] == "Service"]
    jobs = set()
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selector = sm["spec"]["selector"].get("matchLabels", {})
        wanted_ports = {e.get("port") for e in sm["spec"]["endpoints"]}
        matched = [s for s in services
                   if all((s["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
                   and wanted_ports & {p.get("name") for p in s["spec"]["ports"]}]
        if not matched:
            fail(f"{MONITORING}: ServiceMonitor {sm['metadata']['name']} scrapes no Service of the default install")
        label = sm["spec"].get("jobLabel")
        for s in matched:
            jobs.add((s["metadata"].get("labels") or {}).get(label) if label else s["metadata"]["name"])
    in_rules = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    if jobs != in_rules:
        fail(f"{MONITORING}: the ServiceMonitors give the jobs {sorted(jobs)}, the alert rules select {sorted(in_rules)}")
    return {key(d) for d in docs}


def main():
    rendered = Path(sys.argv[1])
    installed = check_installs(rendered)
    monitoring = check_monitoring(rendered)
    check_manifests_installed(installed, monitoring)
    if failures:
        for f in failures:
            print(f"check-deploy: {f}", file=sys.stderr)
        sys.exit(1)
    print(f"check-deploy: {len(INSTALLS)} installs and {MONITORING} render and are consistent")


if __name__ == "__main__":
    main()
