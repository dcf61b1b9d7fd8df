//! What must hold between the rendered objects of the base and of every overlay.

use std::collections::BTreeSet;
use std::path::Path;

use bridge_tests::harness::{bin, repo};
use serde_json::Value;

use super::{
    arg_after, container, effective, kustomizations, mount_of, pod_spec, program, render,
    unix_path, volume, Rendered,
};

/// The sandbox whose socket is `sock` (a path on the node), from bridge.toml.
fn sandbox_listening_on<'a>(cfg: &'a toml::Value, sock: &str) -> &'a toml::Value {
    cfg["sandbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["listen"].as_str() == Some(&format!("unix:{sock}")))
        .unwrap_or_else(|| panic!("no [[sandbox]] listens on unix:{sock}"))
}

/// The node path behind `path` in the DaemonSet's bridge-host container: it must be a
/// hostPath mounted at the same path (so bridge.toml's paths are the node's).
fn host_dir_of(r: &Rendered, path: &str) -> (String, String) {
    let spec = pod_spec(r.daemonset());
    let host = container(spec, "bridge-host");
    let (m, _) = mount_of(host, path);
    let vol = volume(spec, m["name"].as_str().unwrap());
    let hp = vol["hostPath"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: {path} is not on a hostPath", r.dir));
    assert_eq!(
        m["mountPath"], hp,
        "{}: hostPath {hp} mounted at the same path",
        r.dir
    );
    (
        hp.to_owned(),
        vol["hostPath"]["type"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn the_agent_pod_has_no_network_and_its_sidecar_reaches_the_daemonsets_socket() {
    for dir in kustomizations() {
        let r = render(&dir).await;
        let cfg: toml::Value = toml::from_str(&r.config_text()).unwrap();
        for pod in r.agents() {
            let spec = pod_spec(pod);
            let name = pod["metadata"]["name"].as_str().unwrap();
            let at = format!("{dir}: {name}");
            for k in ["hostNetwork", "hostPID", "hostIPC"] {
                assert!(spec[k].is_null() || spec[k] == false, "{at}: {k}");
            }

            // A NetworkPolicy of its namespace selects it and allows nothing either way.
            let labels = &pod["metadata"]["labels"];
            let ns = &pod["metadata"]["namespace"];
            let denying: Vec<&Value> = r
                .all("NetworkPolicy")
                .into_iter()
                .filter(|p| &p["metadata"]["namespace"] == ns)
                .filter(|p| {
                    let sel = &p["spec"]["podSelector"];
                    assert!(sel.get("matchExpressions").is_none(), "matchLabels only");
                    sel["matchLabels"]
                        .as_object()
                        .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v))
                })
                .filter(|p| {
                    let types = p["spec"]["policyTypes"].as_array().unwrap();
                    let empty = |k: &str| p["spec"][k].as_array().is_none_or(Vec::is_empty);
                    types.contains(&"Egress".into())
                        && types.contains(&"Ingress".into())
                        && empty("egress")
                        && empty("ingress")
                })
                .collect();
            assert!(
                !denying.is_empty(),
                "{at}: no NetworkPolicy denies it all ingress and egress"
            );

            // bridge-guest: a native sidecar (an init container that keeps running).
            let guests: Vec<&Value> = spec["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| program(c).ends_with("bridge-guest"))
                .collect();
            assert_eq!(guests.len(), 1, "{at}: bridge-guest as an init container");
            let guest = guests[0];
            assert_eq!(guest["restartPolicy"], "Always", "{at}: a native sidecar");
            assert!(
                spec["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| !program(c).ends_with("bridge-guest")),
                "{at}: the sidecar, not the agent's container"
            );
            assert_eq!(
                arg_after(guest, "--listen").as_deref(),
                Some("127.0.0.1:11434"),
                "{at}: Ollama's address, on the pod's loopback"
            );
            assert_eq!(
                arg_after(guest, "run"),
                None,
                "{at}: the relay alone: the agent is another container"
            );

            // Its socket is the DaemonSet's, through the node's directory.
            let connect = arg_after(guest, "--connect").expect("--connect");
            let inside = Path::new(unix_path(&connect));
            let (m, rel) = mount_of(guest, inside.to_str().unwrap());
            assert_eq!(rel, Path::new(inside.file_name().unwrap()), "{at}");
            assert_eq!(
                Path::new(m["mountPath"].as_str().unwrap()),
                inside.parent().unwrap(),
                "{at}: the socket's directory is mounted, not the socket"
            );
            let vol = volume(spec, m["name"].as_str().unwrap());
            assert_eq!(
                vol["hostPath"]["type"], "Directory",
                "{at}: the directory bridge-host made (never one kubelet creates as root)"
            );
            let node_dir = Path::new(vol["hostPath"]["path"].as_str().unwrap());
            let sock = node_dir.join(inside.file_name().unwrap());
            let sb = sandbox_listening_on(&cfg, sock.to_str().unwrap());
            let (daemon_dir, kind) = host_dir_of(&r, sock.to_str().unwrap());
            assert_eq!(kind, "DirectoryOrCreate", "{at}");
            assert!(
                node_dir.starts_with(&daemon_dir) && node_dir != Path::new(&daemon_dir),
                "{at}: the sandbox's own directory below the DaemonSet's {daemon_dir}"
            );

            // The socket admits the sidecar's user, and only it (and its group).
            let uid = effective(spec, guest, "runAsUser")
                .as_u64()
                .expect("runAsUser");
            let gid = effective(spec, guest, "runAsGroup")
                .as_u64()
                .expect("runAsGroup");
            assert_ne!(uid, 0, "{at}: the sidecar is not root");
            assert_eq!(effective(spec, guest, "runAsNonRoot"), true, "{at}");
            assert_eq!(
                sb.get("socket_owner").and_then(toml::Value::as_str),
                Some(format!("{uid}:{gid}").as_str()),
                "{at}: socket_owner is the sidecar's runAsUser:runAsGroup"
            );
            let mode = u32::from_str_radix(
                sb.get("socket_mode")
                    .and_then(toml::Value::as_str)
                    .unwrap_or("0660"),
                8,
            )
            .unwrap();
            assert_eq!(mode & 0o600, 0o600, "{at}: the owner may connect");
            assert_eq!(mode & 0o007, 0, "{at}: nobody else may");
            let sc = &guest["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{at}"
            );
            assert_eq!(
                spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{at}"
            );
        }
    }
}

#[tokio::test]
async fn the_daemonset_config_paths_privileges_and_metrics_agree() {
    for dir in kustomizations() {
        let r = render(&dir).await;
        let text = r.config_text();
        let cfg: toml::Value = toml::from_str(&text).unwrap();
        let ds = r.daemonset();
        let spec = pod_spec(ds);
        let host = container(spec, "bridge-host");
        let at = dir.as_str();

        // The image (deploy/kubernetes/Dockerfile) has what its containers run.
        let dockerfile =
            std::fs::read_to_string(repo().join("deploy/kubernetes/Dockerfile")).unwrap();
        let copied: Vec<String> = dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix("COPY "))
            .flat_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let (dest, srcs) = words.split_last().unwrap();
                srcs.iter()
                    .map(|s| format!("{dest}{s}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        for pod in r.objs.iter().filter(|o| o.get("spec").is_some()) {
            for c in super::all_containers(pod_spec(pod)) {
                if c["image"] == "ghcr.io/OWNER/ollama-bridge:VERSION" {
                    assert!(
                        copied.contains(&program(c)),
                        "{at}: {} runs {}, not in the image {copied:?}",
                        c["name"],
                        program(c)
                    );
                }
            }
        }

        // bridge-host check-config accepts the ConfigMap's bridge.toml.
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("bridge.toml");
        std::fs::write(&file, &text).unwrap();
        let out = tokio::process::Command::new(bin("bridge-host"))
            .arg("check-config")
            .arg("--config")
            .arg(&file)
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !said.contains("warning"),
            "{at}: {said}"
        );

        // Every socket on the node's directory; the audit log on a hostPath or stdout.
        for sb in cfg["sandbox"].as_array().unwrap() {
            host_dir_of(&r, unix_path(sb["listen"].as_str().unwrap()));
        }
        let audit = cfg["audit"]["path"].as_str().unwrap();
        if audit != "-" {
            let (node, _) = host_dir_of(&r, audit);
            assert_ne!(Path::new(audit).parent().unwrap(), Path::new(&node), "{at}: the audit log's directory is the daemon's own (created and handed over at the drop, so it can reopen it)");
        }

        // Ollama on 127.0.0.1 is the node's only with the node's network.
        let url = cfg["upstream"]["url"].as_str().unwrap();
        let loopback = url.starts_with("http://127.")
            || url.starts_with("http://localhost")
            || url.starts_with("http://[::1]");
        assert_eq!(
            spec["hostNetwork"] == true,
            loopback,
            "{at}: hostNetwork exactly when Ollama is on the node's loopback ({url})"
        );
        if loopback {
            assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet", "{at}");
        }

        // Started as root with just what the drop needs; then nobody, no capabilities.
        let sc = &host["securityContext"];
        assert_eq!(effective(spec, host, "runAsUser"), 0, "{at}");
        let add: BTreeSet<&str> = sc["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            add,
            BTreeSet::from(["CHOWN", "DAC_OVERRIDE", "SETGID", "SETPCAP", "SETUID"]),
            "{at}"
        );
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{at}"
        );
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{at}"
        );
        assert_ne!(
            cfg.get("privileges")
                .and_then(|p| p.get("run_as_root"))
                .and_then(toml::Value::as_bool),
            Some(true),
            "{at}"
        );

        // Metrics: bridge-host's own listener stays a unix socket in the pod; the relay
        // serves it on the pod's IP, on the port the scrape annotations name.
        let metrics = unix_path(cfg["metrics"]["listen"].as_str().unwrap());
        let relay = container(spec, "metrics-relay");
        assert_eq!(
            arg_after(relay, "--connect").as_deref(),
            Some(format!("unix:{metrics}").as_str()),
            "{at}"
        );
        let (m1, _) = mount_of(host, metrics);
        let (m2, _) = mount_of(relay, metrics);
        assert_eq!(m1["name"], m2["name"], "{at}: one volume");
        assert!(
            volume(spec, m1["name"].as_str().unwrap())["emptyDir"].is_object(),
            "{at}: not on the node"
        );
        let ann = &ds["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true", "{at}");
        let port = ann["prometheus.io/port"].as_str().unwrap();
        assert_eq!(
            arg_after(relay, "--listen"),
            Some(format!("$(POD_IP):{port}")),
            "{at}"
        );
        assert_eq!(relay["ports"][0]["containerPort"].to_string(), port, "{at}");
        // A metrics socket would only refuse a hand-off (and be asked again each minute).
        assert_eq!(
            arg_after(relay, "--handoff").as_deref(),
            Some("off"),
            "{at}"
        );
        assert_eq!(
            relay["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP",
            "{at}"
        );
    }
}
