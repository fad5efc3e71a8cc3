//! Hypercall dispatch: decodes a hypercall `out`, serves the core calls
//! (walltime, puts, poll, halt) and hands device calls, and kiln's
//! NET_EXCHANGE (`kiln_abi::hvt_ext`) when its module turned it on, to
//! their module.
//!
//! Spec: `hvt_abi.h`. Guest pointers are only ever turned into memory
//! through [`GuestMemory`]'s checked accessor; a pointer or length outside
//! guest memory stops the guest with an error naming the call and field.

use std::io::{self, Write};
use std::mem::{offset_of, size_of};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_abi::hvt::{
    HVT_HYPERCALL_MAX, HVT_HYPERCALL_PIO_BASE, HcHalt, HcPoll, HcPuts, HcWalltime, Hypercall,
};
use kiln_abi::hvt_ext::{
    KILN_BLOCK_EXCHANGE_PORT, KILN_NET_EXCHANGE_AREA_PORT, KILN_NET_EXCHANGE_PORT,
};
use thiserror::Error;

use crate::guest::{GuestMemError, GuestMemory, set_out};
use crate::module::Module;
use crate::sys::Epoll;

/// Why the guest was stopped while making a hypercall.
#[derive(Debug, Error)]
pub enum HypercallError {
    /// A pointer or length outside guest memory.
    #[error("{call} hypercall: bad {what} address")]
    Memory {
        /// The hypercall.
        call: &'static str,
        /// Which argument.
        what: &'static str,
        /// The refused range.
        #[source]
        source: GuestMemError,
    },
    /// A hypercall no compiled-in module serves.
    #[error("guest made the {call} hypercall, which no compiled-in module serves")]
    Unserved {
        /// The hypercall.
        call: &'static str,
    },
    /// An `out` to a port that is not a hypercall.
    #[error(
        "guest wrote {size} bytes to port {port:#x}, not a hypercall (a 4-byte write to ports {:#x}..{:#x})",
        HVT_HYPERCALL_PIO_BASE + 1,
        HVT_HYPERCALL_PIO_BASE + HVT_HYPERCALL_MAX
    )]
    BadPort {
        /// The port.
        port: u16,
        /// The access size.
        size: usize,
    },
    /// Waiting on the devices failed.
    #[error("{call} hypercall: waiting for devices failed")]
    Wait {
        /// The hypercall.
        call: &'static str,
        /// What the host said.
        #[source]
        source: io::Error,
    },
    /// An entry of an exchange's frame or buffer table points outside
    /// guest memory.
    #[error("net exchange hypercall: bad {table}[{index}] address")]
    ExchangeMemory {
        /// `tx` or `rx`.
        table: &'static str,
        /// The entry.
        index: u64,
        /// The refused range.
        #[source]
        source: GuestMemError,
    },
    /// A BLOCK_EXCHANGE request the tender refuses to start: its buffer
    /// is outside guest memory, overlaps what the tender writes, or the
    /// table breaks the extension's limits.
    #[error("block exchange hypercall: {what}: {why}")]
    BlockExchange {
        /// The field (`count`, `requests[3].data`, ...).
        what: String,
        /// The rule it breaks.
        why: String,
    },
    /// An exchange argument outside what the extension allows.
    #[error("net exchange hypercall: {what} is {value}, {why}")]
    Exchange {
        /// The field (`tx_count`, `tx[3].len`, ...).
        what: String,
        /// Its value.
        value: u64,
        /// The rule it breaks.
        why: String,
    },
}

impl HypercallError {
    /// A bad guest range in argument `what` of `call`.
    pub fn memory(call: &'static str, what: &'static str, source: GuestMemError) -> Self {
        Self::Memory { call, what, source }
    }
}

/// What the vCPU loop does after a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the guest.
    Continue,
    /// The guest halted with `status`; `cookie` is its halt cookie.
    Halt {
        /// The exit status.
        status: i32,
        /// The cookie address, or 0.
        cookie: u64,
    },
}

/// Serves one hypercall `out` of `data` to `port`.
pub fn dispatch(
    port: u16,
    data: &[u8],
    mem: &mut GuestMemory,
    epoll: &Epoll,
    modules: &mut [Box<dyn Module>],
) -> Result<Outcome, HypercallError> {
    let bad_port = || HypercallError::BadPort {
        port,
        size: data.len(),
    };
    let value: [u8; 4] = data.try_into().map_err(|_| bad_port())?;
    let gpa = u64::from(u32::from_le_bytes(value));
    if port == KILN_NET_EXCHANGE_PORT
        && let Some(module) = modules.iter_mut().find(|m| m.serves_exchange())
    {
        module.exchange(gpa, mem, epoll)?;
        return Ok(Outcome::Continue);
    }
    if port == KILN_NET_EXCHANGE_AREA_PORT
        && let Some(module) = modules.iter_mut().find(|m| m.serves_exchange())
    {
        module.exchange_area(gpa, mem, epoll)?;
        return Ok(Outcome::Continue);
    }
    if port == KILN_BLOCK_EXCHANGE_PORT
        && let Some(module) = modules.iter_mut().find(|m| m.serves_block_exchange())
    {
        module.block_exchange(gpa, mem)?;
        return Ok(Outcome::Continue);
    }
    let hc = Hypercall::from_port(port).ok_or_else(bad_port)?;
    match hc {
        Hypercall::Walltime => walltime(gpa, mem)?,
        Hypercall::Puts => puts(gpa, mem)?,
        Hypercall::Poll => poll(gpa, mem, epoll)?,
        Hypercall::Halt => return halt(gpa, mem),
        device_call => {
            let module = modules.iter_mut().find(|m| m.serves(device_call)).ok_or(
                HypercallError::Unserved {
                    call: device_call.name(),
                },
            )?;
            module.hypercall(device_call, gpa, mem)?;
        }
    }
    Ok(Outcome::Continue)
}

