//! Operating without guesswork: the host's `/_bridge/status`, `bridge-guest doctor`
//! pinpointing each broken hop with its own message and exit code, `bridge-host status`.

use std::os::unix::process::CommandExt;
use std::process::Output;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{
    bin, config, copy_for_others, dead_upstream, guest_bin, require_root, socket, Host,
};
use bridge_tests::http::{bridge_status, collect, req, send_unix, GUARD};
use serde_json::Value;

const SANDBOX: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]";
const EXTRA: &str = "[model.\"qwen2.5:7b\"]\nnum_ctx = 16384\n";

async fn doctor(connect: &str, extra: &[&str], uid: Option<u32>) -> (Option<i32>, String) {
    // Run as another user, the guest must be readable by it wherever the build is.
    let copy = uid.map(|_| copy_for_others(&guest_bin()));
    let guest = copy.as_ref().map_or_else(guest_bin, |(_, p)| p.clone());
    let run = || {
        let mut cmd = std::process::Command::new(&guest);
        cmd.args(["doctor", "--listen", "127.0.0.1:0", "--connect", connect])
            .args(extra);
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        tokio::process::Command::from(cmd).output()
    };
    // A fresh copy can be "text file busy" for a moment: a child another test forks
    // while the copy is written holds its descriptor until that child execs.
    let mut tries = 0;
    let out: Output = loop {
        let r = tokio::time::timeout(GUARD, run())
            .await
            .expect("doctor finished within the guard time");
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            r => break r.unwrap(),
        }
    };
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn unix(host: &Host) -> String {
    format!("unix:{}", socket(host, "agent").display())
}

#[tokio::test]
async fn status_endpoint_is_answered_by_the_host() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", SANDBOX)], EXTRA)).await;
    let (s, _, body) = collect(
        send_unix(&socket(&host, "agent"), req("GET", "/_bridge/status", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["bridge"], "ollama-bridge");
    assert_eq!(v["sandbox"], "agent");
    assert_eq!(v["models"], serde_json::json!(["qwen2.5:7b", "llama3.2:*"]));
    assert_eq!(v["upstream"]["reachable"], true);
    assert_eq!(v["upstream"]["ollama_version"], "0.33.0");
    let avail: Vec<&str> = v["available_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(avail, ["qwen2.5:7b", "llama3.2:3b"]);
    assert_eq!(v["available_models"][0]["num_ctx_policy"]["num_ctx"], 16384);
    assert!(
        !String::from_utf8_lossy(&body).contains(&double.addr().port().to_string()),
        "no upstream address"
    );
    // It was never forwarded as such, and it is audited.
    assert!(double
        .requests()
        .iter()
        .all(|r| !r.path.contains("_bridge")));
    assert_eq!(host.audit_records().last().unwrap()["endpoint"], "bridge");
}

#[tokio::test]
async fn doctor_passes_every_hop_of_a_working_chain() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", SANDBOX)], "")).await;
    let (code, out) = doctor(&unix(&host), &["--model", "qwen2.5:7b"], None).await;
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "is free",
        "exists",
        "answers at",
        "Ollama 0.33.0 is reachable",
        "is allowed",
        "loads",
        "ok    hand-off agreed",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("FAIL"));
    // With the hand-off off on the host, doctor says so and still passes.
    let off = format!("{SANDBOX}\nhandoff = false");
    let host = Host::start(&config(&double.url(), &[("agent", &off)], "")).await;
    let (code, out) = doctor(&unix(&host), &[], None).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("info  hand-off refused"), "{out}");
}

#[tokio::test]
async fn doctor_names_the_missing_socket() {
    let t = tempfile::tempdir().unwrap();
    let (code, out) = doctor(
        &format!("unix:{}/none/ollama.sock", t.path().display()),
        &[],
        None,
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("FAIL  socket") && out.contains("bind-mount"),
        "{out}"
    );
}

#[tokio::test]
async fn doctor_names_wrong_permissions() {
    require_root("doctor runs as uid 65534");
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("agent", &format!("{SANDBOX}\nsocket_mode = \"0600\""))],
        "",
    ))
    .await;
    let (code, out) = doctor(&unix(&host), &[], Some(65534)).await;
    assert_eq!(code, Some(3), "{out}");
    // The socket's own directory (0750, root's: no socket_owner) stops uid 65534.
    let sock_dir = socket(&host, "agent")
        .parent()
        .unwrap()
        .display()
        .to_string();
    assert!(
        out.contains(&format!(
            "uid 65534 cannot reach it: {sock_dir} is not searchable by it (owned by 0:0 mode 0750)"
        )),
        "{out}"
    );
    assert!(out.contains("fix: set socket_owner"), "{out}");
}

