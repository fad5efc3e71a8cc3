//! The guest's seccomp filter, rule by rule, against a golden list: adding,
//! removing or loosening an allowed system call fails this test until the
//! list (and so the review of the sandbox) is updated.

#![cfg(all(feature = "net", feature = "block"))]

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use kiln_spt::module::Module;
use kiln_spt::{guest_rules, module, seccomp};

/// Descriptor numbers the test gives the epoll set and the timer.
const EPOLL: i32 = 1000;
const TIMER: i32 = 1001;

const GOLDEN: &[&str] = &[
    // Core: console, exit, the wait and its timer, clocks, TLS base.
    "write(fd == 1)",
    "exit_group()",
    "epoll_pwait(fd == EPOLL, sigmask == 0)",
    "timerfd_settime(fd == TIMER)",
    "clock_gettime(clock == 1)",
    "clock_gettime(clock == 0)",
    "arch_prctl(code == 4098)",
    // The net device: frames in and out on its descriptor only.
    "read(fd == NET)",
    "write(fd == NET)",
    // The block device (8 sectors of 512 bytes): whole sectors, at most
    // 64 KiB a request, at a sector-aligned offset, and offset + length
    // never past the capacity.
    "pread64(fd == DISK, count & 0x1ff == 0, count <= 65536, offset & 0x1ff == 0, offset + count <= 4096)",
    "pwrite64(fd == DISK, count & 0x1ff == 0, count <= 65536, offset & 0x1ff == 0, offset + count <= 4096)",
    "fdatasync(fd == DISK)",
    "fsync(fd == DISK)",
];

#[test]
fn the_filter_allows_exactly_the_golden_list() {
    // Removed when dropped, even if the test fails.
    let disk = tempfile::Builder::new()
        .prefix("kiln-spt-filter-")
        .tempfile()
        .expect("create the disk image")
        .into_temp_path();
    std::fs::write(&disk, vec![0u8; 8 * 512]).expect("write the disk image");
    let (ours, theirs) = UnixDatagram::pair().expect("socketpair");
    // The module takes ownership of the inherited descriptor.
    let net_fd = std::os::fd::IntoRawFd::into_raw_fd(theirs);

    let mut modules = module::compiled();
    for flag in [
        format!("--net:service=@{net_fd}"),
        format!("--block:disk={}", disk.display()),
    ] {
        let taken = modules
            .iter_mut()
            .any(|m| m.parse_flag(&flag).expect("a valid flag"));
        assert!(taken, "{flag}");
    }
    let mut disk_fd = None;
    for (handle, name) in [(1, "service"), (2, "disk")] {
        let m: &mut Box<dyn Module> = modules
            .iter_mut()
            .find(|m| m.named_devices().iter().any(|(n, _)| n == name))
            .expect("a module for the device");
        let attached = m.attach(handle, name).expect("attach");
        if name == "disk" {
            disk_fd = Some(attached.fd);
        }
    }
    let disk_fd = disk_fd.expect("the disk's descriptor");

    let rules = guest_rules(EPOLL, TIMER, &modules);
    let names = |text: String| {
        text.replace(&format!("fd == {EPOLL},"), "fd == EPOLL,")
            .replace(&format!("fd == {TIMER})"), "fd == TIMER)")
            .replace(&format!("fd == {net_fd})"), "fd == NET)")
            .replace(&format!("fd == {disk_fd},"), "fd == DISK,")
            .replace(&format!("fd == {disk_fd})"), "fd == DISK)")
    };
    let actual: Vec<String> = rules.iter().map(|r| names(r.to_string())).collect();
    assert_eq!(
        actual,
        GOLDEN,
        "the filter changed; if on purpose, update GOLDEN:\n{}",
        actual.join("\n")
    );

    let program = seccomp::compile(&rules).expect("the filter compiles");
    // BPF_MAXINSNS: the kernel refuses longer filters.
    assert!(program.len() < 4096, "{} instructions", program.len());

    // With --dumpcore: the same list, exit_group narrowed to the statuses
    // that are not an abort (255 traps, so the handler records the
    // registers for the core), nothing added.
    let mut rules = rules;
    seccomp::trap_aborts(&mut rules);
    let actual: Vec<String> = rules.iter().map(|r| names(r.to_string())).collect();
    let golden: Vec<&str> = GOLDEN
        .iter()
        .map(|r| {
            if *r == "exit_group()" {
                "exit_group(status <= 254)"
            } else {
                r
            }
        })
        .collect();
    assert_eq!(
        actual,
        golden,
        "the --dumpcore filter changed; if on purpose, update this test:\n{}",
        actual.join("\n")
    );
    seccomp::compile(&rules).expect("the --dumpcore filter compiles");
    // The test's end of the pair stays open until here, so the module's
    // descriptor number cannot have been reused.
    assert!(ours.as_raw_fd() > 2 && net_fd > 2);
}

#[test]
fn the_guest_cuts_block_requests_to_the_filters_maximum() {
    assert_eq!(
        kiln_spt::block::MAX_REQUEST as usize,
        kiln_solo5::split::SPT_MAX_REQUEST
    );
}

/// Regression: a manifest of 63 block devices (the ABI's maximum) compiled
/// to 23,132 instructions, and the kernel refuses more than 4,096, so the
/// tender could not start such a guest. Every device of a full manifest,
/// of different capacities, gets its filter within the limit.
#[test]
fn a_full_manifest_of_disks_fits_the_kernels_limit() {
    let mut rules = kiln_spt::seccomp::core_rules(EPOLL, TIMER);
    for i in 0..63 {
        rules.extend(kiln_spt::block::disk_rules(
            2000 + i,
            (1 << 40) + 512 * i as u64,
            512,
        ));
    }
    let program = seccomp::compile(&rules).expect("the filter compiles");
    assert!(program.len() <= 4096, "{} instructions", program.len());
}
