//! `solo5-elftool` on hand-made Solo5-layout images (a PT_NOTE with the ABI
//! and manifest notes, one PT_LOAD), checked against solo5-elftool's exact
//! output, exit codes and messages.

use std::path::PathBuf;
use std::process::Command;

use kiln_abi::note::{AbiNote, AbiTarget};
use kiln_abi::{MftEntry, MftNote};
use zerocopy::IntoBytes;

/// A minimal ELF64 x86_64 executable whose PT_NOTE holds `notes`.
fn image(notes: &[u8]) -> Vec<u8> {
    image_aligned(notes, 4)
}

/// [`image`] with the PT_NOTE's `p_align` set to `note_align`.
fn image_aligned(notes: &[u8], note_align: u64) -> Vec<u8> {
    let notes_at = 64 + 2 * 56;
    let code_at = (notes_at + notes.len()).next_multiple_of(0x1000);
    let mut out = vec![0u8; code_at + 16];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&2u16.to_le_bytes());
    let phdrs: [(u32, u32, usize, u64, usize, u64); 2] = [
        (4, 4, notes_at, 0, notes.len(), note_align),
        (1, 5, code_at, 0x10_0000, 16, 0x1000),
    ];
    for (i, (kind, flags, off, vaddr, size, align)) in phdrs.into_iter().enumerate() {
        let p = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
        p[0..4].copy_from_slice(&kind.to_le_bytes());
        p[4..8].copy_from_slice(&flags.to_le_bytes());
        p[8..16].copy_from_slice(&(off as u64).to_le_bytes());
        p[16..24].copy_from_slice(&vaddr.to_le_bytes());
        p[24..32].copy_from_slice(&vaddr.to_le_bytes());
        p[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        p[40..48].copy_from_slice(&(size as u64).to_le_bytes());
        p[48..56].copy_from_slice(&align.to_le_bytes());
    }
    out[notes_at..notes_at + notes.len()].copy_from_slice(notes);
    out
}

fn notes<const N: usize>(abi: AbiNote, mft: &MftNote<N>) -> Vec<u8> {
    let mut out = abi.as_bytes().to_vec();
    let mut buf = vec![0u8; MftNote::<N>::SIZE];
    let n = mft.encode(&mut buf).expect("encode the manifest");
    out.extend_from_slice(&buf[..n]);
    out
}

/// A directory removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("kiln-elftool-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("mkdir");
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    let dir = Dir::new("json");
    let mft = MftNote::new([MftEntry::net("service"), MftEntry::block("storage")]);
    let path = dir.0.join("devices.hvt");
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
    let path = dir.0.join("aligned8.hvt");
    std::fs::write(&path, image_aligned(&notes(AbiNote::hvt(), &mft), 8)).unwrap();
    let (code, out, err) = elftool(&["query-manifest", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"storage\""), "{out}");

    // No devices; spt; a target solo5-elftool knows and kiln does not run.
    let empty: MftNote<0> = MftNote::new([]);
    let path = dir.0.join("empty.spt");
    std::fs::write(&path, image(&notes(AbiNote::spt(), &empty))).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, _) = elftool(&["query-manifest", p]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{\n  \"type\": \"solo5.manifest\",\n  \"version\": 1,\n  \"devices\": [\n  ]\n}\n"
    );
    assert!(elftool(&["query-abi", p]).1.contains("\"target\": \"spt\""));
    let path = dir.0.join("x.virtio");
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
    let dir = Dir::new("bad");
    // An ELF without notes, a file that is not an ELF, no file.
    let no_notes = dir.0.join("no-notes.hvt");
    std::fs::write(&no_notes, image(&[])).unwrap();
    let text = dir.0.join("text.hvt");
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
    let path = dir.0.join("bad-mft.hvt");
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
