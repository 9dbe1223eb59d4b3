#!/usr/bin/env python3
"""Consistency checks of deploy/monitoring that promtool cannot do; run by scripts/check-monitoring.sh.

- Every metric the alert rules and the Grafana dashboard use (expressions, the annotation templates' queries, the
  dashboard's variable queries) is in the contract, deploy/monitoring/metrics.txt.
- Every alert has a `for:`, a severity label, summary/description/runbook_url annotations, a runbook_url that
  points at its own section of the operator reference, and a promtool test.
- The operator reference describes every metric of the contract and has a section for every alert.
- Every dashboard query uses the data source variable.
- Every PromQL expression of the dashboard and of the annotation templates is written, with Grafana's variables
  replaced, into a rule file (the argument) that the caller hands to `promtool check rules` to parse.

Standard library only: the rule file is read as text, in the layout muster.rules.yaml keeps (promtool has already
validated it as YAML), and the checks fail loudly when that layout is not found.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "deploy/monitoring"
RULES = MON / "muster.rules.yaml"
DASHBOARD = MON / "grafana/muster.json"
CONTRACT = MON / "metrics.txt"
TESTS = MON / "tests"
DOC = ROOT / "docs/operator/metrics-and-alerts.md"
SEVERITIES = {"critical", "warning", "info"}

# Grafana's variables, replaced by values that keep the expression's shape for parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$queue": ".*",
    "$hostname": ".*",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan", "atan2"}


def read_contract(text):
    """(names as listed, exposition names): a histogram stands for its _bucket, _sum and _count series."""
    listed, exposed = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("job "):
            continue
        fields = line.split()
        if len(fields) != 3 or fields[1] not in {"gauge", "counter", "histogram"}:
            raise SystemExit(f"{CONTRACT}:{lineno}: expected `name type labels`, got {line!r}")
        name, kind = fields[0], fields[1]
        if kind == "counter" and not name.endswith("_total"):
            raise SystemExit(f"{CONTRACT}:{lineno}: counter {name} must carry its _total")
        listed.append(name)
        exposed.update([f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name])
    return listed, exposed


def metric_names(expr):
    """The metric names a PromQL expression selects (identifiers that are not functions, keywords or labels)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", s):
        if re.match(r"\s*\(", s[m.end():]) or m.group(0).lower() in KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(0))
    return names


def rule_blocks(text):
    """(alert name, block text, expression) for each alert of the rule file."""
    blocks = []
    for block in re.split(r"(?m)^(?=[ \t]*- (?:alert|record): )", text)[1:]:
        head = re.match(r"\s*- (alert|record): (\S+)", block)
        expr = re.search(r"(?m)^(\s*)expr: *(.*)$", block)
        if not head or not expr:
            raise SystemExit(f"{RULES}: cannot read the rule starting {block[:60]!r}")
        if expr.group(2).strip() in {"|", "|-", ">", ">-"}:
            indent = len(expr.group(1))
            lines = []
            for line in block[expr.end() + 1:].splitlines():
                if line.strip() and len(line) - len(line.lstrip()) <= indent:
                    break
                lines.append(line)
            value = "\n".join(lines).strip()
        else:
            value = expr.group(2).strip()
        if head.group(1) == "alert":
            blocks.append((head.group(2), block, value))
    return blocks


def template_queries(text):
    """PromQL inside annotation templates: `printf "<query>" ... | query`, with %q/%s filled in."""
    return [re.sub(r"%[qs]", '"x"', q.replace('\\"', '"'))
            for q in re.findall(r'printf "((?:[^"\\]|\\.)*)"[^}]*\|\s*query', text)]


def dashboard_queries(dashboard):
    """(panel title, expression) for every target, and the variables' label_values(...) queries."""
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((panel.get("title", "?"), target["expr"]))
                if (target.get("datasource") or panel.get("datasource") or {}).get("uid") != "${datasource}":
                    title = panel.get("title")
                    raise SystemExit(f"{DASHBOARD}: panel {title!r}: use the data source variable ${{datasource}}")
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
        if m:
            out.append((f"variable {var['name']}", m.group(1)))
        elif var.get("type") == "query":
            raise SystemExit(f"{DASHBOARD}: variable {var['name']}: only label_values(<selector>, label) is checked")
    return out


def substitute(expr):
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    unknown = re.search(r"\$\{?[A-Za-z_]\w*", expr)  # `$1` in label_replace is no variable
    if unknown:
        raise SystemExit(f"{DASHBOARD}: unknown Grafana variable {unknown.group(0)} in {expr!r}")
    return expr


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: check-monitoring.py <rule file to write the dashboard's expressions to>")
    errors = []
    listed, known = read_contract(CONTRACT.read_text())
    rules_text = RULES.read_text()
    doc = DOC.read_text()
    tests = "\n".join(p.read_text() for p in sorted(TESTS.glob("*.yaml")))

    alerts = rule_blocks(rules_text)
    if not alerts:
        errors.append(f"{RULES}: no alerts found")
    for name, block, expr in alerts:
        for metric in sorted(metric_names(expr) - known):
            errors.append(f"alert {name}: metric {metric} is not in {CONTRACT.name}")
        if not re.search(r"(?m)^\s*for: \d+[smh]", block):
            errors.append(f"alert {name}: no `for:` duration")
        severity = re.search(r"(?m)^\s*severity: (\S+)", block)
        if not severity or severity.group(1) not in SEVERITIES:
            errors.append(f"alert {name}: severity label must be one of {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not re.search(rf"(?m)^\s*{key}: ", block):
                errors.append(f"alert {name}: no {key} annotation")
        anchor = name.lower()
        if f"#{anchor}" not in block:
            errors.append(f"alert {name}: runbook_url must point at #{anchor}")
        if not re.search(rf"(?m)^#+ {name}\s*$", doc):
            errors.append(f"{DOC.name}: no section `### {name}` (the alert's runbook)")
        if not re.search(rf"(?m)^\s*alertname: {name}\s*$", tests):
            errors.append(f"alert {name}: no promtool test in {TESTS.relative_to(ROOT)}")

    expressions = []
    for query in template_queries(rules_text):
        expressions.append(("alert annotation", query))
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{DASHBOARD}: not JSON: {e}")
    for title, expr in dashboard_queries(dashboard):
        expressions.append((f"dashboard panel {title!r}", substitute(expr)))
    if len(expressions) < 2:
        errors.append("found almost no expressions in the dashboard and the annotations: the reader is broken")
    for where, expr in expressions:
        for metric in sorted(metric_names(expr) - known):
            errors.append(f"{where}: metric {metric} is not in {CONTRACT.name}")

    for metric in listed:
        if f"`{metric}`" not in doc:
            errors.append(f"{DOC.name}: metric `{metric}` is not described")

    with open(sys.argv[1], "w") as out:
        out.write("# Generated by scripts/check-monitoring.py: expressions to parse, not to load.\ngroups:\n")
        out.write("  - name: expressions\n    rules:\n")
        for i, (where, expr) in enumerate(expressions):
            out.write(f"      # {where}\n      - record: expression_{i}\n        expr: {json.dumps(expr)}\n")

    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        raise SystemExit(1)
    print(f"{len(alerts)} alerts, {len(expressions)} dashboard and template expressions, "
          f"{len(listed)} contract metrics: consistent")


if __name__ == "__main__":
    main()
