//! The `kiln-spt` command's output and exit status for the paths that do
//! not need a guest image: help, version, and refused command lines.

use std::process::Command;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn kiln_spt(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-spt"))
        .args(args)
        .output()
        .expect("run kiln-spt");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn help_lists_every_flag() {
    let out = kiln_spt(&["--help"]);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout
            .starts_with("usage: kiln-spt [--mem=MB] [MODULE FLAGS...] [--] KERNEL [ARGS...]\n")
    );
    for flag in [
        "--mem=MB",
        "--net:NAME=IFACE",
        "--net-mac:NAME=MAC",
        "--block:NAME=PATH",
        "--x-exec-heap",
    ] {
        assert!(out.stdout.contains(flag), "{flag} missing:\n{}", out.stdout);
    }
}

#[cfg(all(feature = "net", feature = "block"))]
#[test]
fn version_names_the_abi_and_modules() {
    let out = kiln_spt(&["--version"]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.starts_with("kiln-spt "), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("(Solo5 spt ABI 2, modules: net, block)"),
        "{}",
        out.stdout
    );
}

#[test]
fn refused_command_lines_say_why_and_exit_1() {
    let cases: [(&[&str], &str); 5] = [
        (
            &[],
            "kiln-spt: error: no KERNEL given; hint: kiln-spt [--mem=MB]",
        ),
        (
            &["--frob", "k"],
            "kiln-spt: error: unknown flag --frob; hint: see kiln-spt --help",
        ),
        (&["--mem=lots", "k"], "kiln-spt: error: bad flag --mem=lots"),
        (
            &["--mem=1", "k"],
            "kiln-spt: error: --mem=1: guest memory must be 2 to 4096 MiB",
        ),
        (
            &["/nonexistent/k.spt"],
            "kiln-spt: error: cannot read /nonexistent/k.spt\n  caused by: No such file or directory",
        ),
    ];
    for (args, expected) in cases {
        let out = kiln_spt(args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.starts_with(expected),
            "{args:?}: expected {expected:?}, got:\n{}",
            out.stderr
        );
    }
}
