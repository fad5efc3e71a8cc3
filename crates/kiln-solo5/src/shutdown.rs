//! The shutdown device on hvt and spt: kiln's STOP extension
//! (`kiln_abi::hvt_ext`, `kiln_abi::spt_ext`; `docs/hvt-extensions.md`).
//!
//! Creating the device tells the tender that this guest handles stop
//! requests (STOP_ENABLE on hvt, the acknowledgement word on spt). From
//! then on the tender turns SIGTERM (what `kiln stop` sends) or SIGINT into
//! a request that ends the guest's current or next wait; the platform's
//! wait then wakes the task awaiting [`kiln_devices::Shutdown::requested`].
//! Under a tender without the extension (Solo5's) the device never
//! completes and a stop ends the tender, as it always has there.

use kiln_rt::HostFlag;

use crate::sys;

/// The request and the task waiting for it.
static STOP: HostFlag = HostFlag::new(sys::host::stop_requested);

/// The host's request to stop.
#[derive(Debug)]
pub struct Shutdown {
    /// Whether the tender will deliver a request.
    offered: bool,
}

impl Shutdown {
    /// Declares to the tender that this unikernel handles stop requests.
    pub fn new() -> Shutdown {
        Shutdown {
            offered: sys::host::enable_stop(),
        }
    }

    /// Whether the tender delivers stop requests (kiln-hvt, kiln-spt); if
    /// not, [`kiln_devices::Shutdown::requested`] never completes.
    pub fn offered(&self) -> bool {
        self.offered
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl kiln_devices::Shutdown for Shutdown {
    fn requested(&self) -> impl Future<Output = ()> {
        STOP.wait(self.offered)
    }
}

/// After each wait: wakes the waiting task once the request has come.
pub(crate) fn after_wait() {
    STOP.after_wait();
}
