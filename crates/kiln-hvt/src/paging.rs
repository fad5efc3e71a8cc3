//! Guest-virtual addresses, as the debugger and core dumps see them: a walk
//! of the guest's own 4-level page tables (Intel SDM vol. 3, section 4.5)
//! from its CR3, every entry read through [`GuestMemory`]'s checked
//! accessor.
//!
//! The tables are the guest's, so hostile: an entry may point outside guest
//! memory, at itself, or map one page at every address. A translation
//! reads at most four entries; [`mappings`] reads at most
//! [`MAX_ENTRIES_READ`] entries and reports at most guest memory's size of
//! mapped bytes, so neither can be made to loop, allocate without bound or
//! touch host memory.

use thiserror::Error;

use crate::guest::GuestMemory;

/// Size of a small page.
pub const PAGE: u64 = 0x1000;
/// Present.
const PRESENT: u64 = 1 << 0;
/// Writable.
const WRITABLE: u64 = 1 << 1;
/// A large page (1 GiB in a PDPT entry, 2 MiB in a PD entry).
const HUGE: u64 = 1 << 7;
/// No-execute.
const NO_EXECUTE: u64 = 1 << 63;
/// The physical-address bits of an entry (bits 12 to 51).
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Entries per table.
const ENTRIES: u64 = 512;
/// Most page-table entries [`mappings`] reads (4 MiB of tables).
pub const MAX_ENTRIES_READ: u64 = 1 << 19;

/// Why a guest-virtual address has no guest-physical one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WalkError {
    /// Bits 48 to 63 are not copies of bit 47.
    #[error("address {va:#x} is not canonical")]
    NonCanonical {
        /// The address.
        va: u64,
    },
    /// An entry on the way is not present.
    #[error("address {va:#x} is not mapped")]
    NotMapped {
        /// The address.
        va: u64,
    },
    /// A table or the page itself lies outside guest memory.
    #[error("address {va:#x}: the guest's page tables point outside guest memory ({gpa:#x})")]
    OutsideMemory {
        /// The address.
        va: u64,
        /// The guest-physical address that is outside.
        gpa: u64,
    },
}

/// Where a guest-virtual address lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address.
    pub gpa: u64,
    /// Bytes from `gpa` to the end of its page: the longest run that
    /// translates contiguously without another walk.
    pub len: u64,
    /// Whether the page is writable (for the core file's segment flags).
    pub writable: bool,
    /// Whether the page is executable.
    pub executable: bool,
}

fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

fn entry(mem: &GuestMemory, table: u64, index: u64, va: u64) -> Result<u64, WalkError> {
    let gpa = table + index * 8;
    mem.read_array::<8>(gpa)
        .map(u64::from_le_bytes)
        .map_err(|_| WalkError::OutsideMemory { va, gpa })
}

/// Translates `va` through the tables at `cr3` (4-level paging, as kiln's
/// guests and the tender's boot tables use).
pub fn translate(mem: &GuestMemory, cr3: u64, va: u64) -> Result<Translation, WalkError> {
    if !canonical(va) {
        return Err(WalkError::NonCanonical { va });
    }
    let mut table = cr3 & ADDRESS;
    let mut writable = true;
    let mut executable = true;
    // PML4 (bits 39-47), PDPT (30-38), PD (21-29), PT (12-20).
    for level in (0..4u32).rev() {
        let shift = 12 + 9 * level;
        let e = entry(mem, table, (va >> shift) % ENTRIES, va)?;
        if e & PRESENT == 0 {
            return Err(WalkError::NotMapped { va });
        }
        writable &= e & WRITABLE != 0;
        executable &= e & NO_EXECUTE == 0;
        // A large page in the PDPT (level 2) or PD (level 1), or a PT entry.
        if level == 0 || (level <= 2 && e & HUGE != 0) {
            let size = 1u64 << shift;
            let base = e & ADDRESS & !(size - 1);
            let offset = va & (size - 1);
            let gpa = base + offset;
            let len = size - offset;
            // The page must exist, at least the byte asked for.
            if mem.checked(gpa, 1).is_err() {
                return Err(WalkError::OutsideMemory { va, gpa });
            }
            return Ok(Translation {
                gpa,
                len,
                writable,
                executable,
            });
        }
        table = e & ADDRESS;
    }
    // The loop returns at level 0.
    Err(WalkError::NotMapped { va })
}

