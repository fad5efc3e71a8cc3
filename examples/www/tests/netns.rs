//! The whole unikernel as the code generator composes it for `--net
//! direct` on unix: kiln-unix's tap, kiln-net's stack, the baked store and
//! `www::start`, inside a network namespace; the kernel's `curl` fetches
//! the site, one page at a time and 100 pages over 50 parallel
//! connections.
//!
//! Needs root, `ip` and `curl` (scripts/test installs them). The outer test
//! creates the namespace and re-runs this test binary inside it.

mod support;

use std::process::Command;
use std::time::Duration;

use kiln_baked::Baked;
use kiln_devices::MacAddress;
use kiln_net::{Config, NetStack};
use kiln_rt::{block_on, timeout};
use kiln_testsupport::netns;
use kiln_testsupport::platform::in_thread;
use kiln_testsupport::process::stdout_of;
use kiln_unix::{Tap, platform};
use support::{bake, file};

const IFNAME: &str = "kiln0";
const GUEST_V4: &str = "10.79.0.2";
const GUEST_MAC: MacAddress = MacAddress([0x02, 0x6b, 0x77, 0x77, 0x77, 0x01]);

fn htdocs() -> Baked {
    bake(&[file("about.html"), file("img/kiln.png"), file("index.html")])
}

#[test]
fn www_on_the_direct_stack_in_a_network_namespace() {
    netns::test_inside(
        "www_on_the_direct_stack_in_a_network_namespace",
        &[("curl", "--version", "curl")],
        "www",
        "inside_a_namespace",
        Duration::from_secs(90),
    );
}

/// Runs curl with `args`; stdout on success.
fn curl(args: &[&str]) -> Result<Vec<u8>, String> {
    stdout_of(
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args),
    )
    .map_err(|e| e.to_string())
}

fn host_side() -> Result<(), String> {
    let base = format!("http://{GUEST_V4}");
    let index = curl(&[&format!("{base}/")])?;
    if index != include_bytes!("../htdocs/index.html") {
        return Err("index.html differs".into());
    }
    let png = curl(&[&format!("{base}/img/kiln.png")])?;
    if png != include_bytes!("../htdocs/img/kiln.png") {
        return Err("kiln.png differs".into());
    }
    // 100 fetches over up to 50 connections at once; every one must be a
    // 200 with the whole body.
    let mut args = vec![
        "--parallel".to_string(),
        "--parallel-max".into(),
        "50".into(),
        "-w".into(),
        "%{http_code} %{size_download}\\n".into(),
    ];
    for i in 0..100 {
        let page = if i % 2 == 0 {
            "about.html"
        } else {
            "img/kiln.png"
        };
        args.extend(["-o".into(), "/dev/null".into(), format!("{base}/{page}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = String::from_utf8(curl(&args)?).unwrap();
    let about = include_bytes!("../htdocs/about.html").len().to_string();
    let png = include_bytes!("../htdocs/img/kiln.png").len().to_string();
    let lines: Vec<&str> = report.lines().collect();
    let ok = lines
        .iter()
        .filter(|l| **l == format!("200 {about}") || **l == format!("200 {png}"))
        .count();
    if lines.len() != 100 || ok != 100 {
        return Err(format!(
            "parallel fetches: {ok} of {} good: {report}",
            lines.len()
        ));
    }
    Ok(())
}

#[test]
#[ignore = "run by www_on_the_direct_stack_in_a_network_namespace inside a network namespace"]
fn inside_a_namespace() {
    netns::inside().expect("run by www_on_the_direct_stack_in_a_network_namespace");
    let result = block_on(
        platform(),
        timeout(Duration::from_secs(75), async {
            // What generated code does for `--net direct`.
            let service = Tap::open(platform(), "service", IFNAME, Some(GUEST_MAC)).unwrap();
            netns::address(IFNAME, "10.79.0.1/24", None);
            let args = [&*format!("--ipv4={GUEST_V4}/24"), "--port=80"];
            let (config, rest) = Config::extract(args).unwrap();
            assert_eq!(rest, ["--port=80"]);
            let stack = NetStack::new(service, config, 0x77_77_77).unwrap();
            kiln_rt::spawn(www::start(stack, htdocs(), 80, 512));

            // curl blocks in a thread of its own.
            in_thread(Duration::from_secs(60), host_side)
                .await
                .unwrap_or_else(|| Err("curl did not finish within 60 s".into()))
        }),
    );
    result
        .expect("the namespace test timed out")
        .unwrap_or_else(|e| panic!("{e}"));
}
