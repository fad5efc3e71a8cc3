//! Test certificates made with `openssl` (P-256 keys, PEM files): CAs and
//! leaves signed by them, for the TLS tests of kiln-tls, wwws and fetch.

use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA in `dir`: `NAME.pem` and `NAME.key`, valid 30 days,
/// subject `CN=kiln test NAME`.
pub fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN=kiln test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
}

/// A server certificate in `dir` signed by the CA `ca` (see [`ca`]):
/// `NAME.pem` and `NAME.key`, for the subject alternative names `san`
/// (`DNS:localhost,IP:127.0.0.1`), valid `days` days from now (negative:
/// already expired), subject `CN=cn`.
pub fn leaf(dir: &Path, name: &str, cn: &str, san: &str, days: &str, ca: &str) {
    let ext =
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    signed(dir, name, cn, &ext, days, ca);
}

/// A client certificate in `dir` signed by the CA `ca` (see [`ca`]):
/// `NAME.pem` and `NAME.key`, subject `CN=cn`, valid 30 days.
pub fn client(dir: &Path, name: &str, cn: &str, ca: &str) {
    signed(dir, name, cn, "extendedKeyUsage=clientAuth\n", "30", ca);
}

/// A self-signed P-256 certificate `cert` for `CN=cn` with the subject
/// alternative names `san`, and its key `key`, in `dir`, valid 30 days.
pub fn self_signed(dir: &Path, cert: &str, key: &str, cn: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "30",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={san}"),
        ],
    );
}

/// `NAME.pem` and `NAME.key` in `dir`: a P-256 key and a certificate for
/// `CN=cn` with the extensions `ext` (an openssl extensions file's lines),
/// signed by the CA `ca`, valid `days` days.
fn signed(dir: &Path, name: &str, cn: &str, ext_lines: &str, days: &str, ca: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), ext_lines).expect("write the extensions file");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}
