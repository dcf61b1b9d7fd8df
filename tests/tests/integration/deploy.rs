//! The recipes in deploy/ as operators copy them: their files agree with each other and
//! with the rules of the tools they configure. (The sandbox mechanics themselves run in
//! `sandbox_e2e` and `clients`; configs are checked by bridge-host's cli tests.)

use std::path::{Path, PathBuf};

use bridge_tests::harness::repo;
use serde_json::Value;

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn listen_path(toml_text: &str, sandbox: &str) -> String {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    let sb = v["sandbox"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str() == Some(sandbox))
        .unwrap();
    sb["listen"]
        .as_str()
        .unwrap()
        .strip_prefix("unix:")
        .unwrap()
        .to_owned()
}

#[test]
fn shell_recipes_parse() {
    for f in [
        "bwrap/ollama-sandbox",
        "docker/run-agent.sh",
        "debian/postinst",
        "debian/prerm",
        "debian/postrm",
    ] {
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg(deploy().join(f))
            .status()
            .unwrap();
        assert!(st.success(), "{f}");
    }
}

#[test]
fn docker_recipe_has_no_network_and_mounts_the_directory() {
    let run = read("docker/run-agent.sh");
    assert!(run.contains("--network none"));
    assert!(
        run.contains("-v \"$sock_dir:/run/ollama-bridge\""),
        "mount the directory, not the socket"
    );
    let df = read("docker/Dockerfile");
    assert!(df.contains(r#"ENTRYPOINT ["/usr/local/bin/bridge-guest", "run", "--"]"#));
    assert!(df.contains("OLLAMA_BRIDGE_CONNECT=unix:/run/ollama-bridge/ollama.sock"));
}

#[test]
fn openclaw_recipe_obeys_openclaws_bind_rules() {
    let cfg: Value = serde_json::from_str(&read("openclaw/openclaw.json")).unwrap();
    let docker = &cfg["agents"]["defaults"]["sandbox"]["docker"];
    assert_eq!(docker["network"], "none");
    let bind = docker["binds"][0].as_str().unwrap();
    let parts: Vec<&str> = bind.split(':').collect();
    assert_eq!(parts.len(), 3, "{bind}");
    let (source, target, mode) = (parts[0], parts[1], parts[2]);
    assert_eq!((target, mode), ("/run/ollama-bridge", "ro"));
    let sock = listen_path(&read("openclaw/bridge.toml"), "openclaw");
    assert_eq!(
        Path::new(&sock).parent().unwrap(),
        Path::new(source),
        "bind the listener's directory"
    );
    let allowed: Vec<&str> = docker["allowedBindSources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(allowed, [source]);
    for blocked in [
        "/etc", "/proc", "/sys", "/dev", "/root", "/boot", "/run", "/var/run",
    ] {
        assert!(
            source != blocked && !source.starts_with(&format!("{blocked}/")),
            "{source} is under {blocked}"
        );
    }
    let df = read("openclaw/Dockerfile");
    assert!(
        df.contains(&format!("-t {}", docker["image"].as_str().unwrap())),
        "image name"
    );
    assert!(df.contains(r#"ENTRYPOINT ["/usr/local/bin/bridge-guest", "run", "--"]"#));
    assert_eq!(
        cfg["models"]["providers"]["ollama"]["baseUrl"],
        "http://127.0.0.1:11434"
    );
}

#[test]
fn systemd_unit_is_hardened_and_notifies() {
    let unit = read("systemd/bridge-host.service");
    for want in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RuntimeDirectory=ollama-bridge",
        "RuntimeDirectoryPreserve=yes",
        "CapabilityBoundingSet=CAP_CHOWN",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_VSOCK",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l.trim() == want), "missing {want}");
    }
}
