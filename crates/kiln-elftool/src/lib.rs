//! The queries orchestrators run on unikernel images, with the output of
//! Solo5's `solo5-elftool` (spec: Solo5's `elftool/elftool.c` behaviour and
//! `include/solo5/{elf_abi,mft_abi}.h`): `query-manifest IMAGE` prints the
//! manifest's devices and `query-abi IMAGE` the ABI target and version, as
//! JSON on stdout; albatross and urunc parse these to decide which devices
//! to attach and which tender to start.
//!
//! The notes are found as Solo5's tenders find them: in the image's
//! `PT_NOTE` program headers, by owner `"Solo5"` and type, read with the
//! `object` crate's note iterator at Solo5's 4-byte alignment whatever the
//! segment's `p_align` says (as the tenders read them); the manifest is validated by [`kiln_abi::mft`] before it
//! is printed. Any ABI target is accepted (a virtio image's manifest can be
//! queried too). `gen-manifest`, the build-time generator of C manifest
//! sources, is not provided.
#![deny(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;

use kiln_abi::mft::{Manifest, MftType};
use kiln_abi::note::{ABI_NOTE_TYPE, AbiInfo, AbiTarget, MFT_NOTE_TYPE, NOTE_ALIGN, is_solo5_note};
use object::elf::{self, FileHeader64};
use object::read::elf::{ElfFile64, NoteIterator, ProgramHeader as _};
use thiserror::Error;

/// Why a query failed. The messages are solo5-elftool's.
#[derive(Debug, Error)]
pub enum ElftoolError {
    /// The image cannot be read.
    #[error("{path}: Could not open: {source}")]
    Open {
        /// The image path.
        path: String,
        /// What the host said.
        #[source]
        source: std::io::Error,
    },
    /// Not an ELF image, or no such note in it.
    #[error("{path}: No Solo5 {what} found in executable")]
    NoNote {
        /// The image path.
        path: String,
        /// "manifest" or "ABI information".
        what: &'static str,
    },
    /// The manifest note is there but invalid.
    #[error("{path}: Manifest validation failed: {source}")]
    Invalid {
        /// The image path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: kiln_abi::mft::MftError,
    },
}

/// The descriptor of the first Solo5 note of type `kind` in a `PT_NOTE`
/// program header of the ELF image `data`.
fn find_note(data: &[u8], kind: u32) -> Option<&[u8]> {
    let file = ElfFile64::<object::LittleEndian>::parse(data).ok()?;
    let endian = file.endian();
    for phdr in file.elf_program_headers() {
        if phdr.p_type(endian) != elf::PT_NOTE {
            continue;
        }
        let Ok(bytes) = phdr.data(endian, data) else {
            continue;
        };
        let Ok(mut notes) = NoteIterator::<FileHeader64<object::LittleEndian>>::new(
            endian,
            NOTE_ALIGN as u64,
            bytes,
        ) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if is_solo5_note(note.name_bytes(), note.n_type(endian).0, kind) {
                return Some(note.desc());
            }
        }
    }
    None
}

/// `query-manifest` on the image bytes `data` read from `path`: the JSON
/// solo5-elftool prints.
pub fn query_manifest(path: &str, data: &[u8]) -> Result<String, ElftoolError> {
    let desc = find_note(data, MFT_NOTE_TYPE).ok_or_else(|| ElftoolError::NoNote {
        path: path.to_string(),
        what: "manifest",
    })?;
    let mft = Manifest::from_note_desc(desc).map_err(|source| ElftoolError::Invalid {
        path: path.to_string(),
        source,
    })?;
    let devices: Vec<_> = mft
        .devices()
        .filter(|d| d.kind != MftType::ReservedFirst)
        .collect();
    let mut out =
        String::from("{\n  \"type\": \"solo5.manifest\",\n  \"version\": 1,\n  \"devices\": [\n");
    for (i, d) in devices.iter().enumerate() {
        let comma = if i + 1 == devices.len() { "" } else { "," };
        // Names are `[A-Za-z0-9_-]` (validated): nothing to escape.
        let _ = writeln!(
            out,
            "    {{ \"name\": \"{}\", \"type\": \"{}\" }}{comma}",
            d.name,
            d.kind.name()
        );
    }
    out.push_str("  ]\n}\n");
    Ok(out)
}

/// `query-abi` on the image bytes `data` read from `path`: the JSON
/// solo5-elftool prints (target `unknown` for a value it does not know).
pub fn query_abi(path: &str, data: &[u8]) -> Result<String, ElftoolError> {
    let no_note = || ElftoolError::NoNote {
        path: path.to_string(),
        what: "ABI information",
    };
    let desc = find_note(data, ABI_NOTE_TYPE).ok_or_else(no_note)?;
    let info = AbiInfo::parse(desc).map_err(|_| no_note())?;
    let target = AbiTarget::from_u32(info.target).map_or("unknown", AbiTarget::name);
    Ok(format!(
        "{{\n  \"type\": \"solo5.abi\",\n  \"target\": \"{target}\",\n  \"version\": {}\n}}\n",
        info.version
    ))
}

/// The usage text, naming the program `prog`.
pub fn usage(prog: &str) -> String {
    format!(
        "usage: {prog} COMMAND ...\n\nCOMMAND is:\n    query-abi BINARY:\n        Display the ABI target and version from BINARY.\n    query-manifest BINARY:\n        Display the application manifest from BINARY.\n"
    )
}

/// What a command line produced: stdout text, or an error line for stderr,
/// and the exit code (0, or 1 as solo5-elftool's `EXIT_FAILURE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What goes to stdout.
    pub stdout: String,
    /// What goes to stderr.
    pub stderr: String,
    /// The exit code.
    pub code: u8,
}

/// Runs the command line `args` (after the program name `prog`).
pub fn run(prog: &str, args: &[String]) -> Outcome {
    type Query = fn(&str, &[u8]) -> Result<String, ElftoolError>;
    let query: (Query, &String) = match args {
        [cmd, image] if cmd == "query-manifest" => (query_manifest, image),
        [cmd, image] if cmd == "query-abi" => (query_abi, image),
        _ => {
            return Outcome {
                stdout: String::new(),
                stderr: usage(prog),
                code: 1,
            };
        }
    };
    let (f, image) = query;
    let result = std::fs::read(Path::new(image))
        .map_err(|source| ElftoolError::Open {
            path: image.clone(),
            source,
        })
        .and_then(|data| f(image, &data));
    match result {
        Ok(stdout) => Outcome {
            stdout,
            stderr: String::new(),
            code: 0,
        },
        Err(e) => Outcome {
            stdout: String::new(),
            stderr: format!("{prog}: {e}\n"),
            code: 1,
        },
    }
}
