//! `kiln package`: reproducible OCI images, urunc's annotations in native
//! images, errors for bad input, and self-contained images run by podman
//! (hello's exit status, www's pages over a published port).

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{copy_dir, kiln_in, ok, run_for, temp_dir, text};

/// A build of an example, its tender and the entrypoint from a cold cache.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// A podman command.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// examples/NAME copied to `dir` as a crate of its own (its dependencies'
/// paths made absolute, no dev-dependencies, a `[workspace]` table).
fn example_copy(name: &str, dir: &Path) -> PathBuf {
    let example = examples().join(name);
    for sub in ["src", "htdocs"] {
        if example.join(sub).is_dir() {
            copy_dir(&example.join(sub), &dir.join(sub));
        }
    }
    std::fs::copy(example.join("unikernel.toml"), dir.join("unikernel.toml")).unwrap();
    let manifest = std::fs::read_to_string(example.join("Cargo.toml")).unwrap();
    let end = ["[dev-dependencies]", "[lints]", "[[bench]]"]
        .iter()
        .filter_map(|t| manifest.find(t))
        .min()
        .unwrap_or(manifest.len());
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Settings inherited from kiln's workspace become the values they have
    // there; a dependency inherited from it becomes a path.
    let mut own = String::new();
    for line in manifest[..end].lines() {
        let line = match line.split_once(".workspace = true") {
            Some(("version", _)) => "version = \"0.1.0\"".to_string(),
            Some(("edition", _)) => "edition = \"2024\"".to_string(),
            Some((dep, _)) if dep.starts_with("kiln-") => {
                format!("{dep} = {{ path = \"{}/{dep}\" }}", crates.display())
            }
            Some(_) => continue,
            None => line.replace(
                "path = \"../../crates/",
                &format!("path = \"{}/", crates.display()),
            ),
        };
        own.push_str(&line);
        own.push('\n');
    }
    let manifest = own + "\n[workspace]\n";
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    dir.to_path_buf()
}

/// `kiln package ARGS` in `dir`.
fn package(dir: &Path, args: &[&str]) -> Output {
    run_for(kiln_in(dir).arg("package").args(args), BUILD_TIMEOUT)
}

/// The manifest digest `kiln package` printed.
fn digest(output: Output, what: &str) -> String {
    let out = ok(output, what);
    let digest = text(&out.stdout).trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{what}: {digest:?}"
    );
    digest
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The paths and contents of the regular files of a gzipped tar layer.
fn layer_files(path: &Path) -> Vec<(String, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.push((name, data));
        }
    }
    files
}

