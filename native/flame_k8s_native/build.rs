// Keep the library mapped for the life of the VM: Tokio threads may still run its code
// after a (never supported) unload, so make dlclose a no-op on Linux.
fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
