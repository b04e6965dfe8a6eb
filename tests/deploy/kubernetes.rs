//! Kubernetes: `deploy/kubernetes/`.

use super::*;

/// Every manifest file in deploy/kubernetes/, sorted (as `kubectl apply -f DIR` reads them).
fn manifest_files() -> Vec<PathBuf> {
    let dir = Path::new(ROOT).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

/// Every document of every manifest file.
pub(crate) fn manifests() -> Vec<Value> {
    let mut docs = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{file:?}: {e}"));
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

pub(crate) fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub(crate) fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

fn strs(value: &Value) -> Vec<&str> {
    let items = value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"));
    items.iter().map(|v| v.as_str().unwrap()).collect()
}

/// Whether a label selector (a `matchLabels` map) picks `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("selector map");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

/// The tlsedge config in the ConfigMap, parsed as tlsedge parses it.
pub(crate) fn configmap_config(docs: &[Value]) -> RawConfig {
    let text = at(find(docs, "ConfigMap", "tlsedge"), "/data/tlsedge.yaml");
    serde_norway::from_str(text.as_str().unwrap()).expect("the ConfigMap's tlsedge.yaml")
}

fn port_of(addr: &str) -> u64 {
    u64::from(addr.parse::<SocketAddr>().unwrap().port())
}

/// The container port named `name`.
fn container_port(container: &Value, name: &str) -> u64 {
    let ports = container["ports"].as_array().unwrap();
    let port = ports.iter().find(|p| p["name"] == name);
    port.unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// Validates manifests with kubernetes-validate (strict: unknown fields are errors) against
/// the oldest supported and the newest known Kubernetes; the CRD kinds, which it has no schema
/// for (it only warns), against subsets of their CRDs (cert-manager.io/v1 Certificate,
/// monitoring.coreos.com/v1 ServiceMonitor), closed like the API server's strict field
/// validation. Any other unknown kind is an error. One `ok`/`error` line per document.
const VALIDATOR: &str = r#"
import sys, yaml, jsonschema
from kubernetes_validate import utils

STR = {"type": "string"}
STRS = {"type": "array", "items": STR}
MAP = {"type": "object", "additionalProperties": STR}
BOOL = {"type": "boolean"}
DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
def closed(properties, required=()):
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}
def resource(api_version, kind, spec):
    metadata = closed({"name": STR, "namespace": STR, "labels": MAP, "annotations": MAP}, ["name"])
    return closed({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                   "metadata": metadata, "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])
CERTIFICATE = resource("cert-manager.io/v1", "Certificate", closed({
    "secretName": STR, "commonName": STR, "dnsNames": STRS, "ipAddresses": STRS,
    "duration": STR, "renewBefore": STR, "usages": STRS,
    "issuerRef": closed({"name": STR, "kind": STR, "group": STR}, ["name"]),
    "privateKey": closed({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                          "encoding": {"enum": ["PKCS1", "PKCS8"]},
                          "rotationPolicy": {"enum": ["Never", "Always"]},
                          "size": {"type": "integer"}}),
    "secretTemplate": closed({"annotations": MAP, "labels": MAP}),
}, ["issuerRef", "secretName"]))
ENDPOINT = closed({"port": STR, "targetPort": {"type": ["integer", "string"]}, "path": STR,
                   "scheme": {"enum": ["http", "https"]}, "interval": DURATION,
                   "scrapeTimeout": DURATION, "honorLabels": BOOL})
SERVICE_MONITOR = resource("monitoring.coreos.com/v1", "ServiceMonitor", closed({
    "endpoints": {"type": "array", "items": ENDPOINT, "minItems": 1},
    "selector": closed({"matchLabels": MAP}),
    "namespaceSelector": closed({"any": BOOL, "matchNames": STRS}),
    "jobLabel": STR, "targetLabels": STRS, "podTargetLabels": STRS,
}, ["endpoints", "selector"]))
CRDS = {("cert-manager.io/v1", "Certificate"): CERTIFICATE,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR}

versions = [sys.argv[1], utils.latest_version()]
failed = False
for path in sys.argv[2:]:
    with open(path) as f:
        docs = [doc for doc in yaml.safe_load_all(f) if doc]
    for doc in docs:
        what = "%s %s/%s" % (path, doc.get("kind"), (doc.get("metadata") or {}).get("name"))
        schema = CRDS.get((doc.get("apiVersion"), doc.get("kind")))
        try:
            if schema is not None:
                jsonschema.Draft202012Validator(schema).validate(doc)
                print("ok %s (CRD subset schema)" % what)
            else:
                for version in versions:
                    utils.validate(doc, version, strict=True)
                print("ok %s (Kubernetes %s)" % (what, ", ".join(versions)))
        except jsonschema.ValidationError as e:
            failed = True
            print("error %s: %s: %s" % (what, ".".join(map(str, e.path)), e.message))
        except utils.SchemaNotFoundError as e:
            failed = True
            print("error %s: %s" % (what, e.message))
sys.exit(1 if failed else 0)
"#;

/// Runs [`VALIDATOR`] on `files`; `None` (skipped) without python3 and kubernetes-validate.
fn validate(files: &[PathBuf]) -> Option<Output> {
    let purpose = "Kubernetes manifest validation";
    if !tool("python3", purpose) {
        return None;
    }
    let probe = Command::new("python3")
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .output()
        .unwrap();
    if !available(probe.status.success(), "kubernetes-validate (pip)", purpose) {
        return None;
    }
    Some(run(Command::new("python3")
        .args(["-c", VALIDATOR, OLDEST_KUBERNETES])
        .args(files)))
}

#[test]
fn kubernetes_manifests_validate_against_api_and_crd_schemas() {
    let Some(out) = validate(&manifest_files()) else {
        return;
    };
    let report = output(&out);
    assert!(out.status.success(), "{report}");
    let ok: Vec<&str> = report.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(ok.len(), manifests().len(), "every document:\n{report}");
    for crd in ["Certificate/shop-example-com", "ServiceMonitor/tlsedge"] {
        let line = ok.iter().find(|l| l.contains(crd)).expect(crd);
        assert!(line.ends_with("(CRD subset schema)"), "{line}");
    }
}

#[test]
fn kubernetes_validation_rejects_a_wrong_field_in_each_kind_of_schema() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: d }\nspec:\n  \
                replicas: two\n  selector: { matchLabels: { a: b } }\n  template:\n    \
                metadata: { labels: { a: b } }\n    spec: { containers: [{ name: c, image: i }] }\n\
                ---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: { name: c }\n\
                spec: { secretName: s, dnsName: [a.test], issuerRef: { name: i } }\n\
                ---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\n\
                metadata: { name: m }\nspec: { selector: { matchLabels: { a: b } } }\n\
                ---\napiVersion: example.com/v1\nkind: Unknown\nmetadata: { name: u }\n";
    write(&broken, text);
    let Some(out) = validate(&[broken]) else {
        return;
    };
    let report = output(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("error ")).collect();
    assert_eq!(errors.len(), 4, "{report}");
    for (line, needle) in errors
        .iter()
        .zip(["replicas", "dnsName", "endpoints", "Unknown"])
    {
        assert!(line.contains(needle), "{line} should name {needle}");
    }
}

#[test]
fn kubernetes_deployment_probes_drains_and_runs_unprivileged() {
    let docs = manifests();
    let config = configmap_config(&docs);
    let pod = at(find(&docs, "Deployment", "tlsedge"), "/spec/template/spec");
    let container = &pod["containers"][0];
    let [RawListener::Addr(listener)] = config.listeners.as_slice() else {
        panic!("one plain listener: {:?}", config.listeners);
    };
    assert_eq!(container_port(container, "https"), port_of(listener));
    let admin = config.admin.bind.as_deref().expect("admin listener");
    assert_eq!(container_port(container, "admin"), port_of(admin));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(container[probe]["httpGet"]["port"], "admin");
    }
    // The grace period runs from the start of preStop: it must cover preStop and the drain.
    let pre_stop = at(container, "/lifecycle/preStop/sleep/seconds")
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > pre_stop + config.timeouts.drain.as_secs(),
        "terminationGracePeriodSeconds {grace} ≤ preStop {pre_stop} + drain {:?}",
        config.timeouts.drain
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(pod["automountServiceAccountToken"], false);
    for resource in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
        at(&container["resources"], resource);
    }
}

