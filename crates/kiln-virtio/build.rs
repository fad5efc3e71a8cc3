//! Publishes the path of the virtio linker script to the crates that depend
//! on kiln-virtio directly (the generated crates) as
//! `DEP_KILN_VIRTIO_LDSCRIPT`.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = std::path::Path::new(&dir).join("link.ld");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:ldscript={}", script.display());
}
