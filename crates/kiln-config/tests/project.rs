//! A unikernel directory's saved state: the choices of the last
//! `configure`.

use kiln_config::{Choices, ConfigError, Impl, Project, Target};

mod common;
use common::copy_hello;

#[test]
fn saved_choices_round_trip() {
    let dir = copy_hello("saved-choices");
    let project = Project::open(&dir).unwrap();
    assert!(project.saved_choices(Target::Unix).unwrap().is_none());
    let choices = Choices {
        net: Some(Impl::Direct),
        ..Choices::default()
    };
    project.configure(Target::Unix, choices).unwrap();
    let saved = project.saved_choices(Target::Unix).unwrap().unwrap();
    assert_eq!(saved.net, Some(Impl::Direct));
    assert_eq!(saved.kv_ro, None);
}

/// Regression: an unknown line or value in the saved choices was dropped,
/// so a build silently used the defaults.
#[test]
fn unreadable_saved_choices_are_an_error() {
    let dir = copy_hello("saved-choices-bad");
    let project = Project::open(&dir).unwrap();
    project.configure(Target::Unix, Choices::default()).unwrap();
    let file = project.build_dir(Target::Unix).join("kiln-choices");
    for bad in ["net=carrier-pigeon\n", "colour=blue\n"] {
        std::fs::write(&file, bad).unwrap();
        let err = project.saved_choices(Target::Unix).unwrap_err();
        let ConfigError::Invalid(located) = &err else {
            panic!("expected a located error, got {err}");
        };
        let shown = kiln_config::diagnostic::render(located, false);
        assert!(shown.contains("kiln-choices:1:1"), "{shown}");
        assert!(shown.contains("kiln configure -t unix"), "{shown}");
        assert_eq!(err.exit_code(), 2);
    }
}