fn walltime(gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
    let nsecs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let arg = mem
        .slice_mut(gpa, size_of::<HcWalltime>() as u64)
        .map_err(|source| HypercallError::memory("walltime", "argument", source))?;
    set_out(arg, offset_of!(HcWalltime, nsecs), nsecs);
    Ok(())
}

fn puts(gpa: u64, mem: &mut GuestMemory) -> Result<(), HypercallError> {
    let HcPuts { data, len } = mem
        .read(gpa)
        .map_err(|source| HypercallError::memory("puts", "argument", source))?;
    let bytes = mem
        .slice(data, len)
        .map_err(|source| HypercallError::memory("puts", "data", source))?;
    // The console is best effort: a closed stdout does not stop the guest.
    let mut out = io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
    Ok(())
}

fn poll(gpa: u64, mem: &mut GuestMemory, epoll: &Epoll) -> Result<(), HypercallError> {
    let size = size_of::<HcPoll>() as u64;
    let HcPoll {
        timeout_nsecs: timeout,
        ..
    } = mem
        .read(gpa)
        .map_err(|source| HypercallError::memory("poll", "argument", source))?;
    // The timeout is honoured to the nanosecond (epoll_pwait2), so the
    // guest neither wakes before its deadline nor up to 1 ms after it.
    let ready = epoll.wait(timeout).map_err(|source| HypercallError::Wait {
        call: "poll",
        source,
    })?;
    let out = mem
        .slice_mut(gpa, size)
        .map_err(|source| HypercallError::memory("poll", "argument", source))?;
    set_out(out, offset_of!(HcPoll, ready_set), ready);
    set_out(out, offset_of!(HcPoll, ret), i32::from(ready != 0));
    Ok(())
}

fn halt(gpa: u64, mem: &GuestMemory) -> Result<Outcome, HypercallError> {
    let HcHalt {
        cookie,
        exit_status,
    } = mem
        .read(gpa)
        .map_err(|source| HypercallError::memory("halt", "argument", source))?;
    Ok(Outcome::Halt {
        status: exit_status,
        cookie,
    })
}

/// The abort message at `cookie`: up to the first NUL within
/// `HVT_HALT_COOKIE_MAX` bytes (or the end of guest memory), lossily decoded.
pub fn abort_message(mem: &GuestMemory, cookie: u64) -> Result<String, GuestMemError> {
    let max = (kiln_abi::hvt::HVT_HALT_COOKIE_MAX as u64).min(mem.size().saturating_sub(cookie));
    let bytes = mem.slice(cookie, max)?;
    if cookie >= mem.size() {
        // Zero-length slice at the end: still name the address as outside.
        return Err(GuestMemError::OutOfBounds {
            gpa: cookie,
            end: cookie.saturating_add(1),
            mem_size: mem.size(),
        });
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ports_and_sizes_are_refused() {
        let mut mem = GuestMemory::new(0x20_0000).unwrap();
        let epoll = Epoll::new().unwrap();
        let mut modules = Vec::new();
        let r = dispatch(0x509, &[0; 4], &mut mem, &epoll, &mut modules);
        assert!(matches!(
            r,
            Err(HypercallError::BadPort { port: 0x509, .. })
        ));
        let r = dispatch(0x502, &[0; 1], &mut mem, &epoll, &mut modules);
        assert!(matches!(r, Err(HypercallError::BadPort { size: 1, .. })));
    }

    #[test]
    fn hostile_puts_is_stopped() {
        let mut mem = GuestMemory::new(0x20_0000).unwrap();
        let epoll = Epoll::new().unwrap();
        let mut modules = Vec::new();
        // Argument past the end of memory.
        let r = dispatch(
            0x502,
            &0x1f_fff8u32.to_le_bytes(),
            &mut mem,
            &epoll,
            &mut modules,
        );
        assert!(matches!(
            r,
            Err(HypercallError::Memory {
                what: "argument",
                ..
            })
        ));
        // Data pointer + length overflowing.
        let mut arg = [0u8; 16];
        arg[..8].copy_from_slice(&0x1000u64.to_le_bytes());
        arg[8..].copy_from_slice(&u64::MAX.to_le_bytes());
        mem.write(0x2000, &arg).unwrap();
        let r = dispatch(
            0x502,
            &0x2000u32.to_le_bytes(),
            &mut mem,
            &epoll,
            &mut modules,
        );
        assert!(matches!(
            r,
            Err(HypercallError::Memory {
                what: "data",
                source: GuestMemError::Overflow { .. },
                ..
            })
        ));
    }

    #[test]
    fn halt_reads_status_and_cookie() {
        let mut mem = GuestMemory::new(0x20_0000).unwrap();
        let epoll = Epoll::new().unwrap();
        let mut arg = [0u8; 16];
        arg[..8].copy_from_slice(&0x3000u64.to_le_bytes());
        arg[8..12].copy_from_slice(&7i32.to_le_bytes());
        mem.write(0x2000, &arg).unwrap();
        mem.write(0x3000, b"boom\0junk").unwrap();
        let r = dispatch(
            0x508,
            &0x2000u32.to_le_bytes(),
            &mut mem,
            &epoll,
            &mut Vec::new(),
        );
        assert_eq!(
            r.unwrap(),
            Outcome::Halt {
                status: 7,
                cookie: 0x3000
            }
        );
        assert_eq!(abort_message(&mem, 0x3000).unwrap(), "boom");
        assert!(abort_message(&mem, 0x20_0000).is_err());
        assert!(abort_message(&mem, u64::MAX).is_err());
    }
}
