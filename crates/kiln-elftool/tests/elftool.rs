//! `solo5-elftool` on hand-made Solo5-layout images (a PT_NOTE with the ABI
//! and manifest notes, one PT_LOAD), checked against solo5-elftool's exact
//! output, exit codes and messages.

use std::process::Command;

use kiln_abi::note::{AbiNote, AbiTarget};
use kiln_abi::{MftEntry, MftNote};
use kiln_testsupport::image::{Image, notes};
use zerocopy::IntoBytes;

/// A minimal ELF64 x86_64 executable whose PT_NOTE holds `notes`.
fn image(notes: &[u8]) -> Vec<u8> {
    image_aligned(notes, 4)
}

/// [`image`] with the PT_NOTE's `p_align` set to `note_align`.
fn image_aligned(notes: &[u8], note_align: u64) -> Vec<u8> {
    Image {
        notes,
        code: &[0; 16],
        note_memsz: notes.len() as u64,
        note_align,
        load_memsz: 16,
        load_align: 0x1000,
    }
    .build()
}

/// A directory `kiln-elftool-NAME-` and a random suffix, removed when
/// dropped.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("kiln-elftool-{name}-"))
        .tempdir()
        .expect("mkdir")
}

/// Runs solo5-elftool: (exit code, stdout, stderr).
fn elftool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_solo5-elftool"))
        .args(args)
        .output()
        .expect("run solo5-elftool");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn queries_print_solo5_elftools_json() {
    let dir = temp_dir("json");
    let mft = MftNote::new([MftEntry::net("service"), MftEntry::block("storage")]);
    let path = dir.path().join("devices.hvt");
    std::fs::write(&path, image(&notes(AbiNote::hvt(), &mft))).unwrap();
    let p = path.to_str().unwrap();
    assert_eq!(
        elftool(&["query-manifest", p]),
        (
            0,
            "{\n  \"type\": \"solo5.manifest\",\n  \"version\": 1,\n  \"devices\": [\n    { \"name\": \"service\", \"type\": \"NET_BASIC\" },\n    { \"name\": \"storage\", \"type\": \"BLOCK_BASIC\" }\n  ]\n}\n".into(),
            String::new()
        )
    );
    assert_eq!(
        elftool(&["query-abi", p]),
        (
            0,
            "{\n  \"type\": \"solo5.abi\",\n  \"target\": \"hvt\",\n  \"version\": 2\n}\n".into(),
            String::new()
        )
    );

    // A note segment that says `p_align` 8 (as a linker may): Solo5's
    // notes are still read 4-byte aligned, as solo5-elftool reads them.
    let path = dir.path().join("aligned8.hvt");
    std::fs::write(&path, image_aligned(&notes(AbiNote::hvt(), &mft), 8)).unwrap();
    let (code, out, err) = elftool(&["query-manifest", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"storage\""), "{out}");

    // No devices; spt; a target solo5-elftool knows and kiln does not run.
    let empty: MftNote<0> = MftNote::new([]);
    let path = dir.path().join("empty.spt");
    std::fs::write(&path, image(&notes(AbiNote::spt(), &empty))).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, _) = elftool(&["query-manifest", p]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{\n  \"type\": \"solo5.manifest\",\n  \"version\": 1,\n  \"devices\": [\n  ]\n}\n"
    );
    assert!(elftool(&["query-abi", p]).1.contains("\"target\": \"spt\""));
    let path = dir.path().join("x.virtio");
    std::fs::write(
        &path,
        image(&notes(AbiNote::new(AbiTarget::Virtio, 1), &empty)),
    )
    .unwrap();
    let out = elftool(&["query-abi", path.to_str().unwrap()]).1;
    assert!(
        out.contains("\"target\": \"virtio\",\n  \"version\": 1\n"),
        "{out}"
    );
}

#[test]
fn bad_images_and_command_lines_exit_1() {
    let dir = temp_dir("bad");
    // An ELF without notes, a file that is not an ELF, no file.
    let no_notes = dir.path().join("no-notes.hvt");
    std::fs::write(&no_notes, image(&[])).unwrap();
    let text = dir.path().join("text.hvt");
    std::fs::write(&text, b"not an image").unwrap();
    for path in [&no_notes, &text] {
        let p = path.to_str().unwrap();
        let (code, out, err) = elftool(&["query-manifest", p]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            format!("solo5-elftool: {p}: No Solo5 manifest found in executable\n")
        );
        let (code, _, err) = elftool(&["query-abi", p]);
        assert_eq!(code, 1);
        assert!(
            err.ends_with("No Solo5 ABI information found in executable\n"),
            "{err}"
        );
    }
    let (code, _, err) = elftool(&["query-abi", "/nonexistent/k.hvt"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("solo5-elftool: /nonexistent/k.hvt: Could not open"),
        "{err}"
    );
    // A manifest that does not validate: entry 0 not the reserved one.
    let mut bad = notes(AbiNote::hvt(), &MftNote::new([MftEntry::net("service")]));
    let abi_len = AbiNote::hvt().as_bytes().len();
    // Note header (12) + name (8) + desc padding (4) + mft header (8): the
    // first entry's type field follows its 68-byte name.
    let kind_at = abi_len + 12 + 8 + 4 + 8 + 68;
    bad[kind_at..kind_at + 4].copy_from_slice(&1u32.to_le_bytes());
    let path = dir.path().join("bad-mft.hvt");
    std::fs::write(&path, image(&bad)).unwrap();
    let (code, _, err) = elftool(&["query-manifest", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("Manifest validation failed"), "{err}");
    // Usage.
    for args in [
        &[][..],
        &["query-abi"],
        &["gen-manifest", "a", "b"],
        &["query-abi", "a", "b"],
    ] {
        let (code, out, err) = elftool(args);
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
        assert!(err.starts_with("usage: solo5-elftool COMMAND ..."), "{err}");
    }
}
