//! Hand-made images in Solo5's layout, for tests that need a guest of a
//! few instructions or a file to check notes in: an ELF64 x86_64
//! executable with a PT_NOTE segment (the ABI and manifest notes, and any
//! of kiln's) and one R+X PT_LOAD segment holding the code at the entry
//! point. The Solo5 ABI (`include/solo5/elf_abi.h`) and kiln-abi's note
//! types say what the notes hold.

use kiln_abi::{AbiNote, MftNote};
use zerocopy::IntoBytes;

/// Where the code is loaded, and so the entry point (Solo5's linker
/// scripts start the text at 1 MiB).
pub const ENTRY: u64 = 0x10_0000;

/// The notes of an image of `abi` with the manifest `mft`.
pub fn notes<const N: usize>(abi: AbiNote, mft: &MftNote<N>) -> Vec<u8> {
    let mut out = abi.as_bytes().to_vec();
    let mut buf = vec![0u8; MftNote::<N>::SIZE];
    let n = mft.encode(&mut buf).expect("encode the manifest");
    out.extend_from_slice(&buf[..n]);
    out
}

/// An image: its PT_NOTE segment right after the two program headers, its
/// code at the next page of the file, loaded at [`ENTRY`].
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    /// The PT_NOTE segment's contents.
    pub notes: &'a [u8],
    /// The PT_LOAD segment's contents.
    pub code: &'a [u8],
    /// The PT_NOTE segment's `p_memsz`.
    pub note_memsz: u64,
    /// The PT_NOTE segment's `p_align`.
    pub note_align: u64,
    /// The PT_LOAD segment's `p_memsz`.
    pub load_memsz: u64,
    /// The PT_LOAD segment's `p_align`.
    pub load_align: u64,
}

impl<'a> Image<'a> {
    /// A guest image: `code` in a page of memory at least, both segments
    /// 4-aligned, the notes taking no memory.
    pub fn guest(notes: &'a [u8], code: &'a [u8]) -> Image<'a> {
        Image {
            notes,
            code,
            note_memsz: 0,
            note_align: 4,
            load_memsz: (code.len() as u64).max(0x1000),
            load_align: 4,
        }
    }

    /// The image's bytes.
    pub fn build(&self) -> Vec<u8> {
        let notes_at = 64 + 2 * 56;
        // File offset of the code: page-aligned like its address.
        let code_at = (notes_at + self.notes.len()).next_multiple_of(0x1000);
        let mut out = vec![0u8; code_at];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little-endian
        out[6] = 1;
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&ENTRY.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&2u16.to_le_bytes());
        // (p_type, p_flags, offset, vaddr, filesz, memsz, align)
        let phdrs: [(u32, u32, usize, u64, usize, u64, u64); 2] = [
            (
                4, // PT_NOTE, R
                4,
                notes_at,
                0,
                self.notes.len(),
                self.note_memsz,
                self.note_align,
            ),
            (
                1, // PT_LOAD, R+X
                5,
                code_at,
                ENTRY,
                self.code.len(),
                self.load_memsz,
                self.load_align,
            ),
        ];
        for (i, (kind, flags, off, vaddr, filesz, memsz, align)) in phdrs.into_iter().enumerate() {
            let p = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[4..8].copy_from_slice(&flags.to_le_bytes());
            p[8..16].copy_from_slice(&(off as u64).to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[24..32].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&(filesz as u64).to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            p[48..56].copy_from_slice(&align.to_le_bytes());
        }
        out[notes_at..notes_at + self.notes.len()].copy_from_slice(self.notes);
        out.extend_from_slice(self.code);
        out
    }
}

/// A new file `PREFIX*SUFFIX` in the temporary directory holding `bytes`,
/// removed when dropped, even if the test fails.
pub fn temp_file(prefix: &str, suffix: &str, bytes: &[u8]) -> tempfile::TempPath {
    let path = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .tempfile()
        .expect("create a temporary file")
        .into_temp_path();
    std::fs::write(&path, bytes).expect("write the temporary file");
    path
}
