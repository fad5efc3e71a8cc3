//! Fuzzes the hvt image loader: ELF header, program headers, notes (the
//! `object` crate's iterator), ABI note, manifest and segment checks. Run with
//! `cargo fuzz run loader fuzz/seeds/loader` from `crates/kiln-hvt`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mem_size in [8 << 20, 512 << 20] {
        if let Ok(image) = kiln_hvt::elf::Image::parse(data, mem_size) {
            assert!(image.kernel_end <= mem_size);
            assert!(
                image
                    .segments
                    .iter()
                    .any(|s| s.prot == kiln_hvt::elf::Protection::ReadExec)
            );
        }
    }
    let _ = kiln_abi::mft::Manifest::new_checked(data);
    let _ = kiln_abi::note::AbiInfo::parse(data);
});
