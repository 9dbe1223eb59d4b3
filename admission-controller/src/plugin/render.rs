//! Reports as text: kubectl-style tables for people, JSON or YAML for tools (the same fields either way).

use std::fmt::Write as _;

use muster_api::gang::SlotPlacement;
use serde::Serialize;

use super::report::{
    AgentState, ExplainReport, Fit, NodeFit, NodeGpus, NodesReport, PodSetNodes, QueueReport, SimulateReport,
    UnhealthyGpu, Verdict,
};
use super::{Output, PluginError};

/// A report as people read it.
pub trait Human {
    fn human(&self) -> String;
}

/// `report` in the chosen format, ending with a newline.
pub fn emit<T: Serialize + Human>(report: &T, output: Output) -> Result<String, PluginError> {
    match output {
        Output::Table => Ok(report.human()),
        Output::Json => {
            serde_json::to_string_pretty(report).map(|s| s + "\n").map_err(|e| PluginError::Render(e.to_string()))
        }
        Output::Yaml => serde_saphyr::to_string(report).map_err(|e| PluginError::Render(e.to_string())),
    }
}

/// Columns left-aligned, three spaces apart, no trailing spaces: the layout of `kubectl get`.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = self.header.iter().map(|h| (*h).to_owned());
        for cells in std::iter::once(header.collect::<Vec<_>>()).chain(self.rows.iter().cloned()) {
            let mut line = String::new();
            for (i, cell) in cells.iter().take(columns).enumerate() {
                if i > 0 {
                    line.push_str("   ");
                }
                line.push_str(cell);
                if i + 1 < columns {
                    line.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(cell.chars().count())));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// An age as kubectl prints one: `45s`, `3m12s`, `25m`, `2h5m`, `11h`, `3d4h`, `12d`.
pub fn age(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        0..120 => format!("{secs}s"),
        120..600 => format!("{m}m{}s", secs % 60),
        600..3600 => format!("{m}m"),
        3600..28_800 => format!("{h}h{}m", m % 60),
        28_800..86_400 => format!("{h}h"),
        86_400..691_200 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

fn agent_text(agent: &AgentState) -> String {
    match agent {
        AgentState::Ok => "ok".to_owned(),
        AgentState::Missing => "missing".to_owned(),
        AgentState::Stale { heartbeat_age_seconds: Some(s) } => format!("stale({})", age(*s)),
        AgentState::Stale { heartbeat_age_seconds: None } => "stale(no heartbeat)".to_owned(),
        AgentState::NvmlUnavailable { .. } => "nvml-error".to_owned(),
    }
}

/// GPUs per gang on a node, the queue head it is held for and the gang whose exclusive Job took its domain:
/// `ml/a:8,ml/b:2,held for ml/c,taken exclusively by ml/a (rack=r1)`.
fn gangs_text(node: &NodeGpus) -> String {
    let gangs = node.gangs.iter().map(|g| format!("{}:{}", g.gang, g.reserved.max(g.bound)));
    let held = node.held_for.iter().map(|g| format!("held for {g}"));
    let taken = node.exclusive_for.iter().map(|g| format!("taken exclusively by {g}"));
    or_dash(gangs.chain(held).chain(taken).collect::<Vec<_>>().join(","))
}

/// Unhealthy GPUs with their XIDs: `3:XID 79,5:ECC`.
fn unhealthy_text(gpus: &[UnhealthyGpu]) -> String {
    or_dash(
        gpus.iter()
            .map(|u| match (&u.xid, &u.reason) {
                (Some(x), _) => format!("{}:XID {x}", u.index),
                (None, Some(r)) => format!("{}:{r}", u.index),
                (None, None) => u.index.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn status_text(n: &NodeGpus) -> String {
    let mut s = if n.ready { "Ready" } else { "NotReady" }.to_owned();
    if n.cordoned {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn warnings(out: &mut String, warnings: &[String]) {
    for w in warnings {
        let _ = writeln!(out, "Warning: {w}");
    }
}

impl Human for QueueReport {
    fn human(&self) -> String {
        if self.gangs.is_empty() {
            return "No gangs found.\n".to_owned();
        }
        let mut t = Table::new(&["QUEUE", "POSITION", "GANG", "GPUS", "PRIORITY", "WAITING", "PHASE", "REASON"]);
        for g in &self.gangs {
            t.row(vec![
                g.queue.clone(),
                g.position.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                g.gang.clone(),
                g.gpus.to_string(),
                g.priority.to_string(),
                g.waiting_seconds.map_or_else(|| "-".to_owned(), age),
                format!("{:?}", g.phase),
                or_dash(g.reason.clone().unwrap_or_default()),
            ]);
        }
        t.render()
    }
}

impl Human for NodesReport {
    fn human(&self) -> String {
        let mut out = String::new();
        if self.nodes.is_empty() {
            out.push_str("No GPU nodes found (--all lists every node).\n");
        } else {
            let mut t = Table::new(&[
                "NODE",
                "STATUS",
                "AGENT",
                "GPUS",
                "HEALTHY",
                "ALLOCATED",
                "RESERVED",
                "FREE",
                "HEARTBEAT",
                "NVML",
                "GANGS",
                "UNHEALTHY",
            ]);
            for n in &self.nodes {
                t.row(vec![
                    n.node.clone(),
                    status_text(n),
                    agent_text(&n.agent),
                    n.total.to_string(),
                    n.healthy.to_string(),
                    n.allocated.to_string(),
                    n.reserved.to_string(),
                    n.free.to_string(),
                    n.heartbeat_age_seconds.map_or_else(|| "-".to_owned(), age),
                    match n.nvml {
                        Some(true) => "up".to_owned(),
                        Some(false) => "down".to_owned(),
                        None => "-".to_owned(),
                    },
                    gangs_text(n),
                    unhealthy_text(&n.unhealthy),
                ]);
            }
            out.push_str(&t.render());
        }
        warnings(&mut out, &self.warnings);
        out
    }
}

fn verdict_line(fit: &Fit) -> String {
    match fit.verdict {
        Verdict::DoesNotFitNow => format!("does not fit now: {}", fit.message),
        Verdict::NeverFits => format!("never fits as specified: {}", fit.message),
        Verdict::Admitted | Verdict::Finished | Verdict::FitsNow | Verdict::Unreadable => fit.message.clone(),
    }
}

/// Every cause of a shortfall, where the one-line message names only the largest few.
fn causes_tables(out: &mut String, fit: &Fit) {
    let Some(why) = &fit.explanation else { return };
    for d in &why.domains {
        let _ = writeln!(
            out,
            "\nWhy the exclusive Jobs on {} do not fit: {} Jobs need a domain each; {} can take one",
            d.topology_key, d.jobs_needed, d.domains_fit
        );
        let mut t = Table::new(&["FIT", "USED BY OTHERS", "TOO SMALL", "EXAMPLES"]);
        t.row(vec![
            d.domains_fit.to_string(),
            d.domains_used.to_string(),
            d.domains_too_small.to_string(),
            or_dash(d.used_examples.join("; ")),
        ]);
        out.push_str(&t.render());
    }
    for ps in &why.pod_sets {
        let _ = writeln!(
            out,
            "\nWhy pod set {} does not fit: room for {} of {} pods of {} GPUs",
            ps.pod_set, ps.pods_fit, ps.pods_needed, ps.gpus_per_pod
        );
        let mut t = Table::new(&["CAUSE", "NODES", "GPUS", "EXAMPLES"]);
        for c in &ps.causes {
            let detail = [c.gang.clone(), c.xid.map(|x| format!("XID {x}")), c.selector.clone(), c.taint.clone()];
            let detail: Vec<String> = detail.into_iter().flatten().collect();
            let cause =
                if detail.is_empty() { c.cause.to_owned() } else { format!("{} ({})", c.cause, detail.join(", ")) };
            t.row(vec![cause, c.nodes.to_string(), c.gpus.to_string(), or_dash(c.examples.join("; "))]);
        }
        out.push_str(&t.render());
    }
}

fn placement_table(out: &mut String, slots: &[SlotPlacement]) {
    if slots.is_empty() {
        return;
    }
    let mut t = Table::new(&["POD SET", "JOB", "POD", "NODE"]);
    for s in slots {
        t.row(vec![s.pod_set.clone(), s.job_index.to_string(), s.pod_index.to_string(), s.node.clone()]);
    }
    out.push('\n');
    out.push_str(&t.render());
}

fn pod_set_tables(out: &mut String, pod_sets: &[PodSetNodes]) {
    for ps in pod_sets {
        let mut per_pod = format!("{} GPU{}", ps.gpus_per_pod, if ps.gpus_per_pod == 1 { "" } else { "s" });
        if ps.cpu_milli_per_pod > 0 {
            let _ = write!(per_pod, ", cpu {}m", ps.cpu_milli_per_pod);
        }
        if ps.memory_bytes_per_pod > 0 {
            let _ = write!(per_pod, ", memory {}Mi", ps.memory_bytes_per_pod.div_ceil(1 << 20));
        }
        let _ = writeln!(
            out,
            "\nPod set {}: {} pod{} of {per_pod}; {} node{} match{}; room for {} of {} pods now",
            ps.pod_set,
            ps.pods,
            if ps.pods == 1 { "" } else { "s" },
            ps.nodes_matching,
            if ps.nodes_matching == 1 { "" } else { "s" },
            if ps.nodes_matching == 1 { "es" } else { "" },
            ps.pods_fit,
            ps.pods
        );
        let mut t = Table::new(&["NODE", "MATCHES", "AGENT", "HEALTHY", "FREE", "FITS", "GANGS", "UNHEALTHY"]);
        for NodeFit { gpus: n, matches, mismatch, pods_fit } in &ps.nodes {
            t.row(vec![
                n.node.clone(),
                if *matches { "yes".to_owned() } else { format!("no: {}", mismatch.as_deref().unwrap_or("")) },
                agent_text(&n.agent),
                n.healthy.to_string(),
                n.free.to_string(),
                pods_fit.to_string(),
                gangs_text(n),
                unhealthy_text(&n.unhealthy),
            ]);
        }
        out.push_str(&t.render());
    }
}

impl Human for ExplainReport {
    fn human(&self) -> String {
        let mut out = format!("JobSet {}", self.jobset);
        match &self.gang {
            Some(g) => {
                let _ = write!(out, ": gang {:?} in queue {}", g.phase, g.queue);
                let mut details = vec![format!("{} GPUs", g.gpus)];
                if let Some(p) = g.position {
                    details.push(format!("position {p}"));
                }
                if let Some(w) = g.waiting_seconds {
                    details.push(format!("waiting {}", age(w)));
                }
                if g.requeue_count > 0 {
                    details.push(format!("requeued {} times", g.requeue_count));
                }
                let _ = writeln!(out, " ({})", details.join(", "));
                if let Some(reason) = &g.reason {
                    let _ = writeln!(out, "Admission says: {reason}");
                }
            }
            None => out.push_str(": no Gang yet\n"),
        }
        let _ = writeln!(out, "Now: {}", verdict_line(&self.fit));
        placement_table(&mut out, &self.fit.placement);
        causes_tables(&mut out, &self.fit);
        pod_set_tables(&mut out, &self.pod_sets);
        warnings(&mut out, &self.warnings);
        out
    }
}

impl Human for SimulateReport {
    fn human(&self) -> String {
        let mut out = format!(
            "JobSet {} (queue {}, priority {}, {} GPUs), simulated, nothing submitted:\n{}\n",
            self.jobset,
            self.queue,
            self.priority,
            self.gpus,
            verdict_line(&self.fit)
        );
        placement_table(&mut out, &self.fit.placement);
        if !self.queued_ahead.is_empty() {
            let _ = writeln!(
                out,
                "\n{} gang{} wait{} ahead in queue {} and {} tried first: {}",
                self.queued_ahead.len(),
                if self.queued_ahead.len() == 1 { "" } else { "s" },
                if self.queued_ahead.len() == 1 { "s" } else { "" },
                self.queue,
                if self.queued_ahead.len() == 1 { "is" } else { "are" },
                self.queued_ahead.join(", ")
            );
        }
        if self.fit.verdict != Verdict::FitsNow {
            causes_tables(&mut out, &self.fit);
            pod_set_tables(&mut out, &self.pod_sets);
        }
        warnings(&mut out, &self.warnings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::report::{CauseView, ExplanationView, GangGpus, GangSummary, QueueEntry, ShortfallView};
    use muster_api::gang::GangPhase;
    use serde_json::{Value, json};

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["NODE", "FREE", "GANGS"]);
        t.row(vec!["gpu-10".into(), "8".into(), "-".into()]);
        t.row(vec!["g".into(), "1234".into(), "ml/a:8".into()]);
        assert_eq!(t.render(), "NODE     FREE   GANGS\ngpu-10   8      -\ng        1234   ml/a:8\n");
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x".into(), String::new()]);
        assert_eq!(t.render(), "A   B\nx\n", "an empty last cell leaves no spaces");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (192, "3m12s"),
            (1500, "25m"),
            (7500, "2h5m"),
            (39_600, "11h"),
            (273_600, "3d4h"),
            (1_036_800, "12d"),
        ];
        for (secs, text) in cases {
            assert_eq!(age(secs), text, "{secs}");
        }
    }

    fn node(name: &str) -> NodeGpus {
        NodeGpus {
            node: name.into(),
            ready: true,
            cordoned: true,
            agent: AgentState::Stale { heartbeat_age_seconds: Some(95) },
            total: 8,
            healthy: 7,
            busy: 0,
            allocated: 2,
            reserved: 4,
            free: 1,
            gangs: vec![GangGpus { gang: "ml/a".into(), reserved: 4, bound: 2 }],
            held_for: Some("ml/head".into()),
            exclusive_for: Some("ml/a (rack=r1)".into()),
            unhealthy: vec![UnhealthyGpu { index: 3, xid: Some(79), reason: Some("XID 79".into()) }],
            heartbeat_age_seconds: Some(95),
            nvml: Some(true),
        }
    }

    #[test]
    fn nodes_render_as_a_table_and_as_camel_case_json_and_yaml() {
        let report = NodesReport { nodes: vec![node("gpu-1")], warnings: vec!["gang ml/z: odd".into()] };
        let text = report.human();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE    STATUS"), "{text}");
        let cells: Vec<&str> = lines[1].split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cells,
            [
                "gpu-1",
                "Ready,SchedulingDisabled",
                "stale(95s)",
                "8",
                "7",
                "2",
                "4",
                "1",
                "95s",
                "up",
                "ml/a:4,held for ml/head,taken exclusively by ml/a (rack=r1)",
                "3:XID 79"
            ]
        );
        assert_eq!(lines[2], "Warning: gang ml/z: odd");

        let json: Value = serde_json::from_str(&emit(&report, Output::Json).expect("json")).expect("parses");
        assert_eq!(json["nodes"][0]["agent"], json!({"state": "stale", "heartbeatAgeSeconds": 95}));
        assert_eq!(json["nodes"][0]["unhealthy"], json!([{"index": 3, "xid": 79, "reason": "XID 79"}]));
        assert_eq!(json["nodes"][0]["gangs"], json!([{"gang": "ml/a", "reserved": 4, "bound": 2}]));
        assert_eq!(json["nodes"][0]["heartbeatAgeSeconds"], 95);
        assert_eq!(json["nodes"][0]["heldFor"], "ml/head");
        let yaml: Value = serde_saphyr::from_str(&emit(&report, Output::Yaml).expect("yaml")).expect("parses");
        assert_eq!(yaml, json, "YAML carries the same fields as JSON");
        let empty = NodesReport { nodes: vec![], warnings: vec![] };
        assert!(empty.human().contains("No GPU nodes"));
    }

    #[test]
    fn the_queue_renders_dashes_for_what_does_not_apply() {
        let entry = |gang: &str, position, waiting, phase| QueueEntry {
            queue: "default".into(),
            position,
            gang: gang.into(),
            gpus: 16,
            priority: 0,
            waiting_seconds: waiting,
            phase,
            reason: None,
        };
        let report = QueueReport {
            gangs: vec![
                entry("ml/b", Some(1), Some(192), GangPhase::Pending),
                entry("ml/a", None, None, GangPhase::Running),
            ],
        };
        let text = report.human();
        assert_eq!(
            text,
            "QUEUE     POSITION   GANG   GPUS   PRIORITY   WAITING   PHASE     REASON\n\
             default   1          ml/b   16     0          3m12s     Pending   -\n\
             default   -          ml/a   16     0          -         Running   -\n"
        );
        let json: Value = serde_json::from_str(&emit(&report, Output::Json).expect("json")).expect("parses");
        assert_eq!(
            json["gangs"][1],
            json!({"queue": "default", "gang": "ml/a", "gpus": 16, "priority": 0, "phase": "Running"})
        );
        assert_eq!(QueueReport { gangs: vec![] }.human(), "No gangs found.\n");
    }

    #[test]
    fn explain_renders_the_gang_the_verdict_and_a_table_per_pod_set() {
        let report = ExplainReport {
            jobset: "ml/one".into(),
            gang: Some(GangSummary {
                phase: GangPhase::Pending,
                queue: "default".into(),
                priority: 0,
                gpus: 8,
                position: Some(1),
                waiting_seconds: Some(45),
                reason: Some("needs 1 node with 8 free healthy GPUs".into()),
                requeue_count: 0,
            }),
            fit: Fit {
                verdict: Verdict::DoesNotFitNow,
                message: "gpu-1: 1 GPU unhealthy (XID 79)".into(),
                explanation: Some(ExplanationView {
                    basis: "now",
                    message: "gpu-1: 1 GPU unhealthy (XID 79)".into(),
                    gpu_shortfall: 8,
                    pod_sets: vec![ShortfallView {
                        pod_set: "workers".into(),
                        pods_needed: 1,
                        gpus_per_pod: 8,
                        pods_fit: 0,
                        nodes_fit: 0,
                        causes: vec![CauseView {
                            cause: "unhealthy_gpus",
                            gang: None,
                            xid: Some(79),
                            selector: None,
                            taint: None,
                            domain: None,
                            nodes: 1,
                            gpus: 1,
                            examples: vec!["gpu-1: 1 GPU unhealthy (XID 79)".into()],
                        }],
                    }],
                    domains: vec![],
                }),
                placement: vec![],
            },
            pod_sets: vec![PodSetNodes {
                pod_set: "workers".into(),
                pods: 1,
                gpus_per_pod: 8,
                cpu_milli_per_pod: 1000,
                memory_bytes_per_pod: 0,
                nodes_matching: 1,
                pods_fit: 0,
                nodes: vec![
                    NodeFit { gpus: node("gpu-1"), matches: true, mismatch: None, pods_fit: 0 },
                    NodeFit {
                        gpus: node("gpu-2"),
                        matches: false,
                        mismatch: Some("untolerated taint gpu:NoSchedule".into()),
                        pods_fit: 0,
                    },
                ],
            }],
            warnings: vec![],
        };
        let text = report.human();
        assert!(text.starts_with("JobSet ml/one: gang Pending in queue default (8 GPUs, position 1, waiting 45s)\n"));
        assert!(text.contains("Admission says: needs 1 node with 8 free healthy GPUs\n"), "{text}");
        assert!(text.contains("Now: does not fit now: gpu-1: 1 GPU unhealthy (XID 79)\n"), "{text}");
        assert!(text.contains("Pod set workers: 1 pod of 8 GPUs, cpu 1000m; 1 node matches; room for 0 of 1 pods now"));
        assert!(text.contains("Why pod set workers does not fit: room for 0 of 1 pods of 8 GPUs\n"), "{text}");
        assert!(text.contains("unhealthy_gpus (XID 79)   1       1      gpu-1: 1 GPU unhealthy (XID 79)\n"), "{text}");
        let row = text.lines().find(|l| l.starts_with("gpu-1 ")).expect("gpu-1 row");
        assert!(row.contains("3:XID 79") && row.contains(" yes "), "{row}");
        assert!(text.lines().any(|l| l.starts_with("gpu-2") && l.contains("no: untolerated taint gpu:NoSchedule")));
        let json: Value = serde_json::from_str(&emit(&report, Output::Json).expect("json")).expect("parses");
        assert_eq!(json["fit"]["verdict"], "doesNotFitNow");
        // A node row carries its GPU fields flat, next to the match.
        assert_eq!(json["podSets"][0]["nodes"][1]["node"], "gpu-2");
        assert_eq!(json["podSets"][0]["nodes"][1]["mismatch"], "untolerated taint gpu:NoSchedule");
        assert_eq!(json["podSets"][0]["nodes"][0]["unhealthy"][0]["xid"], 79);
    }
}
