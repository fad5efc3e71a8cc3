//! The image validator for spt: [`kiln_tender::elf`] for the spt target,
//! with its byte-fixture tests and the fuzz seeds' check.

use kiln_tender::Spt;

pub use kiln_tender::elf::{MAX_SEGMENTS, PAGE_SIZE, Protection, Segment};

/// Why an spt image was refused.
pub type ElfError = kiln_tender::elf::ElfError<Spt>;
/// A validated spt image.
pub type Image<'a> = kiln_tender::elf::Image<'a, Spt>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_abi::{AbiNote, MftEntry, MftNote};
    use zerocopy::IntoBytes;

    /// A minimal image: one R+X and one R+W segment, the two notes in a
    /// PT_NOTE segment, entry at the start of the code.
    pub(crate) fn image(abi: AbiNote, segments: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut notes = abi.as_bytes().to_vec();
        let mft: MftNote<1> = MftNote::new([MftEntry::net("service")]);
        let mut buf = [0u8; 1024];
        let n = mft.encode(&mut buf).unwrap();
        notes.extend_from_slice(&buf[..n]);
        let phnum = segments.len() + 1;
        let data_at = 64 + 56 * phnum;
        let mut out = vec![0u8; data_at];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little-endian
        out[6] = 1;
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&segments[0].0.to_le_bytes()); // entry
        out[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut ph =
            |i: usize, kind: u32, flags: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
                let p = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
                p[0..4].copy_from_slice(&kind.to_le_bytes());
                p[4..8].copy_from_slice(&flags.to_le_bytes());
                p[8..16].copy_from_slice(&off.to_le_bytes());
                p[16..24].copy_from_slice(&vaddr.to_le_bytes());
                p[24..32].copy_from_slice(&vaddr.to_le_bytes());
                p[32..40].copy_from_slice(&filesz.to_le_bytes());
                p[40..48].copy_from_slice(&memsz.to_le_bytes());
                p[48..56].copy_from_slice(&4u64.to_le_bytes());
            };
        let notes_at = data_at as u64;
        ph(0, 4, 4, notes_at, 0, notes.len() as u64, 0);
        for (i, &(vaddr, memsz, flags)) in segments.iter().enumerate() {
            ph(i + 1, 1, flags, notes_at, vaddr, 16, memsz);
        }
        out.extend_from_slice(&notes);
        out
    }

    const MEM: u64 = 64 << 20;

    #[test]
    fn a_valid_image_is_described() {
        let data = image(
            AbiNote::spt(),
            &[(0x10_0000, 0x1000, 5), (0x10_1000, 0x2345, 6)],
        );
        let img = Image::parse(&data, MEM).unwrap();
        assert_eq!(img.entry, 0x10_0000);
        assert_eq!(img.kernel_end, 0x10_4000);
        assert_eq!(img.segments[0].prot, Protection::ReadExec);
        assert_eq!(img.segments[1].prot, Protection::ReadWrite);
        assert_eq!(img.manifest.find("service").unwrap().index, 1);
    }

    #[test]
    fn an_hvt_image_is_refused_with_a_hint() {
        let data = image(AbiNote::hvt(), &[(0x10_0000, 0x1000, 5)]);
        let err = Image::parse(&data, MEM).unwrap_err();
        assert!(err.to_string().contains("run it with kiln-hvt"), "{err}");
    }

    #[test]
    fn bad_segments_are_refused() {
        type Case<'c> = (&'c [(u64, u64, u32)], &'c str);
        let cases: [Case<'_>; 4] = [
            (&[(0x10_0000, 0x1000, 7)], "both writable and executable"),
            (&[(0x1000, 0x1000, 5)], "below 0x100000"),
            (&[(0x10_0000, MEM, 5)], "does not fit"),
            (
                &[(0x10_0000, 0x1800, 5), (0x10_1800, 0x100, 6)],
                "share a page",
            ),
        ];
        for (segments, expected) in cases {
            let data = image(AbiNote::spt(), segments);
            let err = Image::parse(&data, MEM).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    /// Notes are read as Solo5's tenders read them, 4-byte aligned whatever
    /// the note segment's `p_align` says, and a note that runs past its
    /// segment is refused by name.
    #[test]
    fn notes_are_4_aligned_and_must_fit_their_segment() {
        let good = image(AbiNote::spt(), &[(0x10_0000, 0x1000, 5)]);
        // The PT_NOTE is the first program header; `p_align` at 48.
        let note_ph = 64;
        let mut aligned8 = good.clone();
        aligned8[note_ph + 48..note_ph + 56].copy_from_slice(&8u64.to_le_bytes());
        let img = Image::parse(&aligned8, MEM).unwrap();
        assert_eq!(img.manifest.find("service").unwrap().index, 1);
        // The manifest note (after the 36-byte ABI note) claims 64 bytes
        // more than its segment holds.
        let mft_at = 64 + 56 * 2 + 36;
        let mut long = good;
        let descsz = u32::from_le_bytes(long[mft_at + 4..mft_at + 8].try_into().unwrap());
        long[mft_at + 4..mft_at + 8].copy_from_slice(&(descsz + 64).to_le_bytes());
        let err = Image::parse(&long, MEM).unwrap_err();
        assert!(err.to_string().contains("malformed ELF note"), "{err}");
    }

    /// The fuzz seeds (`fuzz/seeds/loader`), each valid or not as its name
    /// says. `KILN_WRITE_SEEDS=1 cargo test -p kiln-spt --lib` rewrites
    /// them from the builder above.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let ok = image(
            AbiNote::spt(),
            &[(0x10_0000, 0x1000, 5), (0x10_1000, 0x2345, 6)],
        );
        vec![
            ("ok-two-segments.elf", ok.clone()),
            (
                "bad-hvt.elf",
                image(AbiNote::hvt(), &[(0x10_0000, 0x1000, 5)]),
            ),
            (
                "bad-wx.elf",
                image(AbiNote::spt(), &[(0x10_0000, 0x1000, 7)]),
            ),
            (
                "bad-shared-page.elf",
                image(
                    AbiNote::spt(),
                    &[(0x10_0000, 0x1800, 5), (0x10_1800, 0x100, 6)],
                ),
            ),
            ("bad-truncated.elf", ok[..ok.len() - 8].to_vec()),
        ]
    }

    #[test]
    fn fuzz_seeds_parse_as_named_and_mutations_do_not_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/loader");
        if std::env::var_os("KILN_WRITE_SEEDS").is_some() {
            for (name, bytes) in seeds() {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap();
            let ok = Image::parse(&data, MEM).is_ok();
            assert_eq!(ok, name.starts_with("ok-"), "{name}");
            // Deterministic mutations: every byte set to a few values.
            for i in 0..data.len() {
                for v in [0u8, 1, 0x7f, 0xff] {
                    let mut m = data.clone();
                    m[i] = v;
                    let _ = Image::parse(&m, MEM);
                }
            }
            n += 1;
        }
        assert!(n >= 5, "only {n} seeds");
    }

    #[test]
    fn truncated_files_are_refused() {
        let data = image(AbiNote::spt(), &[(0x10_0000, 0x1000, 5)]);
        for len in [0, 10, 63, 100, data.len() - 1] {
            assert!(Image::parse(&data[..len], MEM).is_err(), "length {len}");
        }
    }
}