#[test]
fn kubernetes_services_policy_and_monitor_reach_the_right_ports() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "tlsedge");
    let namespace = &deployment["metadata"]["namespace"];
    let labels = at(deployment, "/spec/template/metadata/labels");
    let container = at(deployment, "/spec/template/spec/containers/0");
    let services: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Service").collect();
    for service in &services {
        assert!(selects(&service["spec"]["selector"], labels), "{service}");
        for port in service["spec"]["ports"].as_array().unwrap() {
            container_port(container, port["targetPort"].as_str().unwrap());
        }
    }
    let https = find(&docs, "Service", "tlsedge");
    assert_eq!(https["spec"]["ports"][0]["port"], 443);
    let pdb = find(&docs, "PodDisruptionBudget", "tlsedge");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));

    let policy = find(&docs, "NetworkPolicy", "tlsedge");
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        labels
    ));
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let rule = |port: &str| {
        rules
            .iter()
            .find(|r| r["ports"][0]["port"] == port)
            .unwrap()
    };
    assert!(rule("https").get("from").is_none(), "https from anywhere");
    let from = rule("admin")["from"].as_array().unwrap();
    assert_eq!(from.len(), 1, "admin from one peer only: {from:?}");
    let allowed = at(
        &from[0],
        "/namespaceSelector/matchLabels/kubernetes.io~1metadata.name",
    );

    // Prometheus scrapes the admin Service, once, from the namespace the policy lets in.
    let monitor = find(&docs, "ServiceMonitor", "tlsedge");
    assert_eq!(&monitor["metadata"]["namespace"], allowed);
    assert!(
        strs(&monitor["spec"]["namespaceSelector"]["matchNames"])
            .contains(&namespace.as_str().unwrap())
    );
    let chosen: Vec<&&Value> = services
        .iter()
        .filter(|s| {
            selects(
                &monitor["spec"]["selector"]["matchLabels"],
                &s["metadata"]["labels"],
            )
        })
        .collect();
    assert_eq!(chosen.len(), 1, "one Service: {chosen:?}");
    let port = &monitor["spec"]["endpoints"][0]["port"];
    let ports = chosen[0]["spec"]["ports"].as_array().unwrap();
    let port = ports
        .iter()
        .find(|p| &p["name"] == port)
        .expect("the endpoint's port");
    assert_eq!(port["targetPort"], "admin");
}