#[tokio::test]
async fn doctor_names_the_directory_its_user_cannot_pass() {
    require_root("doctor runs as uid 65534; the socket is handed to it");
    use std::os::unix::fs::PermissionsExt;
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
    // The trap: run/ exists, root's and closed (0750), and the sandbox's own
    // directory below it is handed to uid 65534, who cannot pass run/.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, PermissionsExt::from_mode(0o750)).unwrap();
    let cfg = config(&double.url(), &[], "")
        + "[[sandbox]]\nname = \"agent\"\nlisten = \"unix:{dir}/run/agent/ollama.sock\"\n\
           socket_owner = \"65534:65534\"\nmodels = [\"qwen2.5:7b\"]\n";
    let host = Host::start_in(dir, &cfg, &[]).await;
    let connect = format!("unix:{}", host.path("run/agent/ollama.sock").display());

    let (code, out) = doctor(&connect, &[], Some(65534)).await;
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(&format!(
            "may exist, but uid 65534 cannot reach it: {} is not searchable by it (owned by 0:0 mode 0750)",
            run.display()
        )) && out.contains(&format!("chmod o+x {}", run.display())),
        "{out}"
    );

    // The fix it names is the fix: with run/ passable, every hop is fine.
    std::fs::set_permissions(&run, PermissionsExt::from_mode(0o711)).unwrap();
    let (code, out) = doctor(&connect, &[], Some(65534)).await;
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn doctor_names_a_stopped_host() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("ollama.sock");
    drop(std::os::unix::net::UnixListener::bind(&p).unwrap()); // a stale socket file
    let (code, out) = doctor(&format!("unix:{}", p.display()), &[], None).await;
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("Connection refused") && out.contains("start bridge-host"),
        "{out}"
    );
}

#[tokio::test]
async fn doctor_names_a_stopped_ollama() {
    let host = Host::start(&config(&dead_upstream(), &[("agent", SANDBOX)], "")).await;
    let (code, out) = doctor(&unix(&host), &[], None).await;
    assert_eq!(code, Some(6), "{out}");
    assert!(
        out.contains("Ollama is not reachable") && out.contains("start Ollama"),
        "{out}"
    );
}

#[tokio::test]
async fn doctor_names_a_denied_or_missing_model() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", SANDBOX)], "")).await;
    let (code, out) = doctor(&unix(&host), &["--model", "llama3.3:70b"], None).await;
    assert_eq!(code, Some(7), "{out}");
    assert!(
        out.contains("model llama3.3:70b is not allowed for sandbox \"agent\""),
        "{out}"
    );
    // Allowed by the glob, but Ollama does not have it.
    let (code, out) = doctor(&unix(&host), &["--model", "llama3.2:1b"], None).await;
    assert_eq!(code, Some(8), "{out}");
    assert!(out.contains("ollama pull llama3.2:1b"), "{out}");
}

#[tokio::test]
async fn doctor_names_a_foreign_listener_on_the_listen_address() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    // Something that answers HTTP but is not bridge-guest (as a local Ollama would).
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let out = tokio::process::Command::new(guest_bin())
        .args([
            "doctor",
            "--listen",
            &addr,
            "--connect",
            "unix:/nonexistent/x.sock",
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is taken by something that is not bridge-guest"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_status_command_reports_every_listener() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("agent", SANDBOX), ("other", SANDBOX)],
        "",
    ))
    .await;
    let out = tokio::process::Command::new(bin("bridge-host"))
        .args(["status", "--config"])
        .arg(&host.config)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].starts_with("agent")
            && lines[1].contains(" up ")
            && lines[1].ends_with("up 0.33.0"),
        "{text}"
    );
    assert!(lines[2].starts_with("other"), "{text}");
    drop(double); // Ollama goes away: the command says so and fails.
                  // (Once the shared health reading, at most a second old, has seen it.)
    let sock = socket(&host, "agent");
    tokio::time::timeout(GUARD, async {
        while bridge_status(&sock).await["upstream"]["reachable"] != false {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("the status sees Ollama gone within the guard time");
    let out = tokio::process::Command::new(bin("bridge-host"))
        .args(["status", "--config"])
        .arg(&host.config)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DOWN: cannot reach Ollama"), "{text}");
}
