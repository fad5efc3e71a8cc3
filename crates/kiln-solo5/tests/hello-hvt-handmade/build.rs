//! Links with kiln-solo5's linker script into a static, non-PIE image.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = std::env::var("DEP_KILN_SOLO5_LDSCRIPT")
            .expect("kiln-solo5 publishes its linker script");
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rerun-if-env-changed=DEP_KILN_SOLO5_LDSCRIPT");
    }
}
