//! Link addresses: the Linux personality (`bin/linux`) lives in the area every Linux process
//! keeps for it (`kabi::LINUX_PERSONALITY_AREA`); the other programs use the default base.
fn main() {
    println!("cargo:rustc-link-arg-bin=linux=--image-base=0x70000000");
    println!("cargo:rerun-if-changed=build.rs");
}
