//! `oci-package WASM OUT_DIR TAG`: see the library.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (wasm, out, tag, native) = match args.as_slice() {
        [wasm, out, tag] => (wasm, out, tag, None),
        [wasm, out, tag, native] => (wasm, out, tag, Some(native)),
        _ => {
            eprintln!("usage: oci-package WASM OUT_DIR TAG [NATIVE_SO]");
            return ExitCode::FAILURE;
        }
    };
    if let Some(native) = native {
        match oci_package::package_native(Path::new(native), Path::new(out)) {
            Ok(sha256) => println!("native   {} ({})", native, sha256.display()),
            Err(err) => {
                eprintln!("oci-package: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    match oci_package::package(Path::new(wasm), Path::new(out), tag) {
        Ok(package) => {
            println!("module   {}", package.wasm.display());
            println!("sha256   {}", package.sha256_file.display());
            println!(
                "layout   {} (tag {tag}, manifest {})",
                package.layout.display(),
                package.manifest_digest
            );
            println!("tarball  {}", package.tarball.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("oci-package: {err}");
            ExitCode::FAILURE
        }
    }
}
