//! The listeners against real sockets: modes, stale and live sockets, AF_VSOCK, adoption.

use super::*;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;

#[test]
fn perms_never_follow_a_link_that_replaced_the_socket() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("host-file");
    std::fs::write(&target, "secret").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = t.path().join("ollama.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = apply_perms(&link, 0o666, None).unwrap_err();
    assert!(matches!(e, ListenError::NotASocket { .. }), "{e:?}");
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
    // The calls themselves refuse a link too (a swap racing the check).
    let raced = nix::sys::stat::fchmodat(
        None,
        &link,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    );
    assert!(raced.is_err());
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn creates_dir_and_socket_with_modes() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("sb/ollama.sock");
    let l = Listener::bind(&ListenAddr::Unix(path.clone()), 0o600, None).unwrap();
    let dir = std::fs::metadata(t.path().join("sb")).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o750);
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    // A live socket is not replaced.
    let again = Listener::bind(&ListenAddr::Unix(path.clone()), 0o600, None);
    assert!(matches!(again, Err(ListenError::InUse { .. })), "{again:?}");
    drop(l);
    // A stale one is.
    Listener::bind(&ListenAddr::Unix(path.clone()), 0o660, None).unwrap();
}

#[tokio::test]
async fn binds_an_af_vsock_listener() {
    // VMADDR_PORT_ANY: the kernel picks a free port (no fixed ports in tests).
    let l = Listener::bind(&ListenAddr::Vsock { port: u32::MAX }, 0, None)
        .expect("AF_VSOCK bind (needs the vsock module; /dev/vsock exists on these machines)");
    let port = l.vsock_port().expect("a vsock listener has a port");
    assert_ne!(port, u32::MAX);
}

#[tokio::test]
async fn adopts_only_a_listening_socket_of_the_addresss_family() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("a.sock");
    let addr = ListenAddr::Unix(path.clone());
    // Opened without the runtime (as the privileged monitor does), served with it.
    let fd = Bound::bind(&addr, 0o600, None).unwrap().into_fd();
    let l = Listener::adopt(&addr, fd).unwrap();
    let (client, accepted) = tokio::join!(tokio::net::UnixStream::connect(&path), l.accept());
    client.unwrap();
    assert!(matches!(accepted.unwrap().1, Some(Peer::Unix { .. })));
    let (connected, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = Listener::adopt(&addr, connected.into()).unwrap_err();
    assert!(matches!(e, ListenError::Adopt { .. }), "{e:?}");
    let unix = Bound::bind(&ListenAddr::Unix(t.path().join("b.sock")), 0o600, None)
        .unwrap()
        .into_fd();
    let e = Listener::adopt(&ListenAddr::Vsock { port: 5 }, unix).unwrap_err();
    assert!(
        e.to_string().contains("not a listening Vsock socket"),
        "{e}"
    );
}

#[tokio::test]
async fn refuses_to_replace_a_file() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("not-a.sock");
    std::fs::write(&path, b"precious").unwrap();
    let r = Listener::bind(&ListenAddr::Unix(path.clone()), 0o660, None);
    assert!(matches!(r, Err(ListenError::NotASocket { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}
