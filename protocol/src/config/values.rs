//! Single values of the configuration, parsed from their strings: the upstream URL, a
//! socket's mode and its owner. Used by [`super::validate`] and by the built-in defaults.

use std::time::Duration;

use super::Upstream;

/// `[upstream] url`: `http://HOST[:PORT]` (port 80 when absent); the timeouts are left
/// zero for the caller to fill in.
pub(super) fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: only http:// upstreams are supported, e.g. \"http://127.0.0.1:11434\"")
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let valid = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' '])
        && match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
            }
            _ => true,
        };
    if !valid {
        return Err(format!(
            "{url:?}: expected http://HOST[:PORT] with no path, e.g. \"http://127.0.0.1:11434\""
        ));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Upstream {
        base: format!("http://{authority}"),
        authority,
        connect_timeout: Duration::ZERO,
        header_timeout: Duration::ZERO,
        idle_timeout: Duration::ZERO,
    })
}

/// `socket_mode`: octal permission bits, `"0660"` or `"0o660"`.
pub(super) fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "socket_mode {s:?}: expected octal permission bits such as \"0660\""
        )),
    }
}

/// `socket_owner`: numeric `"uid:gid"`.
pub(super) fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    s.split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| {
            format!("socket_owner {s:?}: expected numeric \"uid:gid\", e.g. \"1000:1000\"")
        })
}
