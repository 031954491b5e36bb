//! Unit tests of the parent module.

use super::*;

fn cli(args: &[&str]) -> Cli {
    let mut v = vec!["daramjwee"];
    v.extend_from_slice(args);
    Cli::parse_from(v)
}

#[test]
fn sizes_and_durations_parse_with_units() {
    assert_eq!(parse_size("256MiB"), Ok(256 << 20));
    assert_eq!(parse_size("10GiB"), Ok(10 << 30));
    assert_eq!(parse_size("1.5KiB"), Ok(1536));
    assert_eq!(parse_size("2MB"), Ok(2_000_000));
    assert!(parse_size("0").is_err());
    assert!(parse_size("12XB").is_err());
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert!(parse_duration("30").is_err());
}

#[test]
fn defaults_give_memory_hot_and_disk_cold_under_data_dir() {
    let s = Settings::load(&cli(&["--upstream", "http://127.0.0.1:3000"])).unwrap();
    let site = &s.sites[0];
    assert_eq!(site.name, "default");
    assert_eq!(site.hot, TierSpec::Memory(256 << 20));
    assert_eq!(
        site.cold,
        Some(TierSpec::File(
            PathBuf::from("./daramjwee-data/default/cold"),
            10 << 30
        ))
    );
    // Each tier's store decides its per-object limit; the cold tier is filled in the background.
    let placement = Placement {
        cold_fill: ColdFill::Background,
        hot_max_object: None,
        cold_max_object: None,
    };
    assert_eq!(site.placement, placement);
    assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.admin, Some("127.0.0.1:9090".parse().unwrap()));
}

#[test]
fn file_path_with_colons_keeps_the_last_colon_for_the_size() {
    assert_eq!(
        parse_tier("hot", "file:/tmp/a:b:10GiB").unwrap(),
        TierSpec::File(PathBuf::from("/tmp/a:b"), 10 << 30)
    );
}

#[cfg(not(feature = "object-store"))]
#[test]
fn object_store_cold_tier_says_not_compiled_in() {
    let e = Settings::load(&cli(&[
        "--upstream",
        "http://127.0.0.1:3000",
        "--cold",
        "s3://bucket/prefix",
    ]))
    .unwrap_err();
    assert!(
        e.to_string().contains("not compiled into this build"),
        "{e}"
    );
}

#[cfg(feature = "object-store")]
#[test]
fn object_store_url_is_a_cold_tier_and_never_a_hot_one() {
    let s = Settings::load(&cli(&[
        "--upstream",
        "http://127.0.0.1:3000",
        "--cold",
        "memory:///",
    ]))
    .unwrap();
    assert_eq!(s.sites[0].cold, Some(TierSpec::Object("memory:///".into())));
    let e = Settings::load(&cli(&["--upstream", "http://h", "--hot", "memory:///"])).unwrap_err();
    assert!(e.to_string().contains("only be the cold tier"), "{e}");
    let e =
        Settings::load(&cli(&["--upstream", "http://h", "--cold", "nosuch://b/p"])).unwrap_err();
    assert!(e.to_string().contains("cold: `nosuch://b/p`"), "{e}");
}

#[test]
fn missing_upstream_and_bad_values_are_named() {
    let e = Settings::load(&cli(&[])).unwrap_err();
    assert!(e.to_string().contains("no upstream"), "{e}");
    let e = Settings::load(&cli(&["--upstream", "http://h", "--eviction", "fifo"])).unwrap_err();
    assert!(e.to_string().contains("eviction: `fifo`"), "{e}");
    let e = Settings::load(&cli(&["--upstream", "http://h", "--ca-file", "/ca.pem"])).unwrap_err();
    assert!(
        e.to_string().contains("ca_file applies only to an https"),
        "{e}"
    );
    let s = Settings::load(&cli(&["--upstream", "https://h/b", "--ca-file", "/ca.pem"])).unwrap();
    assert_eq!(s.sites[0].upstream.to_string(), "https://h/b");
    let e = Settings::load(&cli(&["--upstream", "http://h", "--ttl", "5s"])).unwrap_err();
    assert!(e.to_string().contains("origin-trusting"), "{e}");
}