/// Calls `f` with each guest-physical run of `va..va + len`, in order;
/// stops at the first address that does not translate.
pub fn for_each_run(
    mem: &GuestMemory,
    cr3: u64,
    va: u64,
    len: u64,
    mut f: impl FnMut(u64, u64) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    let mut done = 0u64;
    while done < len {
        let at = va.wrapping_add(done);
        let t = translate(mem, cr3, at)?;
        // The run must lie in guest memory to its end, not just start there.
        let n = t.len.min(len - done).min(mem.size().saturating_sub(t.gpa));
        if n == 0 {
            return Err(WalkError::OutsideMemory { va: at, gpa: t.gpa });
        }
        f(t.gpa, n)?;
        done += n;
    }
    Ok(())
}

/// A run of guest-virtual memory mapped to contiguous guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First guest-virtual address.
    pub va: u64,
    /// Its guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Writable.
    pub writable: bool,
    /// Executable.
    pub executable: bool,
}

struct Walk<'a> {
    mem: &'a GuestMemory,
    reads: u64,
    mapped: u64,
    out: Vec<Mapping>,
}

impl Walk<'_> {
    fn table(&mut self, table: u64, level: u32, va_base: u64, writable: bool, executable: bool) {
        let shift = 12 + 9 * level;
        for index in 0..ENTRIES {
            if self.reads >= MAX_ENTRIES_READ || self.mapped >= self.mem.size() {
                return;
            }
            self.reads += 1;
            let Ok(bytes) = self.mem.read_array::<8>(table + index * 8) else {
                return;
            };
            let e = u64::from_le_bytes(bytes);
            if e & PRESENT == 0 {
                continue;
            }
            let mut va = va_base | (index << shift);
            if va & (1 << 47) != 0 {
                va |= 0xffff_0000_0000_0000;
            }
            let writable = writable && e & WRITABLE != 0;
            let executable = executable && e & NO_EXECUTE == 0;
            if level == 0 || (level <= 2 && e & HUGE != 0) {
                let size = 1u64 << shift;
                let gpa = e & ADDRESS & !(size - 1);
                // Only pages wholly inside guest memory, and no more
                // bytes in all than guest memory has.
                let size = size.min(self.mem.size() - self.mapped);
                if self.mem.checked(gpa, size).is_err() {
                    continue;
                }
                self.mapped += size;
                self.push(Mapping {
                    va,
                    gpa,
                    len: size,
                    writable,
                    executable,
                });
            } else {
                self.table(e & ADDRESS, level - 1, va, writable, executable);
            }
        }
    }

    fn push(&mut self, m: Mapping) {
        if let Some(last) = self.out.last_mut()
            && last.va.checked_add(last.len) == Some(m.va)
            && last.gpa + last.len == m.gpa
            && last.writable == m.writable
            && last.executable == m.executable
        {
            last.len += m.len;
            return;
        }
        self.out.push(m);
    }
}

