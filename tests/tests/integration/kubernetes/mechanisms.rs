//! The manifests' mechanisms without a cluster, with the base's own values: bridge-host
//! started as root with exactly the DaemonSet's capabilities and no_new_privs (`setpriv`),
//! the ConfigMap's bridge.toml with its node paths moved into a temp dir; the metrics
//! relay as root without capabilities; and a pod: a network namespace of its own (the
//! "pause" process, `unshare --net`) that the sidecar bridge-guest and the agent join
//! (`nsenter --net`), each in its own mount namespace (bubblewrap, as containers are),
//! each as the pod's user, only the sidecar seeing the socket directory, read-only as
//! mounted. The agent's request to 127.0.0.1:11434 reaches the test double through
//! bridge-host; the double's port on the host is unreachable from the pod.

use std::path::Path;
use std::process::Stdio;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{bin, guest_bin, json_output, require_root, Guest, Host};
use bridge_tests::http::{collect, req, send_tcp, GUARD};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{arg_after, container, effective, mount_of, pod_spec, render, volume};
use crate::sandbox_e2e::{assert_probe_reached_ollama_only_through_the_bridge, bwrap};

/// The "pause" container: holds a fresh network namespace with loopback up (Python's
/// stdlib: SIOCGIFFLAGS / SIOCSIFFLAGS on lo) until its stdin closes.
const PAUSE: &str = r#"
import fcntl, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
print("ready", flush=True)
sys.stdin.read()
"#;

/// `setpriv` arguments that start a process as `uid:gid` with no capability and
/// no_new_privs, as a container with `capabilities: {drop: [ALL]}` and
/// `allowPrivilegeEscalation: false` is.
fn as_user(uid: u64, gid: u64) -> Vec<String> {
    [
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        "--no-new-privs".into(),
        "--inh-caps=-all".into(),
        "--bounding-set=-all".into(),
    ]
    .into()
}

