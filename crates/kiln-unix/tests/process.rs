//! The process around a unikernel: `exit` prints the message and exits with
//! the code; `args` returns the arguments after the program name.

use std::process::Command;

use kiln_devices::ExitStatus;

const ENV: &str = "KILN_UNIX_EXIT_STATUS";

/// Runs the inner test in a child with `code` and `message`.
fn exit_in_child(code: u8, message: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "exits_as_told", "--ignored", "--quiet"])
        .env(ENV, code.to_string());
    if let Some(message) = message {
        cmd.env("KILN_UNIX_EXIT_MESSAGE", message);
    }
    cmd.output().expect("run the test binary")
}

#[test]
fn exit_prints_the_message_and_exits_with_the_code() {
    let out = exit_in_child(7, Some("disk on fire"));
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.ends_with("error: disk on fire\n"), "{stderr:?}");

    let out = exit_in_child(0, None);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("error:"));

    let out = exit_in_child(255, None);
    assert_eq!(out.status.code(), Some(255));
}

#[test]
#[ignore = "run by exit_prints_the_message_and_exits_with_the_code"]
fn exits_as_told() {
    let code = std::env::var(ENV)
        .expect("set by the outer test")
        .parse()
        .unwrap();
    let message = std::env::var("KILN_UNIX_EXIT_MESSAGE").ok();
    kiln_unix::exit(ExitStatus { code, message });
}

#[test]
fn args_are_the_arguments_after_the_program_name() {
    let args = kiln_unix::args().unwrap();
    let std_args: Vec<String> = std::env::args().skip(1).collect();
    assert_eq!(args, std_args);
}
