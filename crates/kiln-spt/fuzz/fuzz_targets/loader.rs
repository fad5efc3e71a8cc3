//! Fuzzes the spt image validator: ELF header, program headers, notes, ABI
//! note, manifest and segment checks. Run with
//! `cargo fuzz run loader fuzz/seeds/loader` from `crates/kiln-spt`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mem_size in [8 << 20, 512 << 20] {
        if let Ok(image) = kiln_spt::elf::Image::parse(data, mem_size) {
            assert!(image.kernel_end <= mem_size);
            for s in &image.segments {
                let (start, end) = s.pages();
                assert!(start >= 0x10_0000 && end <= mem_size);
            }
        }
    }
});
