//! `oci-package WASM OUT_DIR TAG`: see the library.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [wasm, out, tag] = args.as_slice() else {
        eprintln!("usage: oci-package WASM OUT_DIR TAG");
        return ExitCode::FAILURE;
    };
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
