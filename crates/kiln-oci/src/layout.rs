//! The image's config, manifest and index (OCI image-spec v1.1), as
//! canonical JSON, and the image layout they are written to: a directory or
//! a tar of one, made beside the output and renamed into place, so that a
//! failure leaves no partial image.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use serde_json::Value;

use crate::OciError;
use crate::layer::{self, File, sha256};

/// The annotation of an index entry that names the image.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd's `ctr images import` names an image by.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What an image holds.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// The files of its one layer.
    pub files: Vec<File>,
    /// The program the container starts and its first arguments.
    pub entrypoint: Vec<String>,
    /// The default arguments after `entrypoint` (replaced by those given to
    /// `podman run IMAGE ARGS`).
    pub cmd: Vec<String>,
    /// Environment variables, `NAME=VALUE`.
    pub env: Vec<String>,
    /// Ports the image listens on (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Labels of the config (engines show them; some runtimes read them).
    pub labels: BTreeMap<String, String>,
    /// Annotations of the manifest.
    pub annotations: BTreeMap<String, String>,
    /// The image's name as `NAME:TAG`.
    pub reference: String,
}

/// How the layout is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A directory: `oci-layout`, `index.json`, `blobs/sha256/...`.
    Dir,
    /// A tar of that directory (`podman load -i`, `skopeo copy oci-archive:`).
    Archive,
}

/// An image made in memory.
#[derive(Debug, Clone)]
pub struct Image {
    /// The files of the layout: `oci-layout`, `index.json` and the blobs.
    pub files: Vec<File>,
    /// `sha256:` of the manifest: the image's identity.
    pub manifest_digest: String,
    /// `sha256:` of the config (podman's image ID).
    pub config_digest: String,
    /// Size of the compressed layer.
    pub layer_size: u64,
}

/// What [`write`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// `sha256:` of the config.
    pub config_digest: String,
    /// Size of the compressed layer.
    pub layer_size: u64,
    /// Size of config, manifest and layer together: what a registry stores.
    pub blobs_size: u64,
}

/// JSON with every object's keys sorted, whatever map type produced it.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

fn json(what: &'static str, value: &impl serde::Serialize) -> Result<Vec<u8>, OciError> {
    let value = serde_json::to_value(value).map_err(|e| OciError::Spec {
        what,
        message: e.to_string(),
    })?;
    serde_json::to_vec(&canonical(value)).map_err(|e| OciError::Spec {
        what,
        message: e.to_string(),
    })
}

fn spec_error(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> OciError {
    move |e| OciError::Spec {
        what,
        message: e.to_string(),
    }
}

fn descriptor(
    media_type: MediaType,
    bytes: &[u8],
    annotations: Option<HashMap<String, String>>,
) -> Result<Descriptor, OciError> {
    let digest = Digest::from_str(&sha256(bytes)).map_err(spec_error("digest"))?;
    let mut builder = DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(bytes.len() as u64);
    if let Some(annotations) = annotations {
        builder = builder.annotations(annotations);
    }
    builder.build().map_err(spec_error("descriptor"))
}

fn blob_file(bytes: Vec<u8>) -> File {
    let digest = sha256(&bytes);
    File {
        path: format!("blobs/sha256/{}", &digest["sha256:".len()..]),
        mode: 0o644,
        data: bytes,
    }
}

/// Builds the image of `spec` in memory.
pub fn build(spec: &ImageSpec) -> Result<Image, OciError> {
    let layer = layer::build(&spec.files)?;
    let mut config = ConfigBuilder::default()
        .entrypoint(spec.entrypoint.clone())
        .cmd(spec.cmd.clone())
        .env(spec.env.clone())
        .working_dir("/".to_string());
    if !spec.exposed_ports.is_empty() {
        config = config.exposed_ports(spec.exposed_ports.clone());
    }
    if !spec.labels.is_empty() {
        config = config.labels(spec.labels.clone().into_iter().collect::<HashMap<_, _>>());
    }
    let config = config.build().map_err(spec_error("config"))?;
    let rootfs = RootFsBuilder::default()
        .typ("layers".to_string())
        .diff_ids(vec![layer.diff_id.clone()])
        .build()
        .map_err(spec_error("rootfs"))?;
    // No `created` and no history: nothing from the clock.
    let image_config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .build()
        .map_err(spec_error("image configuration"))?;
    let config_json = json("image configuration", &image_config)?;

    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_json, None)?)
        .layers(vec![descriptor(
            MediaType::ImageLayerGzip,
            &layer.blob,
            None,
        )?]);
    if !spec.annotations.is_empty() {
        manifest = manifest.annotations(
            spec.annotations
                .clone()
                .into_iter()
                .collect::<HashMap<_, _>>(),
        );
    }
    let manifest = manifest.build().map_err(spec_error("manifest"))?;
    let manifest_json = json("manifest", &manifest)?;

    let names = HashMap::from([
        (REF_NAME.to_string(), spec.reference.clone()),
        (CONTAINERD_NAME.to_string(), spec.reference.clone()),
    ]);
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor(
            MediaType::ImageManifest,
            &manifest_json,
            Some(names),
        )?])
        .build()
        .map_err(spec_error("index"))?;
    let index_json = json("index", &index)?;

    let manifest_digest = sha256(&manifest_json);
    let config_digest = sha256(&config_json);
    let layer_size = layer.blob.len() as u64;
    let files = vec![
        File {
            path: "oci-layout".into(),
            mode: 0o644,
            data: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        },
        File {
            path: "index.json".into(),
            mode: 0o644,
            data: index_json,
        },
        blob_file(config_json),
        blob_file(manifest_json),
        blob_file(layer.blob),
    ];
    Ok(Image {
        files,
        manifest_digest,
        config_digest,
        layer_size,
    })
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OciError {
    let path = path.to_path_buf();
    move |source| OciError::Io {
        action,
        path,
        source,
    }
}

