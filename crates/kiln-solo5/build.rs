//! Publishes the path of kiln's linker script to the crates that depend on
//! kiln-solo5 directly (the generated crates) as `DEP_KILN_SOLO5_LDSCRIPT`.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = std::path::Path::new(&dir).join("link.ld");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:ldscript={}", script.display());
}
