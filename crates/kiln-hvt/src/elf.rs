//! The image loader for hvt: [`kiln_tender::elf`] validates a static
//! x86_64 ELF executable against the hvt ABI; [`Load::load`] copies its
//! segments into guest memory through the checked accessor.

use kiln_tender::Hvt;

pub use kiln_tender::elf::{MAX_SEGMENTS, Protection, Segment};

use crate::guest::{GuestMemError, GuestMemory};

/// Why an hvt image was refused.
pub type ElfError = kiln_tender::elf::ElfError<Hvt>;
/// A validated hvt image.
pub type Image<'a> = kiln_tender::elf::Image<'a, Hvt>;

/// Loading a validated image into guest memory.
pub trait Load {
    /// Copies the segments into `mem`, which must be freshly zeroed (the
    /// part of each segment past its file bytes is left as is).
    fn load(&self, mem: &mut GuestMemory) -> Result<(), GuestMemError>;
}

impl Load for Image<'_> {
    fn load(&self, mem: &mut GuestMemory) -> Result<(), GuestMemError> {
        for s in &self.segments {
            mem.write(s.vaddr, s.file)?;
        }
        Ok(())
    }
}