#[test]
fn bad_input_exits_2_and_leaves_no_image() {
    let tmp = temp_dir("oci-bad");
    let dir = example_copy("hello", &tmp.path().join("hello"));
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let image = out_dir.join("hello.tar");
    let image_arg = image.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        // Nothing built yet and --no-build: nothing to package.
        (
            &["-t", "spt", "--no-build", "-o", image_arg],
            "hello is not built",
        ),
        (&["-t", "vmx", "-o", image_arg], "invalid value 'vmx'"),
        (
            &["--flavour", "native", "-o", image_arg],
            "the native flavour is for urunc",
        ),
        (
            &["-t", "spt", "--tag", "Bad Name", "-o", image_arg],
            "bad image name",
        ),
        (
            &["-t", "spt", "-o", "/nonexistent-kiln-dir/hello.tar"],
            "is not a directory",
        ),
    ];
    for (args, expected) in cases {
        let out = package(&dir, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // An output that cannot be written once the image is made: /proc takes
    // no new files. `--no-build` after a build keeps this case quick.
    ok(
        run_for(kiln_in(&dir).args(["build", "-t", "spt"]), BUILD_TIMEOUT),
        "kiln build -t spt hello",
    );
    let out = package(
        &dir,
        &["-t", "spt", "--no-build", "-o", "/proc/kiln-hello.tar"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write the image"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "bad input left {left:?}");
}

#[test]
fn package_errors_read_well() {
    let tmp = temp_dir("oci-snap");
    let dir = example_copy("hello", &tmp.path().join("hello"));
    let out = package(&dir, &["-t", "spt", "--no-build", "-o", "hello.tar"]);
    insta::assert_snapshot!("package_not_built", common::transcript(&out, &dir));
    let out = package(&dir, &["--flavour", "native", "-o", "hello.tar"]);
    insta::assert_snapshot!("package_native_unix", common::transcript(&out, &dir));
    let out = package(&dir, &["-t", "spt", "--tag", "Hello", "-o", "hello.tar"]);
    insta::assert_snapshot!("package_bad_tag", common::transcript(&out, &dir));
}

#[test]
fn images_are_reproducible_and_native_images_carry_urunc_annotations() {
    let tmp = temp_dir("oci-repro");
    let dir = example_copy("www", &tmp.path().join("www"));
    let [a, b, native, native_again] =
        ["a.tar", "b.tar", "native", "native-again"].map(|n| tmp.path().join(n));
    let packaged = |out: &Path, extra: &[&str]| {
        let mut args = vec!["-t", "spt", "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        digest(package(&dir, &args), &format!("kiln package {args:?}"))
    };
    let first = packaged(&a, &["--", "--port=80"]);
    // The same inputs (what the first packaging built) give the same bytes.
    let second = packaged(&b, &["--no-build", "--", "--port=80"]);
    assert_eq!(first, second, "two packagings of the same inputs differ");
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let other = packaged(&b, &["--no-build", "--", "--port=81"]);
    assert_ne!(first, other, "the default arguments are not in the image");

    let native_args = [
        "--flavour",
        "native",
        "--format",
        "oci-dir",
        "--tag",
        "kiln/www:native",
        "--no-build",
        "--",
        "--port=80",
    ];
    let d1 = packaged(&native, &native_args);
    let d2 = packaged(&native_again, &native_args);
    assert_eq!(d1, d2);

    let index = json(&native.join("index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], d1.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "kiln/www:native"
    );
    let manifest = json(&blob(&native, &d1));
    let config = json(&blob(
        &native,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let expected = [
        ("com.urunc.unikernel.unikernelType", "mirage"),
        ("com.urunc.unikernel.hypervisor", "spt"),
        ("com.urunc.unikernel.binary", "/unikernel/www.spt"),
        ("com.urunc.unikernel.cmdline", "--port=80"),
        ("com.urunc.unikernel.solo5NetDev", "service"),
        ("com.urunc.unikernel.mountRootfs", "false"),
    ];
    for (key, value) in expected {
        assert_eq!(manifest["annotations"][key], value, "manifest {key}");
        assert_eq!(config["config"]["Labels"][key], value, "config label {key}");
    }
    assert!(manifest["annotations"]["com.urunc.unikernel.solo5BlkDev"].is_null());
    assert_eq!(config["config"]["Cmd"][0], "--port=80");

    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let files = layer_files(&blob(&native, layer));
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["unikernel/www.spt", "urunc.json"]);
    let built = std::fs::read(dir.join("dist/www.spt")).unwrap();
    assert!(files[0].1 == built, "the layer's image is not dist/www.spt");
    let urunc: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(urunc["com.urunc.unikernel.binary"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, b"/unikernel/www.spt");
}

/// Containers and images removed on drop, also when a test fails.
struct Podman {
    containers: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
}

impl Podman {
    fn command() -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .stdin(Stdio::null());
        cmd
    }

    fn run(args: &[&str]) -> Output {
        run_for(Self::command().args(args), PODMAN_TIMEOUT)
    }

    fn load(&mut self, archive: &Path, reference: &str) {
        self.images.push(reference.to_string());
        ok(
            Self::run(&["load", "-q", "-i", archive.to_str().unwrap()]),
            "podman load",
        );
    }

    fn name(&mut self, name: &str) -> String {
        let name = format!("kiln-test-{}-{name}", std::process::id());
        let _ = Self::run(&["rm", "-f", &name]);
        self.containers.push(name.clone());
        name
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Self::run(&["rm", "-f", "-t", "0", c]);
        }
        for i in &self.images {
            let _ = Self::run(&["rmi", "-f", i]);
        }
        for v in &self.volumes {
            let _ = Self::run(&["volume", "rm", "-f", v]);
        }
    }
}

fn podman_or_skip(test: &str) -> bool {
    if !kiln_testsupport::skip::have("podman", "--version") {
        kiln_testsupport::skip::skip(test, "podman is not installed (scripts/test installs it)");
        return false;
    }
    if !kiln_testsupport::skip::is_root() {
        kiln_testsupport::skip::skip(test, "podman with runc and published ports needs root");
        return false;
    }
    true
}

#[test]
fn podman_keeps_notes_on_a_volume_across_containers() {
    if !podman_or_skip("podman_keeps_notes_on_a_volume_across_containers") {
        return;
    }
    let tmp = temp_dir("oci-notes");
    let notes = example_copy("notes", &tmp.path().join("notes"));
    let reference = format!("localhost/kiln-test-{}/notes:spt", std::process::id());
    let archive = tmp.path().join("notes.tar");
    digest(
        package(
            &notes,
            &[
                "-t",
                "spt",
                "--tag",
                &reference,
                "-o",
                archive.to_str().unwrap(),
            ],
        ),
        "kiln package notes",
    );
    let mut podman = Podman {
        containers: Vec::new(),
        images: Vec::new(),
        volumes: Vec::new(),
    };
    podman.load(&archive, &reference);
    let volume = format!("kiln-test-{}-notes", std::process::id());
    let _ = Podman::run(&["volume", "rm", "-f", &volume]);
    podman.volumes.push(volume.clone());
    // The entrypoint makes the block device at /var/lib/kiln/data.img on
    // first use; each container is removed after its run.
    let mount = format!("{volume}:/var/lib/kiln");
    for (i, note) in ["first", "second"].iter().enumerate() {
        let name = podman.name(&format!("notes-{i}"));
        let out = ok(
            Podman::run(&[
                "run",
                "--name",
                &name,
                "-v",
                &mount,
                &reference,
                &format!("--add={note}"),
            ]),
            "podman run notes --add",
        );
        assert!(
            text(&out.stdout).contains(&format!("{} notes", i + 1)),
            "{}",
            text(&out.stdout)
        );
        ok(Podman::run(&["rm", &name]), "podman rm");
    }
    let name = podman.name("notes-list");
    let out = ok(
        Podman::run(&["run", "--name", &name, "-v", &mount, &reference]),
        "podman run notes",
    );
    assert_eq!(text(&out.stdout), "1: first\n2: second\n2 notes\n");
}

#[test]
fn podman_runs_hello_and_serves_www_on_a_published_port() {
    if !podman_or_skip("podman_runs_hello_and_serves_www_on_a_published_port") {
        return;
    }
    let tmp = temp_dir("oci-podman");
    let hello = example_copy("hello", &tmp.path().join("hello"));
    let www = example_copy("www", &tmp.path().join("www"));
    let tag = format!("kiln-test-{}", std::process::id());
    let hello_ref = format!("localhost/{tag}/hello:spt");
    let www_ref = format!("localhost/{tag}/www:spt");
    let hello_tar = tmp.path().join("hello.tar");
    let www_tar = tmp.path().join("www.tar");
    digest(
        package(
            &hello,
            &[
                "-t",
                "spt",
                "--tag",
                &hello_ref,
                "-o",
                hello_tar.to_str().unwrap(),
            ],
        ),
        "kiln package hello",
    );
    digest(
        package(
            &www,
            &[
                "-t",
                "spt",
                "--tag",
                &www_ref,
                "-o",
                www_tar.to_str().unwrap(),
                "--",
                "--port=80",
            ],
        ),
        "kiln package www",
    );
    let mut podman = Podman {
        containers: Vec::new(),
        images: Vec::new(),
        volumes: Vec::new(),
    };
    podman.load(&hello_tar, &hello_ref);
    podman.load(&www_tar, &www_ref);

    // hello: its output, and its exit status through the entrypoint.
    let name = podman.name("hello");
    let out = ok(
        Podman::run(&["run", "--name", &name, &hello_ref, "--times=2"]),
        "podman run hello",
    );
    assert_eq!(text(&out.stdout), "hello\nhello\n");
    let name = podman.name("hello-bad");
    let out = Podman::run(&["run", "--name", &name, &hello_ref, "--times=x"]);
    // The guest's console is the container's stdout.
    let said = text(&out.stdout) + &text(&out.stderr);
    // 64: a generated unikernel's exit status for bad arguments.
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("--times"), "{said}");

    // hvt: the KVM tender in the container, given /dev/kvm.
    if kiln_testsupport::skip::kvm_or_skip(
        "podman_runs_hello_and_serves_www_on_a_published_port (hvt)",
    ) {
        let hvt_ref = format!("localhost/{tag}/hello:hvt");
        let hvt_tar = tmp.path().join("hello-hvt.tar");
        digest(
            package(
                &hello,
                &[
                    "-t",
                    "hvt",
                    "--tag",
                    &hvt_ref,
                    "-o",
                    hvt_tar.to_str().unwrap(),
                ],
            ),
            "kiln package hello (hvt)",
        );
        podman.load(&hvt_tar, &hvt_ref);
        let name = podman.name("hello-hvt");
        let out = ok(
            Podman::run(&[
                "run",
                "--name",
                &name,
                "--device",
                "/dev/kvm",
                &hvt_ref,
                "--times=1",
            ]),
            "podman run hello (hvt)",
        );
        assert_eq!(text(&out.stdout), "hello\n");
    }

    // The unix target: the static program under the same entrypoint.
    let unix_ref = format!("localhost/{tag}/hello:unix");
    let unix_tar = tmp.path().join("hello-unix.tar");
    digest(
        package(
            &hello,
            &["--tag", &unix_ref, "-o", unix_tar.to_str().unwrap()],
        ),
        "kiln package hello (unix)",
    );
    podman.load(&unix_tar, &unix_ref);
    let name = podman.name("hello-unix");
    let out = ok(
        Podman::run(&["run", "--name", &name, &unix_ref, "--times=1"]),
        "podman run hello (unix)",
    );
    assert_eq!(text(&out.stdout), "hello\n");

    // www: the container's eth0 wired to the unikernel, the port published
    // on the host's loopback.
    let port = kiln_testsupport::ports::free_tcp_port();
    let name = podman.name("www");
    ok(
        Podman::run(&[
            "run",
            "-d",
            "--name",
            &name,
            "--cap-add",
            "NET_ADMIN",
            "--device",
            "/dev/net/tun",
            "-p",
            &format!("127.0.0.1:{port}:80"),
            &www_ref,
        ]),
        "podman run -d www",
    );
    // Without NET_ADMIN the entrypoint says what is missing.
    let name = podman.name("www-no-caps");
    let out = Podman::run(&["run", "--name", &name, "--device", "/dev/net/tun", &www_ref]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--cap-add NET_ADMIN"),
        "{}",
        text(&out.stderr)
    );
    let fetch = |path: &str| {
        run_for(
            Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "5"])
                .arg(format!("http://127.0.0.1:{port}/{path}")),
            Duration::from_secs(10),
        )
    };
    let start = Instant::now();
    loop {
        let out = fetch("");
        if out.status.success() {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let logs = Podman::run(&["logs", &name]);
            panic!(
                "www never answered on port {port}: {}\n--- container log\n{}{}",
                text(&out.stderr),
                text(&logs.stdout),
                text(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let htdocs = examples().join("www/htdocs");
    for page in [
        "index.html",
        "about.html",
        "robots.txt",
        "css/site.css",
        "img/kiln.png",
    ] {
        let out = ok(fetch(page), &format!("curl /{page}"));
        let expected = std::fs::read(htdocs.join(page)).unwrap();
        assert!(out.stdout == expected, "/{page} differs from htdocs/{page}");
    }
    // A stop signal reaches the tender through the entrypoint: no 10 s
    // wait for SIGKILL.
    let start = Instant::now();
    ok(Podman::run(&["stop", "-t", "10", &name]), "podman stop www");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "podman stop took {:?}",
        start.elapsed()
    );
}

/// A native image's unikernel under kiln's tender with the command line
/// urunc builds for a `mirage` guest on spt (`unikernels/mirage.go`,
/// `hypervisors/spt.go`): no `--` before the image, the address and
/// gateway as MirageOS flags before the image's own arguments.
#[test]
fn kilns_tender_runs_the_native_unikernel_with_uruncs_command_line() {
    let test = "kilns_tender_runs_the_native_unikernel_with_uruncs_command_line";
    if !kiln_testsupport::skip::netns_or_skip(test, &[("curl", "--version", "curl")]) {
        return;
    }
    let tmp = temp_dir("oci-urunc");
    let www = example_copy("www", &tmp.path().join("www"));
    ok(
        run_for(kiln_in(&www).args(["build", "-t", "spt"]), BUILD_TIMEOUT),
        "kiln build -t spt www",
    );
    let ns = kiln_testsupport::netns::Netns::new("oci-urunc");
    ns.add_tap("tap0");
    ns.address("tap0", "10.0.0.1/24", None);
    let mut tender = ns.command(www.join("dist/kiln-spt"));
    tender
        .args([
            "--mem=64",
            "--net:service=tap0",
            "--net-mac:service=02:aa:bb:cc:dd:ee",
        ])
        .arg(www.join("dist/www.spt"))
        .args(["--ipv4=10.0.0.2/24", "--ipv4-gateway=10.0.0.1", "--port=80"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = kiln_testsupport::process::ChildGuard(tender.spawn().unwrap());
    let start = Instant::now();
    let page = loop {
        let out = run_for(
            ns.command("curl").args([
                "-sS",
                "--fail",
                "--max-time",
                "2",
                "http://10.0.0.2/robots.txt",
            ]),
            Duration::from_secs(5),
        );
        if out.status.success() {
            break out.stdout;
        }
        if let Ok(Some(status)) = server.wait_for(Duration::ZERO) {
            panic!("the tender exited with {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "www never answered: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(page == std::fs::read(examples().join("www/htdocs/robots.txt")).unwrap());
    let neighbours = ns.ip(&["neigh", "show", "dev", "tap0"]);
    assert!(neighbours.contains("02:aa:bb:cc:dd:ee"), "{neighbours}");
}
