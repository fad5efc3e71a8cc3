//! Key-value stores on block devices for kiln unikernels.
#![no_std]
