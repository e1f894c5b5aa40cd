//! The filter as a Wasm OCI image, written to the OCI image-layout spec: an `oci-layout`
//! file, `index.json`, and content-addressed `blobs/sha256/…`; and the same layout as a tarball.
//!
//! The image follows the Wasm image "compat" form that Istio (WasmPlugin `url: oci://…`) and
//! Envoy Gateway (EnvoyExtensionPolicy `wasm.code.image`) pull: a manifest whose config has
//! media type `application/vnd.module.wasm.config.v1+json` and whose single layer is the raw
//! module, `application/vnd.module.wasm.content.layer.v1+wasm`. Nothing in it depends on the
//! time or the machine, so the same `.wasm` always gives the same digests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const MODULE_NAME: &str = "veza_observability.wasm";

/// What [`package`] wrote.
#[derive(Debug)]
pub struct Package {
    pub wasm: PathBuf,
    pub sha256_file: PathBuf,
    pub layout: PathBuf,
    pub tarball: PathBuf,
    pub manifest_digest: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_blob(layout: &Path, bytes: &[u8]) -> io::Result<String> {
    let hex = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes)?;
    Ok(format!("sha256:{hex}"))
}

/// Writes the module, its `.sha256`, the image layout `oci/` and `oci.tar` under `out`.
pub fn package(wasm_path: &Path, out: &Path, tag: &str) -> io::Result<Package> {
    let module = fs::read(wasm_path)?;
    if module.get(..4) != Some(b"\0asm") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a WebAssembly module", wasm_path.display()),
        ));
    }
    fs::create_dir_all(out)?;
    let wasm = out.join(MODULE_NAME);
    fs::write(&wasm, &module)?;
    let sha256_file = out.join(format!("{MODULE_NAME}.sha256"));
    fs::write(
        &sha256_file,
        format!("{}  {MODULE_NAME}\n", sha256_hex(&module)),
    )?;

    let layout = out.join("oci");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;

    let config = serde_json::to_vec(&json!({
        "type": "envoy_proxy",
        "abiVersions": ["proxy_abi_version_0_2_1"],
        "rootIds": ["veza_observability"],
    }))?;
    let config_digest = write_blob(&layout, &config)?;
    let layer_digest = write_blob(&layout, &module)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer_digest,
            "size": module.len(),
            "annotations": { "org.opencontainers.image.title": MODULE_NAME },
        }],
    }))?;
    let manifest_digest = write_blob(&layout, &manifest)?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    }))?;
    fs::write(layout.join("index.json"), index)?;

    let tarball = out.join("oci.tar");
    write_tarball(&layout, &tarball)?;
    Ok(Package {
        wasm,
        sha256_file,
        layout,
        tarball,
        manifest_digest,
    })
}

/// The layout as a tarball (`oci-archive` to skopeo, loadable by podman), with fixed owners,
/// modes and times so it is reproducible.
fn write_tarball(layout: &Path, tarball: &Path) -> io::Result<()> {
    let mut entries = vec![PathBuf::from("oci-layout"), PathBuf::from("index.json")];
    let mut blobs: Vec<PathBuf> = fs::read_dir(layout.join("blobs/sha256"))?
        .map(|entry| entry.map(|e| Path::new("blobs/sha256").join(e.file_name())))
        .collect::<io::Result<_>>()?;
    blobs.sort();
    entries.extend(blobs);
    let mut builder = tar::Builder::new(fs::File::create(tarball)?);
    for entry in entries {
        let bytes = fs::read(layout.join(&entry))?;
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &entry, bytes.as_slice())?;
    }
    builder.into_inner()?.sync_all()
}

/// The native module's file name in the package, as Envoy finds it by `name: veza_observability`.
pub const NATIVE_NAME: &str = "libveza_observability.so";

/// Copies the native module (`make native`) into `out` with its sha256 file beside it. It is
/// a shared library, not an image layer: it is loaded by path or by Envoy's remote source,
/// which checks this digest.
pub fn package_native(library: &Path, out: &Path) -> io::Result<PathBuf> {
    let bytes = fs::read(library)?;
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a shared library", library.display()),
        ));
    }
    fs::create_dir_all(out)?;
    fs::write(out.join(NATIVE_NAME), &bytes)?;
    let sha256_file = out.join(format!("{NATIVE_NAME}.sha256"));
    fs::write(
        &sha256_file,
        format!("{}  {NATIVE_NAME}\n", sha256_hex(&bytes)),
    )?;
    Ok(sha256_file)
}
