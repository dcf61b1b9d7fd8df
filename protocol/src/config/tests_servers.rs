//! Unit tests of `[[upstream.server]]`: several servers, the shared keys and the
//! overrides, and the single `url` named `default`.

use std::time::Duration;

use super::tests::env;
use super::*;

const SANDBOX: &str = "\n[[sandbox]]\nname = \"a\"\nlisten = \"unix:/a.sock\"\n";

fn parse(upstream: &str) -> Result<Config, ConfigErrors> {
    Config::parse(&format!("{upstream}{SANDBOX}"), &env())
}

#[test]
fn a_single_url_is_the_server_named_default() {
    let c = parse("[upstream]\nurl = \"http://127.0.0.1:9\"\n").unwrap();
    assert_eq!(c.servers.len(), 1);
    assert_eq!(c.servers[0], c.upstream);
    assert_eq!(c.upstream.name, "default");
    assert!(c.upstream.models.is_empty());
    assert_eq!(c.upstream.refresh_interval, DEFAULT_REFRESH_INTERVAL);
    let q = Config::builtin(&env());
    assert_eq!(q.servers, vec![q.upstream.clone()]);
    assert_eq!(q.upstream.name, "default");
}

#[test]
fn several_servers_share_the_upstream_keys_and_override_some() {
    let c = parse(
        r#"
[upstream]
max_parallel = 3
header_timeout = "5m"
refresh_interval = "250ms"

[[upstream.server]]
name = "gpu1"
url = "http://10.0.0.5:11434"
models = ["llama3.3:*"]
max_parallel = "off"
header_timeout = "20m"

[[upstream.server]]
name = "gpu2"
url = "http://10.0.0.6"
"#,
    )
    .unwrap();
    let [a, b] = &c.servers[..] else {
        panic!("{:?}", c.servers)
    };
    assert_eq!((a.name.as_str(), b.name.as_str()), ("gpu1", "gpu2"));
    assert_eq!(c.upstream, *a);
    assert_eq!(a.base, "http://10.0.0.5:11434");
    assert_eq!(b.authority, "10.0.0.6:80");
    assert_eq!((a.max_parallel, b.max_parallel), (None, Some(3)));
    assert_eq!(a.header_timeout, Duration::from_secs(1200));
    assert_eq!(b.header_timeout, Duration::from_secs(300));
    assert_eq!(b.refresh_interval, Duration::from_millis(250));
    assert_eq!(a.models.len(), 1);
    assert!(a.models[0].matches(&crate::ModelName::parse("llama3.3:70b").unwrap()));
    assert!(b.models.is_empty());
}

#[test]
fn url_with_servers_duplicates_and_bad_names_are_errors() {
    let both = "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[upstream.server]]\nname = \"x\"\nurl = \"http://127.0.0.1:8\"\n";
    let e = parse(both).unwrap_err().to_string();
    assert!(e.contains("choose one"), "{e}");
    let dup = "[[upstream.server]]\nname = \"x\"\nurl = \"http://127.0.0.1:8\"\n[[upstream.server]]\nname = \"x\"\nurl = \"http://127.0.0.1:9\"\n";
    let e = parse(dup).unwrap_err().to_string();
    assert!(
        e.contains("the name is used by another [[upstream.server]]"),
        "{e}"
    );
    let bad = "[[upstream.server]]\nname = \"a b\"\nurl = \"http://127.0.0.1:8\"\n";
    let e = parse(bad).unwrap_err().to_string();
    assert!(e.contains("invalid server name"), "{e}");
    let same = "[[upstream.server]]\nname = \"x\"\nurl = \"http://127.0.0.1:8\"\n[[upstream.server]]\nname = \"y\"\nurl = \"http://127.0.0.1:8/\"\n";
    let e = parse(same).unwrap_err().to_string();
    assert!(e.contains("is used by another"), "{e}");
    let zero = "[upstream]\nrefresh_interval = \"0s\"\n";
    let e = parse(zero).unwrap_err().to_string();
    assert!(
        e.contains("refresh_interval must be greater than zero"),
        "{e}"
    );
    let empty = "[[upstream.server]]\nname = \"x\"\nurl = \"http://127.0.0.1:8\"\nmodels = []\n";
    let e = parse(empty).unwrap_err().to_string();
    assert!(e.contains("models is empty"), "{e}");
    let missing = "[[upstream.server]]\nname = \"x\"\n";
    assert!(parse(missing).is_err());
}
