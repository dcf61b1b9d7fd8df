//! Socket addresses as operators write them: `unix:/path`, `vsock:PORT`,
//! `vsock-uds:/path/v.sock_PORT` (host side) and `vsock:CID:PORT` (guest side).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where bridge-host listens for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum ListenAddr {
    /// A unix stream socket (bind-mount its directory into the sandbox).
    Unix(PathBuf),
    /// AF_VSOCK on any CID, this port.
    Vsock { port: u32 },
    /// Firecracker / Cloud Hypervisor: the VMM connects to this unix path (`<uds>_PORT`).
    VsockUds(PathBuf),
}

impl ListenAddr {
    /// Parses `unix:/abs/path`, `vsock:PORT` or `vsock-uds:/abs/path_PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return abs_path(s, p).map(ListenAddr::Unix);
        }
        if let Some(p) = s.strip_prefix("vsock-uds:") {
            let path = abs_path(s, p)?;
            let port_ok = p
                .rsplit_once('_')
                .is_some_and(|(_, port)| port.parse::<u32>().is_ok());
            if !port_ok {
                return Err(format!(
                    "invalid listen address {s:?}: a vsock-uds path ends in _PORT, e.g. \"vsock-uds:/run/fc/v.sock_11434\""
                ));
            }
            return Ok(ListenAddr::VsockUds(path));
        }
        if let Some(p) = s.strip_prefix("vsock:") {
            let port = p.parse::<u32>().map_err(|_| {
                format!("invalid listen address {s:?}: expected vsock:PORT, e.g. \"vsock:11434\"")
            })?;
            return Ok(ListenAddr::Vsock { port });
        }
        Err(format!(
            "invalid listen address {s:?}: expected unix:/path, vsock:PORT or vsock-uds:/path_PORT"
        ))
    }

    /// The unix path behind this address, if it has one.
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        match self {
            ListenAddr::Unix(p) | ListenAddr::VsockUds(p) => Some(p),
            ListenAddr::Vsock { .. } => None,
        }
    }
}

fn abs_path(whole: &str, p: &str) -> Result<PathBuf, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "invalid listen address {whole:?}: the socket path must be absolute"
        ));
    }
    Ok(PathBuf::from(p))
}

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ListenAddr::parse(&s)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Vsock { port } => write!(f, "vsock:{port}"),
            ListenAddr::VsockUds(p) => write!(f, "vsock-uds:{}", p.display()),
        }
    }
}

/// Where bridge-guest connects: the host's socket as seen inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectAddr {
    /// A unix stream socket path.
    Unix(PathBuf),
    /// AF_VSOCK CID and port (CID 2 is the host).
    Vsock { cid: u32, port: u32 },
}

impl ConnectAddr {
    /// Parses `unix:/path` or `vsock:CID:PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return abs_path(s, p).map(ConnectAddr::Unix);
        }
        if let Some(rest) = s.strip_prefix("vsock:") {
            if let Some((c, p)) = rest.split_once(':') {
                if let (Ok(cid), Ok(port)) = (c.parse(), p.parse()) {
                    return Ok(ConnectAddr::Vsock { cid, port });
                }
            }
            return Err(format!(
                "invalid connect address {s:?}: expected vsock:CID:PORT, e.g. \"vsock:2:11434\""
            ));
        }
        Err(format!(
            "invalid connect address {s:?}: expected unix:/path or vsock:CID:PORT"
        ))
    }
}

impl std::str::FromStr for ConnectAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ConnectAddr::parse(s)
    }
}

impl fmt::Display for ConnectAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ConnectAddr::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen() {
        assert_eq!(
            ListenAddr::parse("unix:/run/x.sock").unwrap(),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert_eq!(
            ListenAddr::parse("vsock:11434").unwrap(),
            ListenAddr::Vsock { port: 11434 }
        );
        assert!(ListenAddr::parse("vsock-uds:/run/v.sock_11434").is_ok());
        for bad in [
            "unix:rel.sock",
            "vsock:x",
            "vsock-uds:/run/v.sock",
            "tcp:1",
            "",
        ] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ListenAddr::parse("vsock:5").unwrap().to_string(), "vsock:5");
    }

    #[test]
    fn connect() {
        assert_eq!(
            ConnectAddr::parse("vsock:2:11434").unwrap(),
            ConnectAddr::Vsock {
                cid: 2,
                port: 11434
            }
        );
        assert!(ConnectAddr::parse("vsock:11434").is_err());
        assert!(ConnectAddr::parse("unix:/a").is_ok());
    }
}
