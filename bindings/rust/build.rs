//! Links the crate against libautograd.so.
//!
//! The library is looked for in `AUTOGRAD_LIB_DIR` when that is set, else in the repository's
//! own build folder, `<this crate>/../../.build/release` (what `bash scripts/build.sh` makes).
//!
//! Two ways for programs to find the library at run time, without LD_LIBRARY_PATH:
//!   - this crate's own tests and examples get an rpath to that directory (a link argument, which
//!     Cargo applies to this package's targets only);
//!   - programs of crates that depend on this one get, under `cargo run` and `cargo test`, the
//!     directory `OUT_DIR/lib` (symbolic links to the library) on their dynamic library path:
//!     Cargo puts a build script's search directories there when they lie inside `OUT_DIR`.
//!     Such a program started by hand needs the library installed (`make install`) or
//!     LD_LIBRARY_PATH.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=AUTOGRAD_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");

    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by Cargo"));
    let dir = match env::var_os("AUTOGRAD_LIB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => manifest.join("../../.build/release"),
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    if !dir.join("libautograd.so").exists() {
        println!(
            "cargo:warning=libautograd.so not found in {} (build it with `bash scripts/build.sh`, or set AUTOGRAD_LIB_DIR)",
            dir.display()
        );
    }

    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=autograd");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());

    // Links to the library inside OUT_DIR (under both its names: the soname, libautograd.so.0,
    // is the one the loader asks for), for dependents run by `cargo run` / `cargo test`.
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by Cargo")).join("lib");
    let target = dir.join("libautograd.so");
    if target.exists()
        && std::fs::create_dir_all(&out).is_ok()
        && symlink(&target, &out.join("libautograd.so"))
        && symlink(&target, &out.join("libautograd.so.0"))
    {
        println!("cargo:rustc-link-search=native={}", out.display());
    }
}

/// Makes `link` a symbolic link to `target`, replacing an older one; false if it cannot.
fn symlink(target: &Path, link: &Path) -> bool {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).is_ok()
}