/// The CronJob's `rotate` step, run as its pod would run it: the Secret volume holding
/// `current` (`None`: no key yet), an empty work volume, `tlsedge` on PATH. Returns the key
/// file the `apply` step patches into the Secret.
fn rotate_once(docs: &[Value], current: Option<&str>) -> String {
    let pod = at(
        find(docs, "CronJob", "tlsedge-ticket-keys"),
        "/spec/jobTemplate/spec/template/spec",
    );
    let tmp = tempfile::tempdir().unwrap();
    let local = |path: &str| tmp.path().join(path.trim_start_matches('/'));
    let rotate = &pod["initContainers"][0];
    let mut script = rotate["args"][0].as_str().unwrap().to_owned();
    for mount in rotate["volumeMounts"].as_array().unwrap() {
        let path = mount["mountPath"].as_str().unwrap();
        std::fs::create_dir_all(local(path)).unwrap();
        script = script.replace(&format!("{path}/"), &format!("{}/", local(path).display()));
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"]);
        let is_secret = volume.unwrap()["secret"]["secretName"] == "tlsedge-ticket-keys";
        if let (true, Some(keys)) = (is_secret, current) {
            write(&local(path).join("tickets.keys"), keys);
        }
    }
    let path = format!(
        "{}:{}",
        Path::new(BIN).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let command = strs(&rotate["command"]);
    let out = run(Command::new(command[0])
        .args(&command[1..])
        .arg(&script)
        .env("PATH", path));
    assert!(out.status.success(), "{}", output(&out));
    let apply = strs(&pod["containers"][0]["args"]);
    let patch = apply
        .iter()
        .find_map(|a| a.strip_prefix("--patch-file="))
        .unwrap();
    let patch: Value =
        serde_json::from_str(&std::fs::read_to_string(local(patch)).unwrap()).unwrap();
    let encoded = at(&patch, "/data/tickets.keys").as_str().unwrap();
    let keys = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    String::from_utf8(keys).unwrap()
}

/// The key of each key line (newest first), without comments or creation times.
fn keys(file: &str) -> Vec<String> {
    let lines = file.lines().map(str::trim);
    let lines = lines.filter(|l| !l.is_empty() && !l.starts_with('#'));
    lines
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn kubernetes_ticket_cronjob_prepends_a_key_and_keeps_three() {
    let docs = manifests();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    for round in 1..=4 {
        let file = rotate_once(&docs, current.as_deref());
        let now = keys(&file);
        assert_eq!(now.len(), round.min(3), "round {round}:\n{file}");
        assert!(seen.insert(now[0].clone()), "a fresh key first");
        if let Some(before) = &current {
            assert_eq!(
                now[1..],
                keys(before)[..now.len() - 1],
                "the older keys follow"
            );
        }
        current = Some(file);
    }
}

#[test]
fn kubernetes_ticket_cronjob_may_patch_only_its_secret_and_needs_no_shell_in_kubectl() {
    let docs = manifests();
    let cronjob = find(&docs, "CronJob", "tlsedge-ticket-keys");
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    let pod = at(cronjob, "/spec/jobTemplate/spec/template/spec");
    let deployment = at(find(&docs, "Deployment", "tlsedge"), "/spec/template/spec");
    let volumes = deployment["volumes"].as_array().unwrap();
    let tickets = volumes.iter().find(|v| v["name"] == "tickets").unwrap();
    let secret = tickets["secret"]["secretName"].as_str().unwrap();
    find(&docs, "Secret", secret);

    let apply = &pod["containers"][0];
    assert!(strs(&apply["command"])[0].ends_with("/kubectl"));
    assert_eq!(
        strs(&apply["args"])[..4],
        ["patch", "secret", secret, "--type=merge"]
    );
    let all = [&pod["initContainers"], &pod["containers"]];
    for container in all.iter().flat_map(|c| c.as_array().unwrap()) {
        let image = container["image"].as_str().unwrap();
        let program = strs(&container["command"])[0];
        if image.contains("kubectl") {
            assert!(
                program.ends_with("/kubectl"),
                "no shell in the kubectl image"
            );
        } else {
            assert_eq!(container["image"], deployment["containers"][0]["image"]);
        }
    }

    let role = find(&docs, "Role", "tlsedge-ticket-rotator");
    let [rule] = role["rules"].as_array().unwrap().as_slice() else {
        panic!("one rule: {role}");
    };
    assert_eq!(strs(&rule["apiGroups"]), [""]);
    assert_eq!(strs(&rule["resources"]), ["secrets"]);
    assert_eq!(strs(&rule["resourceNames"]), [secret]);
    let verbs = strs(&rule["verbs"]);
    assert!(verbs.contains(&"patch"), "{verbs:?}");
    assert!(
        verbs.iter().all(|v| ["get", "patch", "update"].contains(v)),
        "{verbs:?}"
    );
    let binding = find(&docs, "RoleBinding", "tlsedge-ticket-rotator");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        cronjob["metadata"]["namespace"]
    );
}

/// What the tlsedge container sees under /etc/tlsedge, laid out below `root`: the ConfigMap's
/// files (paths rewritten to `root`), the Secret cert-manager writes for the Certificate, and
/// the ticket-key Secret as the CronJob fills it.
fn pod_files(docs: &[Value], root: &Path) {
    let spec = at(find(docs, "Deployment", "tlsedge"), "/spec/template/spec");
    let volumes = spec["volumes"].as_array().unwrap();
    for mount in spec["containers"][0]["volumeMounts"].as_array().unwrap() {
        let path = mount["mountPath"].as_str().unwrap();
        let dir = root.join(
            path.strip_prefix("/etc/tlsedge/")
                .expect("under /etc/tlsedge"),
        );
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        if let Some(name) = volume.pointer("/configMap/name") {
            let map = find(docs, "ConfigMap", name.as_str().unwrap());
            for (file, text) in map["data"].as_object().unwrap() {
                let text = text
                    .as_str()
                    .unwrap()
                    .replace("/etc/tlsedge/", &format!("{}/", root.display()));
                write(&dir.join(file), &text);
            }
            continue;
        }
        let secret = at(volume, "/secret/secretName");
        if let Some(cert) = docs
            .iter()
            .find(|d| d["kind"] == "Certificate" && &d["spec"]["secretName"] == secret)
        {
            let names = strs(&cert["spec"]["dnsNames"]);
            let kind = match cert["spec"]["privateKey"]["algorithm"].as_str() {
                Some("RSA") => KeyKind::Rsa,
                _ => KeyKind::Ecdsa,
            };
            let ca = Ca::new("cert-manager test issuer").unwrap();
            let issued = ca.issue(&names, kind).unwrap();
            write(&dir.join("tls.crt"), &issued.cert_pem);
            write(&dir.join("tls.key"), &issued.key_pem);
            write(&dir.join("ca.crt"), &ca.cert_pem());
            set_mode(&dir.join("tls.key"), 0o440);
        } else {
            assert_eq!(secret, "tlsedge-ticket-keys", "a Secret nobody writes");
            let keys = rotate_once(docs, None);
            for item in volume["secret"]["items"].as_array().unwrap() {
                let file = dir.join(item["path"].as_str().unwrap());
                write(&file, &keys);
                set_mode(&file, 0o440);
            }
        }
    }
}

#[test]
fn kubernetes_config_passes_tlsedge_check_with_the_pods_files() {
    let docs = manifests();
    let root = tempfile::tempdir().unwrap();
    pod_files(&docs, root.path());
    let args = strs(at(
        find(&docs, "Deployment", "tlsedge"),
        "/spec/template/spec/containers/0/args",
    ));
    let config = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let config = root
        .path()
        .join(config.strip_prefix("/etc/tlsedge/").unwrap());
    let out = run(Command::new(BIN).arg("check").arg("--config").arg(&config));
    let report = output(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains(": ok (1 hosts, "), "{report}");
    // A Secret volume with fsGroup is always group-readable (0440, root:fsGroup): a key
    // readable by the process's own group is not warned about.
    assert!(report.contains(", 0 warnings)"), "{report}");
}
