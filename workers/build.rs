//! Link options of the worker binary. Part of an idle worker's memory is what the dynamic loader touches:
//! with plain RELA relocations that is the whole 450 KiB relocation table, read once and kept mapped in
//! every worker. Packed relative relocations (DT_RELR, glibc 2.36 and later) shrink it to a few KiB.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") && (target.starts_with("x86_64") || target.starts_with("aarch64")) {
        println!("cargo:rustc-link-arg-bin=rgitaly-worker=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