/// Removes `path`, file or directory, if it exists.
fn remove(path: &Path) -> Result<(), OciError> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(io("remove", path)),
        Ok(_) => std::fs::remove_file(path).map_err(io("remove", path)),
    }
}

fn write_dir(image: &Image, dir: &Path) -> Result<(), OciError> {
    for file in &image.files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&path, &file.data).map_err(io("write", &path))?;
    }
    Ok(())
}

/// Writes the image of `spec` to `out` in `format`. The layout is made at
/// `.NAME.partial` beside `out` and renamed over it; an existing `out` is
/// replaced only if it is an image layout (or, for an archive, a file).
pub fn write(spec: &ImageSpec, format: Format, out: &Path) -> Result<Written, OciError> {
    let image = build(spec)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| OciError::BadPath(out.display().to_string()))?;
    let partial: PathBuf = out.with_file_name(format!(".{name}.partial"));
    if let Ok(meta) = std::fs::symlink_metadata(out) {
        let replaceable = match format {
            Format::Dir => meta.is_dir() && out.join("oci-layout").is_file(),
            Format::Archive => meta.is_file(),
        };
        if !replaceable {
            return Err(OciError::Io {
                action: "replace",
                path: out.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "it exists and is not an OCI image of this format",
                ),
            });
        }
    }
    remove(&partial)?;
    let result = match format {
        Format::Dir => write_dir(&image, &partial),
        Format::Archive => layer::tar(&image.files)
            .and_then(|tar| std::fs::write(&partial, tar).map_err(io("write", &partial))),
    };
    if let Err(e) = result {
        let _ = remove(&partial);
        return Err(e);
    }
    if format == Format::Dir {
        remove(out)?;
    }
    if let Err(e) = std::fs::rename(&partial, out) {
        let _ = remove(&partial);
        return Err(io("rename into place", out)(e));
    }
    let blobs_size = image
        .files
        .iter()
        .filter(|f| f.path.starts_with("blobs/"))
        .map(|f| f.data.len() as u64)
        .sum();
    Ok(Written {
        manifest_digest: image.manifest_digest,
        config_digest: image.config_digest,
        layer_size: image.layer_size,
        blobs_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec {
            files: vec![File {
                path: "kiln/hello".into(),
                mode: 0o755,
                data: b"\x7fELF".to_vec(),
            }],
            entrypoint: vec!["/kiln/hello".into()],
            cmd: vec!["--times=1".into()],
            labels: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            annotations: BTreeMap::from([("z".into(), "1".into()), ("y".into(), "2".into())]),
            reference: "hello:latest".into(),
            ..ImageSpec::default()
        }
    }

    #[test]
    fn building_twice_gives_the_same_digest() {
        let a = build(&spec()).unwrap();
        for _ in 0..8 {
            // HashMaps inside oci-spec are seeded per instance: build often.
            let b = build(&spec()).unwrap();
            assert_eq!(a.manifest_digest, b.manifest_digest);
            assert_eq!(a.files, b.files);
        }
    }

    #[test]
    fn the_layout_holds_every_blob_under_its_digest() {
        let image = build(&spec()).unwrap();
        let index: Value = serde_json::from_slice(&image.files[1].data).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["annotations"][REF_NAME], "hello:latest");
        assert_eq!(entry["digest"], image.manifest_digest.as_str());
        for file in &image.files[2..] {
            assert_eq!(
                file.path,
                format!("blobs/sha256/{}", &sha256(&file.data)[7..])
            );
        }
        let manifest = image
            .files
            .iter()
            .find(|f| f.path.ends_with(&image.manifest_digest[7..]))
            .unwrap();
        let manifest: Value = serde_json::from_slice(&manifest.data).unwrap();
        assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
        assert_eq!(manifest["annotations"]["y"], "2");
        let text = String::from_utf8(manifest.to_string().into_bytes()).unwrap();
        assert!(text.find("\"y\"").unwrap() < text.find("\"z\"").unwrap());
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_an_unrelated_output_is_kept() {
        let dir = std::env::temp_dir().join(format!("kiln-oci-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mine")).unwrap();
        std::fs::write(dir.join("mine/keep"), b"x").unwrap();
        assert!(write(&spec(), Format::Dir, &dir.join("mine")).is_err());
        assert!(dir.join("mine/keep").is_file());
        let w = write(&spec(), Format::Dir, &dir.join("img")).unwrap();
        let again = write(&spec(), Format::Dir, &dir.join("img")).unwrap();
        assert_eq!(w.manifest_digest, again.manifest_digest);
        write(&spec(), Format::Archive, &dir.join("img.tar")).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["img", "img.tar", "mine"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
