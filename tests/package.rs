//! `make package`'s OCI image: every digest and size checked with tools that are not the
//! packager's own (sha256sum, tar, and skopeo reading the layout as a registry client would).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use veza_test_harness::*;

fn sha256sum(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Checks a descriptor against its blob: the file named by the digest has that digest and size.
fn check_blob(layout: &Path, descriptor: &serde_json::Value) -> std::path::PathBuf {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = layout.join("blobs/sha256").join(hex);
    assert_eq!(sha256sum(&blob), hex, "{digest}");
    assert_eq!(
        std::fs::metadata(&blob).unwrap().len(),
        descriptor["size"].as_u64().unwrap()
    );
    blob
}

#[test]
fn the_oci_image_holds_the_module_under_verified_digests() {
    let out = scratch_dir("package");
    let wasm = wasm_path();
    let package = oci_package::package(&wasm, &out, "0.1.0").unwrap();

    let module_digest = sha256sum(&wasm);
    assert_eq!(
        std::fs::read_to_string(&package.sha256_file).unwrap(),
        format!("{module_digest}  veza_observability.wasm\n")
    );
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(&package.sha256_file)
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let layout = &package.layout;
    assert_eq!(
        json(&layout.join("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );
    let manifest = json(&check_blob(layout, &manifests[0]));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.module.wasm.config.v1+json"
    );
    check_blob(layout, &manifest["config"]);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.module.wasm.content.layer.v1+wasm"
    );
    let layer = check_blob(layout, &layers[0]);
    assert_eq!(
        sha256sum(&layer),
        module_digest,
        "the layer is the module itself"
    );

    // The tarball holds exactly the layout's files.
    let listing = Command::new("tar")
        .arg("tf")
        .arg(&package.tarball)
        .output()
        .unwrap();
    let mut files: Vec<String> = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    files.sort();
    let mut expected = vec!["index.json".to_owned(), "oci-layout".to_owned()];
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        expected.push(format!(
            "blobs/sha256/{}",
            entry.unwrap().file_name().to_str().unwrap()
        ));
    }
    expected.sort();
    assert_eq!(files, expected);

    // The same module always gives the same image.
    let again_dir = scratch_dir("package-again");
    let again = oci_package::package(&wasm, &again_dir, "0.1.0").unwrap();
    assert_eq!(again.manifest_digest, package.manifest_digest);
    assert_eq!(sha256sum(&again.tarball), sha256sum(&package.tarball));
}

#[test]
fn skopeo_reads_the_layout_like_a_registry_client() {
    let out = scratch_dir("package-skopeo");
    let package = oci_package::package(&wasm_path(), &out, "0.1.0").unwrap();
    for reference in [
        format!("oci:{}:0.1.0", package.layout.display()),
        format!("oci-archive:{}:0.1.0", package.tarball.display()),
    ] {
        let output = Command::new("skopeo")
            .args(["inspect", "--raw", &reference])
            .output()
            .expect("skopeo (Debian package skopeo) must be installed: run `make test`");
        assert!(
            output.status.success(),
            "{reference}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.module.wasm.content.layer.v1+wasm"
        );
        assert_eq!(
            format!("sha256:{}", oci_package::sha256_hex(&output.stdout)),
            package.manifest_digest,
            "{reference}: skopeo sees the manifest the index names"
        );
    }
}

#[test]
fn the_native_module_is_packaged_with_its_digest() {
    let out = scratch_dir("package-native");
    let library = native_path();
    let sha256_file = oci_package::package_native(&library, &out).unwrap();
    assert_eq!(
        std::fs::read_to_string(&sha256_file).unwrap(),
        format!("{}  libveza_observability.so\n", sha256sum(&library))
    );
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(&sha256_file)
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    // Not a library: refused.
    assert!(oci_package::package_native(&wasm_path(), &out).is_err());
}
