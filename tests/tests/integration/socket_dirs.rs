//! A `socket_owner` can reach its socket: the parents the bridge creates are 0711 (pass
//! through, no listing), the socket's own directory 0750 and the owner's. A parent that
//! already exists and shuts the owner out is named at start in the log, and the bwrap
//! recipe says which directory the user cannot reach instead of "does not exist".

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{copy_for_others, guest_bin, repo, require_root, Host};

use crate::privileges::setpriv;

const NOBODY: &str = "65534";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Runs `args` as nobody; returns the exit code and stderr.
fn as_nobody(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(setpriv())
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .args(args)
        .output()
        .expect("setpriv runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_socket_owner_reaches_its_socket_or_is_told_which_directory_stops_it() {
    require_root("sockets are handed to another user (nobody)");
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
    let d = dir.path().display().to_string();
    // "a" makes {dir}/run its socket directory (0750, root's); "b" lives below it and
    // belongs to nobody, who cannot pass run/. "deep" gets parents the bridge creates.
    let config = format!(
        "[upstream]\nurl = \"{up}\"\n\n[audit]\npath = \"{d}/audit.jsonl\"\n\n\
         [[sandbox]]\nname = \"a\"\nlisten = \"unix:{d}/run/ollama.sock\"\n\n\
         [[sandbox]]\nname = \"b\"\nlisten = \"unix:{d}/run/b/ollama.sock\"\nsocket_owner = \"{NOBODY}:{NOBODY}\"\n\n\
         [[sandbox]]\nname = \"deep\"\nlisten = \"unix:{d}/x/y/deep/ollama.sock\"\nsocket_owner = \"{NOBODY}:{NOBODY}\"\n",
        up = double.url()
    );
    let host = Host::start_in(dir, &config, &[]).await;

    // Parents the bridge created: passable; the socket's directory: closed, nobody's.
    assert_eq!(mode(&host.path("x")), 0o711);
    assert_eq!(mode(&host.path("x/y")), 0o711);
    let deep = host.path("x/y/deep");
    assert_eq!(mode(&deep), 0o750);
    assert_eq!(std::fs::metadata(&deep).unwrap().uid(), 65534);
    let sock = deep.join("ollama.sock");
    let (code, err) = as_nobody(&["test", "-S", sock.to_str().unwrap()]);
    assert_eq!(code, 0, "nobody reaches its socket: {err}");

    // run/ was made 0750 for "a": the log names it for "b"'s owner.
    let run = host.path("run");
    let log = host.log();
    assert!(
        log.contains("socket_owner 65534:65534 cannot reach its socket")
            && log.contains(&format!("{} (mode 0750", run.display())),
        "{log}"
    );
    // And the recipe tells nobody which directory stops it.
    // (A copy nobody can read, wherever the repository is.)
    let (_copy, recipe) = copy_for_others(&repo().join("deploy/bwrap/ollama-sandbox"));
    let guest = guest_bin();
    let b_dir = host.path("run/b");
    let (code, err) = as_nobody(&[
        "sh",
        recipe.to_str().unwrap(),
        "-s",
        b_dir.to_str().unwrap(),
        "-g",
        guest.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(code, 77, "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach it: {} is not searchable",
            run.display()
        )),
        "{err}"
    );
}

/// What Firecracker does with a vsock device, as uid 65534: creates its `uds_path` in
/// the directory bridge-host made, then connects to `<uds_path>_11434` (as it does when
/// the guest dials the host's port 11434) and asks for the bridge's status. Prints the
/// answer's status line; a Python exception (and exit 1) when it cannot.
const VMM: &str = r#"
import socket, sys
d = sys.argv[1]
own = socket.socket(socket.AF_UNIX)
own.bind(d + "/v.sock")
c = socket.socket(socket.AF_UNIX)
c.connect(d + "/v.sock_11434")
c.sendall(b"GET /_bridge/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
answer = b""
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    answer += chunk
print(answer.split(b"\r\n")[0].decode())
"#;

/// The system's python3 (a user's pyenv or venv may not be reachable for nobody).
fn system_python3() -> &'static str {
    let p = "/usr/bin/python3";
    assert!(
        Path::new(p).exists(),
        "{p} is missing: apt-get install python3 (./scripts/test installs it as root)"
    );
    p
}

async fn as_vmm(dir: &Path) -> (i32, String, String) {
    let out = tokio::process::Command::new(setpriv())
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            system_python3(),
            "-c",
            VMM,
        ])
        .arg(dir)
        .output()
        .await
        .expect("setpriv runs python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn firecracker_creates_its_uds_path_in_the_directory_of_a_vsock_uds_listener_it_owns() {
    require_root(
        "the socket directory is handed to another user (nobody, standing in for the VMM)",
    );
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
    // vm1: socket_owner is the uid:gid Firecracker runs as (deploy/firecracker/README.md);
    // vm2: none, as a counter-example.
    let config = format!(
        "[upstream]\nurl = \"{up}\"\n\n[audit]\npath = \"{{dir}}/audit.jsonl\"\n\n\
         [[sandbox]]\nname = \"vm1\"\nlisten = \"vsock-uds:{{dir}}/fc/vm1/v.sock_11434\"\nsocket_owner = \"{NOBODY}:{NOBODY}\"\n\n\
         [[sandbox]]\nname = \"vm2\"\nlisten = \"vsock-uds:{{dir}}/fc/vm2/v.sock_11434\"\n",
        up = double.url()
    );
    let host = Host::start_in(dir, &config, &[]).await;

    // The mode and owner that work: parents 0711, the VM's directory 0750 and the VMM's,
    // the listener's socket 0660 (socket_mode's default) and the VMM's.
    let vm1 = host.path("fc/vm1");
    assert_eq!(mode(&host.path("fc")), 0o711);
    assert_eq!(mode(&vm1), 0o750);
    assert_eq!(std::fs::metadata(&vm1).unwrap().uid(), 65534);
    let listener = std::fs::metadata(vm1.join("v.sock_11434")).unwrap();
    assert_eq!((listener.uid(), listener.gid()), (65534, 65534));
    assert_eq!(listener.permissions().mode() & 0o777, 0o660);

    let (code, out, err) = as_vmm(&vm1).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "HTTP/1.1 200 OK", "{err}");
    let uds = std::fs::metadata(vm1.join("v.sock")).expect("the VMM made its uds_path");
    assert_eq!(uds.uid(), 65534);

    // Without socket_owner the directory stays the daemon's: the VMM cannot make uds_path.
    let vm2 = host.path("fc/vm2");
    assert_eq!(std::fs::metadata(&vm2).unwrap().uid(), 0);
    let (code, _, err) = as_vmm(&vm2).await;
    assert_ne!(code, 0);
    assert!(err.contains("PermissionError"), "{err}");
    assert!(!vm2.join("v.sock").exists());
}
