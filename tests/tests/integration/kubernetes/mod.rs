//! deploy/kubernetes as rendered by scripts/render-kubernetes (what `kubectl apply -k`
//! applies): the invariants between its objects (`invariants`), and the mechanisms the
//! manifests rely on, run without a cluster (`mechanisms`): the DaemonSet's security
//! context under `setpriv`, and a pod's shared network namespace — a sidecar bridge-guest
//! and an agent in their own mount namespaces, joined into one network namespace with
//! `unshare`/`nsenter` and bubblewrap, the socket directory bind-mounted from the host.
//! (Schema validation: scripts/check-kubernetes.)

mod invariants;
mod mechanisms;

use std::path::{Path, PathBuf};

use bridge_tests::harness::{json_output, python, repo};
use serde_json::Value;

/// Every kustomization: the base and each overlay, relative to deploy/kubernetes.
fn kustomizations() -> Vec<String> {
    let mut dirs = vec!["base".to_owned()];
    let overlays = repo().join("deploy/kubernetes/overlays");
    for e in std::fs::read_dir(&overlays).unwrap_or_else(|e| panic!("{}: {e}", overlays.display()))
    {
        let e = e.unwrap();
        dirs.push(format!("overlays/{}", e.file_name().to_string_lossy()));
    }
    assert!(dirs.len() >= 2, "the base and at least one overlay");
    dirs
}

/// The objects of deploy/kubernetes/`dir`, rendered by the tests' Python (it needs PyYAML,
/// which scripts/test installs into tests/clients/.venv).
async fn render(dir: &str) -> Rendered {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(repo().join("scripts/render-kubernetes"))
        .arg("--json")
        .arg(repo().join("deploy/kubernetes").join(dir));
    let (v, _) = json_output(&mut cmd, &format!("scripts/render-kubernetes {dir}")).await;
    Rendered {
        dir: dir.to_owned(),
        objs: v.as_array().expect("a JSON array").clone(),
    }
}

struct Rendered {
    dir: String,
    objs: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objs.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .into_iter()
            .filter(|o| o["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "{}: one {kind} {name}", self.dir);
        found[0]
    }

    fn daemonset(&self) -> &Value {
        self.one("DaemonSet", "bridge-host")
    }

    /// bridge.toml as the DaemonSet's bridge-host container reads it: the ConfigMap behind
    /// the volume mounted where `--config` points.
    fn config_text(&self) -> String {
        let spec = pod_spec(self.daemonset());
        let host = container(spec, "bridge-host");
        let path = arg_after(host, "--config").expect("bridge-host serve --config PATH");
        let (mount, rel) = mount_of(host, &path);
        let vol = volume(spec, mount["name"].as_str().unwrap());
        let cm = vol["configMap"]["name"]
            .as_str()
            .expect("a configMap volume");
        let ns = self.daemonset()["metadata"]["namespace"].as_str();
        let obj = self.one("ConfigMap", cm);
        assert_eq!(
            obj["metadata"]["namespace"].as_str(),
            ns,
            "the ConfigMap is in the DaemonSet's namespace"
        );
        obj["data"][rel.to_str().unwrap()]
            .as_str()
            .unwrap_or_else(|| panic!("{}: ConfigMap {cm} has no {}", self.dir, rel.display()))
            .to_owned()
    }

    /// The pods that run bridge-guest as a sidecar (the agent examples).
    fn agents(&self) -> Vec<&Value> {
        let agents: Vec<&Value> = self
            .objs
            .iter()
            .filter(|o| o.get("spec").is_some() && o["kind"] != "DaemonSet")
            .filter(|o| {
                let spec = pod_spec(o);
                all_containers(spec).any(|c| program(c).ends_with("bridge-guest"))
            })
            .collect();
        assert!(
            !agents.is_empty(),
            "{}: an agent pod with bridge-guest",
            self.dir
        );
        agents
    }
}

/// A Pod's spec, or a workload's pod template spec.
fn pod_spec(o: &Value) -> &Value {
    if o["kind"] == "Pod" {
        &o["spec"]
    } else {
        &o["spec"]["template"]["spec"]
    }
}

fn all_containers(spec: &Value) -> impl Iterator<Item = &Value> {
    spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().into_iter().flatten())
}

fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    all_containers(spec)
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The container's command line: command, then args.
fn argv(c: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| c[*k].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn program(c: &Value) -> String {
    argv(c).first().cloned().unwrap_or_default()
}

fn arg_after(c: &Value, flag: &str) -> Option<String> {
    let a = argv(c);
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1).cloned())
}

fn volume<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volume mount of `c` that holds `path` (the deepest), and `path` relative to it.
fn mount_of<'a>(c: &'a Value, path: &str) -> (&'a Value, PathBuf) {
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let rel = Path::new(path)
                .strip_prefix(m["mountPath"].as_str()?)
                .ok()?;
            Some((m, rel.to_owned()))
        })
        .max_by_key(|(m, _)| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("{}: nothing mounted over {path}", c["name"]))
}

/// A security context setting as it applies to `c`: its own, else the pod's.
fn effective<'a>(spec: &'a Value, c: &'a Value, key: &str) -> &'a Value {
    match &c["securityContext"][key] {
        Value::Null => &spec["securityContext"][key],
        v => v,
    }
}

/// `unix:PATH` → PATH.
fn unix_path(addr: &str) -> &str {
    addr.strip_prefix("unix:")
        .unwrap_or_else(|| panic!("{addr} is not a unix: address"))
}
