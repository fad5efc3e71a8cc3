//! The console device (the first 16550 UART), and the
//! buffered writers the panic and exception paths use (`kiln_x86::console`).

pub use kiln_x86::console::{BufferedWriter, CStrBuffer};

#[cfg(target_os = "none")]
pub use device::Console;

#[cfg(target_os = "none")]
mod device {
    use kiln_devices::ConsoleError;

    use crate::sys;

    /// The serial console (the first 16550 UART). Writes are synchronous.
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
