//! The console device (the PUTS hypercall or, on spt, `write`), and the
//! buffered writers the panic and exception paths use (`kiln_x86::console`).

pub use kiln_x86::console::{BufferedWriter, CStrBuffer};

#[cfg(target_os = "none")]
pub use device::Console;

#[cfg(target_os = "none")]
mod device {
    use kiln_devices::ConsoleError;

    use crate::sys;

    /// The tender's console (its standard output). Writes are synchronous:
    /// each is one PUTS hypercall.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Console;

    impl Console {
        /// The console.
        pub fn new() -> Console {
            Console
        }
    }

    impl kiln_devices::Console for Console {
        fn write(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
            sys::host::puts(bytes);
            Ok(())
        }
    }
}