#[test]
fn sites_inherit_defaults_and_flags_override_them() {
    let file: FileConfig = toml::from_str(
        r#"
        listen = "127.0.0.1:0"
        [defaults]
        upstream = "http://127.0.0.1:1/"
        hot = "memory:1MiB"
        cold = "none"
        [[site]]
        name = "a"
        prefix = "/a/"
        [[site]]
        name = "b"
        host = "B.example"
        upstream = "http://127.0.0.1:2/base/"
        "#,
    )
    .unwrap();
    let s = Settings::merge(&cli(&["--hot", "memory:2MiB"]), file).unwrap();
    assert_eq!(s.sites.len(), 2);
    assert_eq!(s.sites[0].prefix, "/a");
    assert_eq!(s.sites[0].hot, TierSpec::Memory(2 << 20));
    assert_eq!(s.sites[0].cold, None);
    assert_eq!(s.sites[1].host.as_deref(), Some("b.example"));
    assert_eq!(s.sites[1].upstream.to_string(), "http://127.0.0.1:2/base");
}

#[test]
fn every_eviction_policy_is_accepted_and_request_ids_default_on() {
    for (name, kind) in [
        ("lru", PolicyKind::Lru),
        ("s3fifo", PolicyKind::S3Fifo),
        ("sieve", PolicyKind::Sieve),
        ("tinylfu", PolicyKind::TinyLfu),
    ] {
        let s = Settings::load(&cli(&["--upstream", "http://h", "--eviction", name])).unwrap();
        assert_eq!(s.sites[0].eviction.name(), kind.name());
        assert!(s.request_ids);
    }
    let file: FileConfig = toml::from_str("request_ids = false\n").unwrap();
    let s = Settings::merge(&cli(&["--upstream", "http://h"]), file).unwrap();
    assert!(!s.request_ids);
    let file: FileConfig = toml::from_str("request_ids = false\n").unwrap();
    let s = Settings::merge(
        &cli(&["--upstream", "http://h", "--request-ids", "true"]),
        file,
    )
    .unwrap();
    assert!(s.request_ids, "the flag overrides the file");
}

#[test]
fn forwarding_options_are_validated() {
    let s = Settings::load(&cli(&[
        "--upstream",
        "http://h",
        "--public-host",
        "WWW.Example.com:8443",
        "--drop-header",
        "X-Debug",
    ]))
    .unwrap();
    assert_eq!(
        s.sites[0].public_host.as_ref().unwrap(),
        "www.example.com:8443"
    );
    assert_eq!(s.sites[0].drop_headers, ["x-debug"]);
    assert!(!s.sites[0].forward_target_headers);
    for bad in ["evil.example/x", "user@h", "", "a b"] {
        let e =
            Settings::load(&cli(&["--upstream", "http://h", "--public-host", bad])).unwrap_err();
        assert!(e.to_string().contains("public_host"), "{bad}: {e}");
    }
    let e = Settings::load(&cli(&["--upstream", "http://h", "--drop-header", "a b"])).unwrap_err();
    assert!(e.to_string().contains("drop_headers: `a b`"), "{e}");
    let file: FileConfig = toml::from_str(
        "[defaults]\nupstream = \"http://h\"\nforward_target_headers = true\n\
         [[site]]\nname = \"a\"\ndrop_headers = [\"x-a\"]\n",
    )
    .unwrap();
    let s = Settings::merge(&cli(&[]), file).unwrap();
    assert!(s.sites[0].forward_target_headers);
    assert_eq!(s.sites[0].drop_headers, ["x-a"]);
}

