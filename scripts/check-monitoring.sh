#!/usr/bin/env bash
# Checks of deploy/monitoring (alert rules, their PrometheusRule, the Grafana dashboard, the metrics contract):
# - prometheusrule.yaml is generated from muster.rules.yaml (--write regenerates it; CI fails when it is stale);
# - promtool check rules / promtool test rules on the rules and their tests;
# - scripts/check-monitoring.py: metric names against metrics.txt, alert conventions, the operator reference;
# - promtool parses every PromQL expression of the dashboard and of the annotation templates.
# Needs promtool (Debian: apt-get install prometheus) and python3; fails, never skips, without them.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=deploy/monitoring
for tool in promtool python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool not found: the alert rules cannot be checked (promtool: apt-get install prometheus)" >&2
    exit 1
  fi
done

prometheusrule() {
  cat <<'EOF'
# Generated from muster.rules.yaml by scripts/check-monitoring.sh --write: edit that file, not this one.
# The same rule groups as a PrometheusRule, for the Prometheus Operator (kube-prometheus). Your Prometheus'
# ruleSelector must match these labels (kube-prometheus-stack selects `release: <its release name>` by default:
# add that label, or set ruleSelectorNilUsesHelmValues=false).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: muster
  namespace: muster-system
  labels:
    app.kubernetes.io/name: muster
    app.kubernetes.io/part-of: muster
spec:
EOF
  # The groups, indented under spec (empty lines stay empty).
  sed -n '/^groups:/,$p' "$dir/muster.rules.yaml" | sed 's/^./  &/'
}

if [ "${1:-}" = "--write" ]; then
  prometheusrule >"$dir/prometheusrule.yaml"
  echo "wrote $dir/prometheusrule.yaml"
  exit 0
fi

if ! diff -u "$dir/prometheusrule.yaml" <(prometheusrule) >&2; then
  echo "$dir/prometheusrule.yaml is stale: run scripts/check-monitoring.sh --write" >&2
  exit 1
fi

promtool --version 2>&1 | sed -n 1p
promtool check rules "$dir/muster.rules.yaml"
promtool test rules "$dir"/tests/*.test.yaml

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 scripts/check-monitoring.py "$tmp/expressions.rules.yaml"
promtool check rules "$tmp/expressions.rules.yaml"
