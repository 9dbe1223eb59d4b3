use super::*;

const TOPOLOGY: &str = "cloud.google.com/gke-nodepool";
const JOB_UID: &str = "uid-job-0";

/// A pod of Job `train-workers-<job>` as the Job controller creates it from a template the JobSet controller
/// stamped, with exclusive placement over [`TOPOLOGY`].
fn pod(name: &str, job: &str, completion: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "ml",
            "labels": {keys::JOBSET_NAME: "train", keys::REPLICATED_JOB_NAME: "workers", keys::JOB_INDEX: job,
                keys::JOB_KEY: format!("key-{job}"), keys::JOB_COMPLETION_INDEX: completion},
            "annotations": {keys::JOBSET_NAME: "train", keys::EXCLUSIVE_TOPOLOGY: TOPOLOGY,
                keys::JOB_COMPLETION_INDEX: completion},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("train-workers-{job}"),
                "uid": JOB_UID, "controller": true}],
        },
        "spec": {"containers": [{"name": "c"}], "priority": 100},
    }))
    .expect("pod")
}

fn leader() -> Pod {
    pod("train-workers-0-0-abcde", "0", "0")
}

fn follower() -> Pod {
    pod("train-workers-0-1-fghij", "0", "1")
}

fn scheduled(mut p: Pod, node: &str) -> Pod {
    p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
    p
}

fn with_annotation(mut p: Pod, key: &str, value: Option<&str>) -> Pod {
    let annotations = p.metadata.annotations.get_or_insert_with(Default::default);
    match value {
        Some(v) => annotations.insert(key.into(), v.into()),
        None => annotations.remove(key),
    };
    p
}

fn raw(p: &Pod) -> Value {
    serde_json::to_value(p).expect("json")
}

fn reads(pods: Vec<Pod>, nodes: &[(&str, &str)]) -> StaticReads {
    StaticReads {
        pods,
        nodes: nodes
            .iter()
            .map(|(node, domain)| ((*node).to_owned(), BTreeMap::from([(TOPOLOGY.to_owned(), (*domain).to_owned())])))
            .collect(),
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
}

#[test]
fn scope_follows_upstreams_annotations() {
    assert_eq!(scope(&leader()), Scope::Exclusive { topology_key: TOPOLOGY, leader: true });
    assert_eq!(scope(&follower()), Scope::Exclusive { topology_key: TOPOLOGY, leader: false });
    assert_eq!(scope(&with_annotation(leader(), keys::EXCLUSIVE_TOPOLOGY, None)), Scope::JobSet);
    // Node-selector strategy: the reconciler's nodeSelector does the job; the webhooks stay out.
    assert_eq!(scope(&with_annotation(follower(), keys::NODE_SELECTOR_STRATEGY, Some("true"))), Scope::Untouched);
    // JobSet pods are told apart by the annotation, as upstream does (the label only routes them here).
    assert_eq!(scope(&with_annotation(follower(), keys::JOBSET_NAME, None)), Scope::Untouched);
    // The leader is completion index 0 by annotation only: a NonIndexed Job's pods are all followers.
    let nonindexed = with_annotation(leader(), keys::JOB_COMPLETION_INDEX, None);
    assert_eq!(scope(&nonindexed), Scope::Exclusive { topology_key: TOPOLOGY, leader: false });
}

#[test]
fn leader_terms_are_upstreams() {
    let (affinity, anti) = leader_terms("key-0", "100", TOPOLOGY);
    assert_eq!(
        affinity,
        json!({"labelSelector": {"matchExpressions": [
                {"key": "jobset.sigs.k8s.io/job-key", "operator": "In", "values": ["key-0"]}]},
            "topologyKey": TOPOLOGY, "namespaceSelector": {}})
    );
    assert_eq!(
        anti,
        json!({"labelSelector": {"matchExpressions": [
                {"key": "jobset.sigs.k8s.io/job-key", "operator": "Exists"},
                {"key": "jobset.sigs.k8s.io/job-key", "operator": "NotIn", "values": ["key-0"]},
                {"key": "jobset.sigs.k8s.io/priority", "operator": "In", "values": ["100"]}]},
            "topologyKey": TOPOLOGY, "namespaceSelector": {}})
    );
    // Both must read back as Kubernetes types.
    for term in [affinity, anti] {
        serde_json::from_value::<k8s_openapi::api::core::v1::PodAffinityTerm>(term).expect("a PodAffinityTerm");
    }
}

#[test]
fn leader_gets_priority_label_and_terms_appended_once() {
    let mut leader = leader();
    // A user's own anti-affinity term stays, and ours is appended after it.
    let theirs = json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"});
    let mut raw_leader = raw(&leader);
    raw_leader["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [theirs]},
        "nodeAffinity": {"x-unknown": 1}});
    leader = serde_json::from_value(raw_leader.clone()).expect("pod");
    let mut out = raw_leader.clone();
    block_on(mutate(&NoReads, &leader, &mut out)).expect("leader is never refused");
    assert_eq!(out["metadata"]["labels"][keys::PRIORITY], "100");
    let (affinity, anti) = leader_terms("key-0", "100", TOPOLOGY);
    let required = "requiredDuringSchedulingIgnoredDuringExecution";
    assert_eq!(out["spec"]["affinity"]["podAffinity"][required], json!([affinity]));
    assert_eq!(out["spec"]["affinity"]["podAntiAffinity"][required], json!([theirs, anti]));
    assert_eq!(out["spec"]["affinity"]["nodeAffinity"], json!({"x-unknown": 1}), "unknown fields kept");
    serde_json::from_value::<Pod>(out.clone()).expect("still a pod");
    // Reinvocation changes nothing.
    let mut again = out.clone();
    block_on(mutate(&NoReads, &leader, &mut again)).expect("again");
    assert_eq!(again, out);
}

