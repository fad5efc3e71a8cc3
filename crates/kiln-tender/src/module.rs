//! The part of a tender module both tenders share: the flags it takes and
//! the devices they name, every module kiln has, and flag splitting.
//!
//! Each tender's own module trait (hypercalls on hvt, seccomp rules on spt)
//! has [`ModuleFlags`] as its supertrait, so the command line and the
//! manifest checks are written once.

use std::io;

use kiln_abi::mft::MftType;
use thiserror::Error;

/// Errors of the net and block modules.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// A flag that does not parse.
    #[error("bad flag {flag}: expected {expected}")]
    FlagSyntax {
        /// The flag as given.
        flag: String,
        /// Its expected form.
        expected: &'static str,
    },
    /// The same device given twice.
    #[error("{flag}: device '{name}' is already given by an earlier flag")]
    DuplicateFlag {
        /// The flag as given.
        flag: String,
        /// The device name.
        name: String,
    },
    /// A manifest device with no flag attaching it.
    #[error("device '{name}' ({kind}) is declared by the image but not attached; hint: {hint}")]
    NotAttached {
        /// The device name.
        name: String,
        /// Its type.
        kind: &'static str,
        /// The flag to add.
        hint: String,
    },
    /// The host resource cannot be opened.
    #[error("device '{name}': cannot open {what}")]
    Open {
        /// The device name.
        name: String,
        /// What was being opened.
        what: String,
        /// What the host said.
        #[source]
        source: io::Error,
    },
    /// The host resource is unusable.
    #[error("device '{name}': {problem}")]
    Invalid {
        /// The device name.
        name: String,
        /// What is wrong, with a hint where there is a fix.
        problem: String,
    },
}

/// What every tender module has, whatever the target: its name, the
/// manifest entry type it attaches and its command-line flags.
pub trait ModuleFlags {
    /// The module's name, as in its Cargo feature.
    fn name(&self) -> &'static str;
    /// The manifest entry type it attaches.
    fn device_type(&self) -> MftType;
    /// Help lines for its flags.
    fn usage(&self) -> &'static str;
    /// Offers a command-line flag; `Ok(true)` if the module took it.
    fn parse_flag(&mut self, flag: &str) -> Result<bool, ModuleError>;
    /// Each device name the flags mention, with the flag that mentions it.
    fn named_devices(&self) -> Vec<(String, String)>;
}

/// A tender module whose flags are one of the shared flag sets
/// ([`crate::net::NetFlags`], [`crate::block::BlockFlags`]): it has
/// [`ModuleFlags`] through them.
pub trait WithFlags {
    /// The flag set.
    type Flags: ModuleFlags;
    /// The flags given so far.
    fn flags(&self) -> &Self::Flags;
    /// The flags, to offer one more.
    fn flags_mut(&mut self) -> &mut Self::Flags;
}

/// Implements [`WithFlags`] for the module type `$module` whose flag set,
/// of type `$flags`, is its field `flags`: the one shape every net and block
/// module of both tenders has.
#[macro_export]
macro_rules! with_flags {
    ($module:ty, $flags:ty) => {
        impl $crate::module::WithFlags for $module {
            type Flags = $flags;

            fn flags(&self) -> &$flags {
                &self.flags
            }

            fn flags_mut(&mut self) -> &mut $flags {
                &mut self.flags
            }
        }
    };
}

impl<W: WithFlags> ModuleFlags for W {
    fn name(&self) -> &'static str {
        self.flags().name()
    }

    fn device_type(&self) -> MftType {
        self.flags().device_type()
    }

    fn usage(&self) -> &'static str {
        self.flags().usage()
    }

    fn parse_flag(&mut self, flag: &str) -> Result<bool, ModuleError> {
        self.flags_mut().parse_flag(flag)
    }

    fn named_devices(&self) -> Vec<(String, String)> {
        self.flags().named_devices()
    }
}

/// A module kiln has, compiled in or not.
#[derive(Debug, Clone, Copy)]
pub struct KnownModule {
    /// Its name and Cargo feature.
    pub name: &'static str,
    /// The entry type it attaches.
    pub device_type: MftType,
    /// The prefixes of its flags.
    pub flag_prefixes: &'static [&'static str],
}

/// Every module kiln has.
pub const KNOWN: [KnownModule; 2] = [
    KnownModule {
        name: "net",
        device_type: MftType::NetBasic,
        flag_prefixes: &["--net:", "--net-mac:"],
    },
    KnownModule {
        name: "block",
        device_type: MftType::BlockBasic,
        flag_prefixes: &["--block:", "--block-sector-size:"],
    },
];

/// Splits `--prefix:NAME=VALUE` into `(NAME, VALUE)`.
pub fn split_flag<'f>(
    flag: &'f str,
    prefix: &str,
    expected: &'static str,
) -> Result<Option<(&'f str, &'f str)>, ModuleError> {
    let Some(rest) = flag.strip_prefix(prefix) else {
        return Ok(None);
    };
    let bad = || ModuleError::FlagSyntax {
        flag: flag.to_string(),
        expected,
    };
    let (name, value) = rest.split_once('=').ok_or_else(bad)?;
    if name.is_empty()
        || value.is_empty()
        || !name.bytes().all(kiln_abi::mft::is_name_byte)
        || name.len() > kiln_abi::mft::MFT_NAME_MAX
    {
        return Err(bad());
    }
    Ok(Some((name, value)))
}
