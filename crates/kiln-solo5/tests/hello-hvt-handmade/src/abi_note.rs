//! The Solo5 ABI note both stand-ins carry: hvt's, or spt's with the `spt`
//! feature.

#[cfg(not(feature = "spt"))]
#[unsafe(link_section = ".note.solo5.abi")]
#[used]
static ABI: kiln_abi::AbiNote = kiln_abi::AbiNote::hvt();

#[cfg(feature = "spt")]
#[unsafe(link_section = ".note.solo5.abi")]
#[used]
static ABI: kiln_abi::AbiNote = kiln_abi::AbiNote::spt();
