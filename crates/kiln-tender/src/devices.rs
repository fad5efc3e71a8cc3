//! Fitting the command line's device flags to the image's manifest: every
//! flag must name a manifest device of its module's type, and every
//! manifest device must be attached by a compiled-in module.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use kiln_abi::mft::{Manifest, MftEntryRef};
use thiserror::Error;

use crate::module::{KNOWN, ModuleError, ModuleFlags};
use crate::target::Target;

/// Why the flags and the manifest of tender `T`'s image do not fit.
#[derive(Debug, Error)]
pub enum DevicesError<T: Target> {
    /// A manifest device of a compiled-out module.
    #[error(
        "{path}: device '{name}' ({kind}) needs the {module} module, which this {tender} was built without; hint: build {tender} with --features {module}",
        tender = T::TENDER
    )]
    ModuleMissing {
        /// The image path.
        path: PathBuf,
        /// The device.
        name: String,
        /// Its type.
        kind: &'static str,
        /// The module.
        module: &'static str,
    },
    /// A flag names a device the manifest does not declare.
    #[error(
        "{flag}: {path} declares no {kind} device named '{name}'; hint: the image declares {declared}"
    )]
    UnknownDevice {
        /// The flag.
        flag: String,
        /// The image path.
        path: PathBuf,
        /// The name in the flag.
        name: String,
        /// The type the flag attaches.
        kind: &'static str,
        /// What the manifest declares.
        declared: String,
    },
    /// Attaching a device failed.
    #[error("{path}: cannot attach devices")]
    Attach {
        /// The image path.
        path: PathBuf,
        /// The problem.
        #[source]
        source: ModuleError,
    },
    /// Never constructed: carries the target type.
    #[doc(hidden)]
    #[error("unreachable")]
    _Target(std::convert::Infallible, PhantomData<T>),
}

/// The manifest's devices for a message: `'a' (NET_BASIC), ...`.
pub fn describe(manifest: &Manifest<'_>) -> String {
    let list: Vec<String> = manifest
        .devices()
        .map(|e| format!("'{}' ({})", e.name, e.kind.name()))
        .collect();
    if list.is_empty() {
        "no devices".into()
    } else {
        list.join(", ")
    }
}

/// Whether the unikernel's arguments ask for its usage (`--help` or `-h`
/// anywhere, as kiln's argument parser reads them): then devices without a
/// flag are left unattached instead of refused, so that `--help` works
/// without a tap or a disk (the unikernel prints its usage before it
/// acquires any device).
pub fn wants_help<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter()
        .map(AsRef::as_ref)
        .any(|a| a == "--help" || a == "-h")
}

/// Checks every flag of `modules` against the manifest of the image at
/// `path`, then attaches each manifest device with `attach`, given the
/// module of its type and the entry, in manifest order. With `help` (see
/// [`wants_help`]), a device that has no flag or no module is skipped.
pub fn attach_all<T: Target, M: ModuleFlags + ?Sized, A>(
    path: &Path,
    manifest: &Manifest<'_>,
    modules: &mut [Box<M>],
    help: bool,
    mut attach: impl FnMut(&mut M, &MftEntryRef<'_>) -> Result<A, ModuleError>,
) -> Result<Vec<A>, DevicesError<T>> {
    for m in modules.iter() {
        for (name, flag) in m.named_devices() {
            let ok = manifest
                .find(&name)
                .is_some_and(|e| e.kind == m.device_type());
            if !ok {
                return Err(DevicesError::UnknownDevice {
                    flag,
                    path: path.to_path_buf(),
                    name,
                    kind: m.device_type().name(),
                    declared: describe(manifest),
                });
            }
        }
    }
    let mut attached = Vec::new();
    for entry in manifest.devices() {
        let Some(m) = modules.iter_mut().find(|m| m.device_type() == entry.kind) else {
            if help {
                continue;
            }
            let module = KNOWN
                .iter()
                .find(|k| k.device_type == entry.kind)
                .map_or("unknown", |k| k.name);
            return Err(DevicesError::ModuleMissing {
                path: path.to_path_buf(),
                name: entry.name.to_string(),
                kind: entry.kind.name(),
                module,
            });
        };
        match attach(m, &entry) {
            Ok(a) => attached.push(a),
            Err(ModuleError::NotAttached { .. }) if help => {}
            Err(source) => {
                return Err(DevicesError::Attach {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(attached)
}