#[test]
fn priority_label_goes_on_every_jobset_pod_that_has_a_priority() {
    let plain = with_annotation(leader(), keys::EXCLUSIVE_TOPOLOGY, None);
    let mut out = raw(&plain);
    block_on(mutate(&NoReads, &plain, &mut out)).expect("plain");
    assert_eq!(out["metadata"]["labels"][keys::PRIORITY], "100");
    assert!(out["spec"].get("affinity").is_none(), "no exclusive placement, no affinity");

    let mut no_priority = leader();
    no_priority.spec.as_mut().expect("spec").priority = None;
    let mut out = raw(&no_priority);
    block_on(mutate(&NoReads, &no_priority, &mut out)).expect("no priority");
    assert!(out["metadata"]["labels"].get(keys::PRIORITY).is_none());
    // Go reads the absent label as "": the anti-affinity then matches pods labelled with an empty priority.
    let anti = &out["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["labelSelector"]["matchExpressions"][2]["values"], json!([""]));

    let strategy = with_annotation(leader(), keys::NODE_SELECTOR_STRATEGY, Some("true"));
    let mut out = raw(&strategy);
    block_on(mutate(&NoReads, &strategy, &mut out)).expect("strategy");
    assert_eq!(out, raw(&strategy), "node-selector strategy pods are not touched at all");
}

#[test]
fn follower_selects_its_scheduled_leaders_domain() {
    let reads = reads(vec![scheduled(leader(), "node-a1"), follower()], &[("node-a1", "pool-a")]);
    let follower = follower();
    let mut out = raw(&follower);
    block_on(mutate(&reads, &follower, &mut out)).expect("follower");
    assert_eq!(out["spec"]["nodeSelector"], json!({TOPOLOGY: "pool-a"}));
    assert_eq!(out["metadata"]["labels"][keys::PRIORITY], "100");
    assert!(out["spec"].get("affinity").is_none(), "followers get no affinity");
    // An existing selector entry for the key is overwritten; others stay.
    let mut theirs = raw(&follower);
    theirs["spec"]["nodeSelector"] = json!({TOPOLOGY: "pool-z", "gpu": "h100"});
    block_on(mutate(&reads, &follower, &mut theirs)).expect("follower");
    assert_eq!(theirs["spec"]["nodeSelector"], json!({TOPOLOGY: "pool-a", "gpu": "h100"}));
}

#[test]
fn follower_without_a_usable_leader_is_left_for_the_validating_webhook() {
    let follower = follower();
    for pods in [
        vec![],         // no leader yet
        vec![leader()], // not scheduled
        vec![scheduled(leader(), "node-a1"), scheduled(pod("train-workers-0-0-zzzzz", "0", "0"), "node-b1")], // two
    ] {
        let reads = reads(pods, &[("node-a1", "pool-a"), ("node-b1", "pool-b")]);
        let mut out = raw(&follower);
        block_on(mutate(&reads, &follower, &mut out)).expect("not refused by the mutating webhook");
        assert!(out["spec"].get("nodeSelector").is_none(), "{out}");
    }
    // Reads failing: the same.
    let mut out = raw(&follower);
    block_on(mutate(&NoReads, &follower, &mut out)).expect("not refused");
    assert!(out["spec"].get("nodeSelector").is_none());
}

#[test]
fn follower_of_a_leader_on_a_missing_or_unlabelled_node_is_refused_not_given_an_empty_domain() {
    let follower = follower();
    let gone = reads(vec![scheduled(leader(), "node-gone")], &[]);
    let mut out = raw(&follower);
    assert_eq!(
        block_on(mutate(&gone, &follower, &mut out)),
        Err(Denial { code: 404, reason: "NotFound", message: "nodes \"node-gone\" not found".into() })
    );
    let mut unlabelled = reads(vec![scheduled(leader(), "node-x")], &[]);
    unlabelled.nodes.insert("node-x".into(), BTreeMap::from([("other".to_owned(), "v".to_owned())]));
    assert_eq!(
        block_on(mutate(&unlabelled, &follower, &mut out)),
        Err(Denial::forbidden(format!("node does not have topology label: {TOPOLOGY}")))
    );
}

#[test]
fn leader_lookup_skips_terminating_and_finished_pods_and_other_jobs() {
    let follower = follower();
    let mut terminating = scheduled(pod("train-workers-0-0-old01", "0", "0"), "node-b1");
    terminating.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let mut failed = scheduled(pod("train-workers-0-0-old02", "0", "0"), "node-b1");
    failed.status = Some(serde_json::from_value(json!({"phase": "Failed"})).expect("status"));
    let live = scheduled(leader(), "node-a1");
    let other_job = scheduled(pod("train-workers-1-0-abcde", "1", "0"), "node-c1");
    let not_exclusive =
        with_annotation(scheduled(pod("train-workers-0-0-plain", "0", "0"), "node-c1"), keys::EXCLUSIVE_TOPOLOGY, None);
    let candidates = [terminating, failed, other_job, not_exclusive, live.clone()];
    assert_eq!(find_leader(&follower, &candidates), Ok(&live));

    let two = [live.clone(), scheduled(pod("train-workers-0-0-xxxxx", "0", "0"), "node-a2")];
    assert_eq!(
        find_leader(&follower, &two),
        Err("expected 1 leader pod (train-workers-0-0), but got 2. this is an expected, transient error".into())
    );

    // A leader of an earlier Job of the same name would carry a stale domain.
    let mut stale = live.clone();
    if let Some(owner) = stale.metadata.owner_references.as_mut().and_then(|o| o.first_mut()) {
        owner.uid = "uid-old".into();
    }
    assert_eq!(
        find_leader(&follower, std::slice::from_ref(&stale)),
        Err(format!("follower pod owner UID ({JOB_UID}) != leader pod owner UID (uid-old)"))
    );
    let mut orphan = follower.clone();
    orphan.metadata.owner_references = None;
    assert_eq!(find_leader(&orphan, std::slice::from_ref(&live)), Err("follower pod has no owner reference".into()));
    let mut ownerless = live.clone();
    ownerless.metadata.owner_references = None;
    assert_eq!(
        find_leader(&follower, std::slice::from_ref(&ownerless)),
        Err("leader pod \"train-workers-0-0-abcde\" has no owner reference".into())
    );
    let mut unlabelled = follower.clone();
    unlabelled.metadata.labels.as_mut().expect("labels").remove(keys::JOB_INDEX);
    assert_eq!(find_leader(&unlabelled, &candidates), Err(format!("pod missing label: {}", keys::JOB_INDEX)));
}

#[test]
fn pod_names_lose_only_the_random_suffix() {
    assert_eq!(name_without_suffix("train-workers-0-1-abcde"), Some("train-workers-0-1"));
    assert_eq!(name_without_suffix("my-train-workers-0-1-abcde"), Some("my-train-workers-0-1"));
    assert_eq!(name_without_suffix("a-b-c-d"), None, "fewer than five parts is no JobSet pod");
    assert_eq!(name_without_suffix("nodash"), None);
    assert_eq!(leader_pod_name(&follower()), Ok("train-workers-0-0".into()));
    assert_eq!(
        job_pods_selector(&follower()),
        Ok("jobset.sigs.k8s.io/jobset-name=train,jobset.sigs.k8s.io/replicatedjob-name=workers,\
            jobset.sigs.k8s.io/job-index=0"
            .into())
    );
}

#[test]
fn validating_webhook_refuses_followers_with_upstreams_messages() {
    let with_selector = |p: Pod, selector: Option<Value>| {
        let mut v = raw(&p);
        if let Some(s) = selector {
            v["spec"]["nodeSelector"] = s;
        }
        serde_json::from_value::<Pod>(v).expect("pod")
    };
    let ready = reads(vec![scheduled(leader(), "node-a1")], &[("node-a1", "pool-a")]);
    let check = |reads: &StaticReads, p: &Pod| block_on(validate(reads, p)).map_err(|d| (d.code, d.message));

    assert_eq!(check(&ready, &follower()), Err((403, "follower pod node selector not set".into())));
    assert_eq!(
        check(&ready, &with_selector(follower(), Some(json!({"gpu": "h100"})))),
        Err((403, format!("follower pod node selector for topology domain not found. missing selector: {TOPOLOGY}")))
    );
    let selected = with_selector(follower(), Some(json!({TOPOLOGY: "pool-a"})));
    assert_eq!(check(&ready, &selected), Ok(()));
    let pending = reads(vec![leader()], &[]);
    assert_eq!(
        check(&pending, &selected),
        Err((
            403,
            "leader pod not yet scheduled, not creating follower pod. this is an expected, transient error".into()
        ))
    );
    assert_eq!(
        check(&reads(vec![], &[]), &selected),
        Err((403, "expected 1 leader pod (train-workers-0-0), but got 0. this is an expected, transient error".into()))
    );
    // Leaders, pods without exclusive placement and node-selector-strategy pods are never refused.
    assert_eq!(check(&reads(vec![], &[]), &leader()), Ok(()));
    assert_eq!(check(&reads(vec![], &[]), &with_annotation(follower(), keys::EXCLUSIVE_TOPOLOGY, None)), Ok(()));
    assert_eq!(
        check(&reads(vec![], &[]), &with_annotation(follower(), keys::NODE_SELECTOR_STRATEGY, Some("true"))),
        Ok(())
    );
}

#[test]
fn leader_domain_never_yields_an_empty_value() {
    let labels = BTreeMap::from([(TOPOLOGY.to_owned(), "pool-a".to_owned())]);
    assert_eq!(leader_domain("n", Some(&labels), TOPOLOGY), Ok("pool-a".into()));
    assert_eq!(leader_domain("n", None, TOPOLOGY).map_err(|d| d.code), Err(404));
    assert_eq!(leader_domain("n", Some(&BTreeMap::new()), TOPOLOGY).map_err(|d| d.code), Err(403));
}