#[test]
fn access_log_is_off_unless_named_and_its_format_is_checked() {
    let s = Settings::load(&cli(&["--upstream", "http://h"])).unwrap();
    assert_eq!(s.access_log, None);
    let s = Settings::load(&cli(&["--upstream", "http://h", "--access-log", "stdout"])).unwrap();
    assert_eq!(
        s.access_log,
        Some(AccessLogSettings {
            destination: Destination::Stdout,
            format: Format::Combined
        })
    );
    let file: FileConfig =
        toml::from_str("access_log = \"/var/log/d.jsonl\"\naccess_log_format = \"json\"\n")
            .unwrap();
    let s = Settings::merge(&cli(&["--upstream", "http://h"]), file).unwrap();
    let a = s.access_log.unwrap();
    assert_eq!(a.destination, Destination::File("/var/log/d.jsonl".into()));
    assert_eq!(a.format, Format::Json);
    let e = Settings::load(&cli(&[
        "--upstream",
        "http://h",
        "--access-log-format",
        "json",
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("access_log is off"), "{e}");
    let e = Settings::load(&cli(&[
        "--upstream",
        "http://h",
        "--access-log",
        "stdout",
        "--access-log-format",
        "clf",
    ]))
    .unwrap_err();
    assert!(
        e.to_string().contains("`clf` is not one of combined, json"),
        "{e}"
    );
}

#[test]
fn typo_in_a_site_key_is_an_error() {
    let e = toml::from_str::<FileConfig>("[[site]]\nname = \"a\"\nhott = \"memory:1MiB\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("hott"), "{e}");
}

#[test]
fn two_sites_on_one_directory_are_refused() {
    let file: FileConfig = toml::from_str(
        r#"
        [defaults]
        upstream = "http://127.0.0.1:1"
        cold = "file:/tmp/x:1GiB"
        [[site]]
        name = "a"
        prefix = "/a"
        [[site]]
        name = "b"
        prefix = "/b"
        "#,
    )
    .unwrap();
    let e = Settings::merge(&cli(&[]), file).unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
}

#[test]
fn shared_workers_and_site_weights_resolve_with_defaults() {
    let toml = r#"
        workers = 6
        [defaults]
        upstream = "http://127.0.0.1:1"
        cold = "none"
        queue = 100
        [[site]]
        name = "a"
        prefix = "/a"
        weight = 3
        queue = 10
        [[site]]
        name = "b"
        "#;
    let s = Settings::merge(&cli(&[]), toml::from_str(toml).unwrap()).unwrap();
    assert_eq!(s.workers, 6);
    assert_eq!((s.sites[0].weight, s.sites[0].queue), (3, 10));
    assert_eq!((s.sites[1].weight, s.sites[1].queue), (1, 100));
    let s = Settings::merge(&cli(&["--workers", "9"]), toml::from_str(toml).unwrap()).unwrap();
    assert_eq!(s.workers, 9, "the flag overrides the file");
    let s = Settings::load(&cli(&["--upstream", "http://h"])).unwrap();
    assert_eq!(
        (s.workers, s.sites[0].weight, s.sites[0].queue),
        (4, 1, 1024)
    );
}

#[test]
fn per_site_workers_and_out_of_range_weights_are_refused() {
    let load = |toml: &str| {
        let file: FileConfig = toml::from_str(toml).unwrap();
        Settings::merge(&cli(&[]), file).unwrap_err().to_string()
    };
    let e = load("[[site]]\nname = \"a\"\nupstream = \"http://h\"\nworkers = 8\n");
    assert!(e.starts_with("site `a`: workers:"), "{e}");
    assert!(e.contains("top level") && e.contains("`weight`"), "{e}");
    let e = load("[defaults]\nupstream = \"http://h\"\nworkers = 8\n");
    assert!(e.starts_with("[defaults] workers:"), "{e}");
    for (w, shown) in [("0", "0"), ("1001", "1001"), ("-2", "-2")] {
        let e = load(&format!(
            "[[site]]\nname = \"a\"\nupstream = \"http://h\"\nweight = {w}\n"
        ));
        assert_eq!(e, format!("site `a`: weight: {shown} is not in 1..=1000"));
    }
    let e = load("workers = 0\n[defaults]\nupstream = \"http://h\"\n");
    assert_eq!(e, "workers: 0 is not in 1..=1024");
    let e = Settings::load(&cli(&["--upstream", "http://h", "--workers", "2000"])).unwrap_err();
    assert_eq!(e.to_string(), "workers: 2000 is not in 1..=1024");
}

#[test]
fn cold_fill_and_object_size_limits_are_read_and_checked() {
    let up = ["--upstream", "http://127.0.0.1:3000"];
    let load = |extra: &[&str]| Settings::load(&cli(&[&up[..], extra].concat()));
    let s = load(&[
        "--cold-fill",
        "write-through",
        "--hot-max-object-size",
        "1MiB",
        "--cold-max-object-size",
        "3GiB",
    ])
    .unwrap();
    let p = s.sites[0].placement;
    assert_eq!(p.cold_fill, ColdFill::WriteThrough);
    assert_eq!(
        (p.hot_max_object, p.cold_max_object),
        (Some(1 << 20), Some(3 << 30))
    );
    let refused = [
        (&["--cold-fill", "lazy"][..], "cold_fill: `lazy`"),
        (
            &["--hot-max-object-size", "1GiB"][..],
            "larger than the tier",
        ),
        (
            &["--cold", "none", "--cold-max-object-size", "1MiB"][..],
            "no such tier",
        ),
        (&["--cold-max-object-size", "0"][..], "cold_max_object_size"),
    ];
    for (args, said) in refused {
        let e = load(args).unwrap_err();
        assert!(e.to_string().contains(said), "{args:?}: {e}");
    }
}

#[test]
fn send_buffer_defaults_to_256_kib_and_takes_a_size_or_auto() {
    let up = ["--upstream", "http://127.0.0.1:3000"];
    let load = |extra: &[&str]| Settings::load(&cli(&[&up[..], extra].concat()));
    assert_eq!(load(&[]).unwrap().send_buffer, Some(256 << 10));
    assert_eq!(load(&["--send-buffer", "auto"]).unwrap().send_buffer, None);
    assert_eq!(
        load(&["--send-buffer", "1MiB"]).unwrap().send_buffer,
        Some(1 << 20)
    );
    for bad in ["1KiB", "1GiB", "lots"] {
        let e = load(&["--send-buffer", bad]).unwrap_err();
        assert!(e.to_string().starts_with("send_buffer:"), "{bad}: {e}");
    }
}

/// A file that cannot be read or parsed, or a bad value in one site, keeps what caused it as
/// the error's source, and says which file or site.
#[test]
fn errors_keep_their_cause_and_say_where() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let e = Settings::load(&cli(&["--config", missing.to_str().unwrap()])).unwrap_err();
    let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
    assert_eq!(
        io.map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound),
        "{e}"
    );
    assert!(e.to_string().starts_with("cannot read "), "{e}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = [").unwrap();
    let e = Settings::load(&cli(&["--config", bad.to_str().unwrap()])).unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    assert!(e.source().is_some_and(|s| s.is::<toml::de::Error>()), "{e}");

    let file: FileConfig =
        toml::from_str("[[site]]\nname = \"a\"\nupstream = \"http://h\"\nweight = 0\n").unwrap();
    let e = Settings::merge(&cli(&[]), file).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Site { site, .. } if site == "a"),
        "{e}"
    );
    assert_eq!(e.to_string(), "site `a`: weight: 0 is not in 1..=1000");
    let cause = e.source().map(ToString::to_string);
    assert_eq!(cause.as_deref(), Some("weight: 0 is not in 1..=1000"));
}
