//! The site as the code generator bakes it, shared by www's test suites.
#![allow(dead_code)] // each test file uses a different subset

use kiln_baked::{Baked, Entry, digest_of};

/// Every file of htdocs (path, bytes), in path order.
pub const SITE: &[(&str, &[u8])] = &[
    ("about.html", include_bytes!("../../htdocs/about.html")),
    ("css/site.css", include_bytes!("../../htdocs/css/site.css")),
    (
        "docs/http.html",
        include_bytes!("../../htdocs/docs/http.html"),
    ),
    (
        "docs/index.html",
        include_bytes!("../../htdocs/docs/index.html"),
    ),
    ("img/kiln.png", include_bytes!("../../htdocs/img/kiln.png")),
    ("img/kiln.svg", include_bytes!("../../htdocs/img/kiln.svg")),
    ("index.html", include_bytes!("../../htdocs/index.html")),
    ("robots.txt", include_bytes!("../../htdocs/robots.txt")),
];

/// The file `path` of [`SITE`], to bake a part of the site.
pub fn file(path: &str) -> (&'static str, &'static [u8]) {
    *SITE
        .iter()
        .find(|(p, _)| *p == path)
        .unwrap_or_else(|| panic!("htdocs has no {path}"))
}

/// A store of `files` (path order) with their digests, checked, as the
/// code generator bakes it.
pub fn bake(files: &[(&'static str, &'static [u8])]) -> Baked {
    let entries: Vec<Entry> = files
        .iter()
        .map(|&(path, data)| Entry {
            path,
            data,
            digest: digest_of(data),
        })
        .collect();
    let kv = Baked::new(Box::leak(entries.into_boxed_slice())).unwrap();
    kv.verify().unwrap();
    kv
}

/// The whole site.
pub fn htdocs() -> Baked {
    bake(SITE)
}