/// Every mapped run of the tables at `cr3`, in address order, merged where
/// contiguous; bounded by [`MAX_ENTRIES_READ`] and by guest memory's size.
pub fn mappings(mem: &GuestMemory, cr3: u64) -> Vec<Mapping> {
    let mut walk = Walk {
        mem,
        reads: 0,
        mapped: 0,
        out: Vec::new(),
    };
    walk.table(cr3 & ADDRESS, 3, 0, true, true);
    walk.out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB2: u64 = 0x20_0000;

    /// 4 MiB of guest memory with tables at 0x1000 (PML4), 0x2000 (PDPT),
    /// 0x3000 (PD), 0x4000 (PT).
    fn memory() -> GuestMemory {
        let mut mem = GuestMemory::new(2 * MB2).unwrap();
        set(&mut mem, 0x1000, 0, 0x2000 | PRESENT | WRITABLE);
        set(&mut mem, 0x2000, 0, 0x3000 | PRESENT | WRITABLE);
        mem
    }

    fn set(mem: &mut GuestMemory, table: u64, index: u64, value: u64) {
        mem.write(table + index * 8, &value.to_le_bytes()).unwrap();
    }

    #[test]
    fn small_and_large_pages_translate() {
        let mut mem = memory();
        // 0..2 MiB through a PT: page 1 maps 0x5000, read-only and NX.
        set(&mut mem, 0x3000, 0, 0x4000 | PRESENT | WRITABLE);
        set(&mut mem, 0x4000, 1, 0x5000 | PRESENT | NO_EXECUTE);
        // 2..4 MiB: one identity large page.
        set(&mut mem, 0x3000, 1, MB2 | PRESENT | WRITABLE | HUGE);
        let t = translate(&mem, 0x1000, 0x1234).unwrap();
        assert_eq!(
            t,
            Translation {
                gpa: 0x5234,
                len: 0xdcc,
                writable: false,
                executable: false
            }
        );
        let t = translate(&mem, 0x1000, MB2 + 0x10).unwrap();
        assert_eq!((t.gpa, t.len, t.writable), (MB2 + 0x10, MB2 - 0x10, true));
        assert_eq!(
            translate(&mem, 0x1000, 0x2000),
            Err(WalkError::NotMapped { va: 0x2000 })
        );
        let mut runs = Vec::new();
        for_each_run(&mem, 0x1000, 0x1ff0, 0x20, |gpa, n| {
            runs.push((gpa, n));
            Ok(())
        })
        .unwrap_err();
        assert_eq!(runs, vec![(0x5ff0, 0x10)]);
        assert_eq!(
            mappings(&mem, 0x1000),
            vec![
                Mapping {
                    va: 0x1000,
                    gpa: 0x5000,
                    len: PAGE,
                    writable: false,
                    executable: false
                },
                Mapping {
                    va: MB2,
                    gpa: MB2,
                    len: MB2,
                    writable: true,
                    executable: true
                }
            ]
        );
    }

    #[test]
    fn hostile_tables_give_errors_not_crashes() {
        let mut mem = memory();
        // A PD entry pointing past guest memory, one whose large page
        // is past it, a 1 GiB page larger than guest memory.
        set(&mut mem, 0x3000, 0, 0xf_ffff_ffff_f000 | PRESENT);
        set(&mut mem, 0x3000, 1, 0x4000_0000 | PRESENT | HUGE);
        set(&mut mem, 0x2000, 1, PRESENT | HUGE);
        assert!(matches!(
            translate(&mem, 0x1000, 0x10),
            Err(WalkError::OutsideMemory { .. })
        ));
        assert!(matches!(
            translate(&mem, 0x1000, MB2),
            Err(WalkError::OutsideMemory { .. })
        ));
        // The 1 GiB page starts inside memory: the byte asked for is there,
        // one past guest memory is not.
        assert_eq!(translate(&mem, 0x1000, 1 << 30).unwrap().gpa, 0);
        assert!(translate(&mem, 0x1000, (1 << 30) + 2 * MB2).is_err());
        let mut total = 0;
        for_each_run(&mem, 0x1000, (1 << 30) + 2 * MB2 - 8, 16, |_, n| {
            total += n;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(total, 8);
        // CR3 itself outside memory, non-canonical addresses.
        assert!(translate(&mem, u64::MAX, 0).is_err());
        assert_eq!(
            translate(&mem, 0x1000, 0x8000_0000_0000),
            Err(WalkError::NonCanonical {
                va: 0x8000_0000_0000
            })
        );
        // Only the part of the 1 GiB page inside memory is dumped.
        let m = mappings(&mem, 0x1000);
        assert_eq!(m.iter().map(|m| m.len).sum::<u64>(), mem.size());
    }

    #[test]
    fn self_referencing_tables_are_bounded() {
        let mut mem = memory();
        // Every entry of every level points at the PML4 itself: a walk of
        // 512^4 leaves if unbounded, each mapping page 0x1000.
        for i in 0..ENTRIES {
            set(&mut mem, 0x1000, i, 0x1000 | PRESENT | WRITABLE);
        }
        let t = translate(&mem, 0x1000, 0x7fff_ffff_f123).unwrap();
        assert_eq!(t.gpa, 0x1123);
        let m = mappings(&mem, 0x1000);
        assert!(m.iter().map(|m| m.len).sum::<u64>() <= mem.size());
        assert!(m.len() as u64 <= MAX_ENTRIES_READ);
    }

    /// Random tables: every entry a random value, most of them present and
    /// pointing inside guest memory. Whatever they say, walks end with a
    /// translation inside memory or an error, and the dump stays bounded.
    #[test]
    fn random_tables_never_panic_or_escape() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..8 {
            let mut mem = GuestMemory::new(MB2).unwrap();
            for i in 0..(MB2 / 8) {
                let r = next();
                let value = match r % 4 {
                    // Present, inside memory, random flags (large pages too).
                    0 | 1 => (r & 0x1f_f000) | (r >> 56) | PRESENT,
                    // Anything at all.
                    2 => r,
                    _ => 0,
                };
                set(&mut mem, 0, i, value);
            }
            let cr3 = next() & 0x1f_f000;
            for _ in 0..20_000 {
                let va = next();
                if let Ok(t) = translate(&mem, cr3, va) {
                    assert!(t.gpa < mem.size(), "round {round}: {va:#x} -> {t:?}");
                }
                let mut total = 0;
                let _ = for_each_run(&mem, cr3, va, 3 * PAGE, |gpa, n| {
                    assert!(mem.checked(gpa, n).is_ok());
                    total += n;
                    Ok(())
                });
                assert!(total <= 3 * PAGE);
            }
            let m = mappings(&mem, cr3);
            assert!(m.iter().map(|m| m.len).sum::<u64>() <= mem.size());
            assert!(m.iter().all(|m| mem.checked(m.gpa, m.len).is_ok()));
        }
    }
}