/// The command line of a container of the pod joined to network namespace `netns`:
/// its own mount and PID namespaces (so that killing it ends the process that changed
/// its user too) with the host's root read-only, a private /run holding `binds`
/// (source, target, read-only), run as `user`.
fn in_pod(netns: &str, binds: &[(&Path, &str, bool)], user: &[String]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={netns}"))
        .arg("--")
        .arg(bwrap())
        .args([
            "--die-with-parent",
            "--unshare-pid",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
        ])
        .args(["--tmpfs", "/run"]);
    for (src, dst, ro) in binds {
        c.arg(if *ro { "--ro-bind" } else { "--bind" })
            .arg(src)
            .arg(dst);
    }
    c.arg("--").args(user);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_reaches_ollama_through_the_daemonset_as_the_manifests_set_it_up() {
    require_root("it starts bridge-host as root with the DaemonSet's capabilities, and namespaces");
    let r = render("base").await;
    let ds = pod_spec(r.daemonset());
    let host_c = container(ds, "bridge-host");
    let caps: Vec<String> = host_c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("+{}", c.as_str().unwrap().to_lowercase()))
        .collect();
    let pod = r.agents()[0];
    let spec = pod_spec(pod);
    let sidecar = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["restartPolicy"] == "Always")
        .unwrap();
    let uid = effective(spec, sidecar, "runAsUser").as_u64().unwrap();
    let gid = effective(spec, sidecar, "runAsGroup").as_u64().unwrap();

    // The node: the DaemonSet's hostPath directories (which kubelet creates as root) in a
    // temp dir, the emptyDir for metrics, the config with those paths.
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().display().to_string();
    let mut text = r.config_text();
    for prefix in [
        "/run/ollama-bridge-metrics/",
        "/run/ollama-bridge/",
        "/var/log/ollama-bridge/",
    ] {
        let moved = format!("{node}/node{prefix}");
        std::fs::create_dir_all(&moved).unwrap();
        text = text
            .replace(&format!("\"{prefix}"), &format!("\"{moved}"))
            .replace(&format!("unix:{prefix}"), &format!("unix:{moved}"));
    }
    let upstream = toml::from_str::<toml::Value>(&text).unwrap()["upstream"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    text = text.replace(&upstream, &double.url());
    assert!(
        !text.contains("\"/run/") && !text.contains("unix:/run/") && !text.contains("\"/var/"),
        "{text}"
    );
    let mut wrapper = vec!["setpriv", "--no-new-privs", "--inh-caps=-all"];
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    wrapper.push(&bounding);
    let host = Host::start_wrapped(dir, &text, &wrapper, &[]).await;
    host.wait_log("privileges dropped: running as user nobody")
        .await;

    // The socket as the sidecar's user needs it.
    let cfg: toml::Value = toml::from_str(&text).unwrap();
    let sock = cfg["sandbox"][0]["listen"]
        .as_str()
        .unwrap()
        .strip_prefix("unix:")
        .unwrap()
        .to_owned();
    let sock_dir = Path::new(&sock).parent().unwrap().to_owned();
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&sock).unwrap();
        assert_eq!(
            (m.uid() as u64, m.gid() as u64, m.mode() & 0o777),
            (uid, gid, 0o660)
        );
    }

    // The metrics relay: root without capabilities, connecting to the 0600 root socket.
    let metrics = cfg["metrics"]["listen"].as_str().unwrap().to_owned();
    let relay = Guest::start_wrapped(
        &[
            "setpriv",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
        &["--connect", &metrics, "--handoff", "off"],
    )
    .await;
    let (status, _, body) = collect(
        send_tcp(relay.addr, req("GET", "/metrics", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("ollama_bridge_"),
        "metrics through the relay"
    );

    // The pod's network namespace.
    let mut pause = Command::new("unshare");
    pause
        .args(["--net", "--", "python3", "-c", PAUSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut pause = pause.spawn().expect("unshare --net python3");
    let mut lines = BufReader::new(pause.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .expect("pause ready")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"), "the pause process");
    let netns = format!("/proc/{}/ns/net", pause.id().unwrap());

    // The sidecar, with the manifest's arguments and mount.
    let connect = arg_after(sidecar, "--connect").unwrap();
    let inside = connect.strip_prefix("unix:").unwrap();
    let (m, _) = mount_of(sidecar, inside);
    let ro = m["readOnly"] == true;
    assert_eq!(
        volume(spec, m["name"].as_str().unwrap())["hostPath"]["type"],
        "Directory"
    );
    let guest_exe = guest_bin();
    let mut user = as_user(uid, gid);
    user.push("/run/bin/bridge-guest".into());
    user.extend(
        sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let mut guest = in_pod(
        &netns,
        &[
            (&sock_dir, m["mountPath"].as_str().unwrap(), ro),
            (&guest_exe, "/run/bin/bridge-guest", true),
        ],
        &user,
    );
    let mut guest = guest
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut glines = BufReader::new(guest.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(GUARD, glines.next_line())
        .await
        .expect("sidecar ready")
        .unwrap();
    assert_eq!(line, Some(format!("relaying 127.0.0.1:11434 -> {connect}")));

    // The agent: same network namespace, no socket directory, the pod's user.
    let probe = bin("sandbox-probe");
    let mut user = as_user(uid, gid);
    user.push("/run/bin/sandbox-probe".into());
    user.extend(["--direct".into(), double.addr().port().to_string()]);
    let mut agent = in_pod(&netns, &[(&probe, "/run/bin/sandbox-probe", true)], &user);
    let (v, _) = json_output(&mut agent, "the agent in the pod's network namespace").await;
    assert_probe_reached_ollama_only_through_the_bridge(&v);

    // bridge-host saw the sidecar's user (the kernel's SO_PEERCRED), sandbox "agent".
    let audit = host.audit_records();
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert!(
        audit
            .iter()
            .all(|a| a["sandbox"] == "agent" && a["peer"]["uid"] == uid),
        "{audit:?}"
    );
    drop(pause.stdin.take());
}
