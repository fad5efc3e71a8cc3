//! `Baked`: a read-only store over a table of files compiled into the image.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use kiln_devices::kv::normalize;
use kiln_devices::{Digest, EntryKind, KvError, KvRo};

/// One file of a baked store, as the code generator emits it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The key: `/`-separated, normalised (see the crate docs).
    pub path: &'static str,
    /// The contents.
    pub data: &'static [u8],
    /// SHA-256 of `data` ([`crate::digest_of`]).
    pub digest: [u8; 32],
}

/// Why a table of entries was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BakedError {
    /// A path is empty or has a `.` or `..` segment.
    #[error(
        "baked store entry `{path}` has an invalid path\nhint: paths are relative, without `.` or `..` segments"
    )]
    InvalidPath {
        /// The path.
        path: String,
    },
    /// A path is not in normal form.
    #[error("baked store entry `{path}` is not in normal form (expected `{normal}`)")]
    NotNormalized {
        /// The path.
        path: String,
        /// Its normal form.
        normal: String,
    },
    /// Two entries have the same path.
    #[error("baked store has two entries for `{path}`")]
    Duplicate {
        /// The path.
        path: String,
    },
    /// A path names a file and also a directory of other entries.
    #[error("baked store entry `{path}` is a file and also a directory of other entries")]
    FileIsDirectory {
        /// The path.
        path: String,
    },
    /// An entry's digest does not match its contents.
    #[error("baked store entry `{path}` does not match its digest\nhint: rebuild the unikernel")]
    DigestMismatch {
        /// The path.
        path: String,
    },
}

/// A read-only store of files baked into the image.
#[derive(Debug)]
pub struct Baked {
    entries: &'static [Entry],
    /// Key to index in `entries`.
    values: BTreeMap<&'static str, usize>,
    /// Dictionary key (`""` for the root) to its entries, sorted by name.
    dictionaries: BTreeMap<String, BTreeMap<String, EntryKind>>,
}

impl Baked {
    /// Indexes `entries`, checking that paths are valid, normalised,
    /// distinct, and that no file is also a directory. Contents are not
    /// hashed here (see [`Baked::verify`]).
    pub fn new(entries: &'static [Entry]) -> Result<Baked, BakedError> {
        let mut values = BTreeMap::new();
        let mut dictionaries: BTreeMap<String, BTreeMap<String, EntryKind>> = BTreeMap::new();
        dictionaries.insert(String::new(), BTreeMap::new());
        for (i, e) in entries.iter().enumerate() {
            let normal = normalize(e.path).map_err(|_| BakedError::InvalidPath {
                path: e.path.into(),
            })?;
            if normal.is_empty() {
                return Err(BakedError::InvalidPath {
                    path: e.path.into(),
                });
            }
            if normal != e.path {
                return Err(BakedError::NotNormalized {
                    path: e.path.into(),
                    normal,
                });
            }
            if values.insert(e.path, i).is_some() {
                return Err(BakedError::Duplicate {
                    path: e.path.into(),
                });
            }
            let mut parent = String::new();
            let mut segments = e.path.split('/').peekable();
            while let Some(name) = segments.next() {
                let kind = if segments.peek().is_some() {
                    EntryKind::Dictionary
                } else {
                    EntryKind::Value
                };
                let dict = dictionaries.entry(parent.clone()).or_default();
                match dict.insert(name.to_string(), kind) {
                    Some(previous) if previous != kind => {
                        let path = if parent.is_empty() {
                            name.to_string()
                        } else {
                            alloc::format!("{parent}/{name}")
                        };
                        return Err(BakedError::FileIsDirectory { path });
                    }
                    _ => {}
                }
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(name);
            }
        }
        Ok(Baked {
            entries,
            values,
            dictionaries,
        })
    }

    /// Checks every entry's contents against its digest.
    pub fn verify(&self) -> Result<(), BakedError> {
        match self
            .entries
            .iter()
            .find(|e| crate::digest_of(e.data) != e.digest)
        {
            Some(e) => Err(BakedError::DigestMismatch {
                path: e.path.into(),
            }),
            None => Ok(()),
        }
    }

    /// Number of values (files).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store holds no values.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn kind(&self, key: &str) -> Result<Option<EntryKind>, KvError> {
        let key = normalize(key)?;
        Ok(if self.values.contains_key(key.as_str()) {
            Some(EntryKind::Value)
        } else if self.dictionaries.contains_key(&key) {
            Some(EntryKind::Dictionary)
        } else {
            None
        })
    }

    fn value(&self, key: &str) -> Result<&'static Entry, KvError> {
        let key = normalize(key)?;
        match self.values.get(key.as_str()) {
            Some(&i) => self.entries.get(i).ok_or(KvError::NotFound),
            None if self.dictionaries.contains_key(&key) => Err(KvError::IsDictionary),
            None => Err(KvError::NotFound),
        }
    }
}

impl KvRo for Baked {
    async fn exists(&self, key: &str) -> Result<Option<EntryKind>, KvError> {
        self.kind(key)
    }

    async fn get(&self, key: &str) -> Result<Cow<'static, [u8]>, KvError> {
        Ok(Cow::Borrowed(self.value(key)?.data))
    }

    async fn get_partial(
        &self,
        key: &str,
        offset: u64,
        len: usize,
    ) -> Result<Cow<'static, [u8]>, KvError> {
        let data = self.value(key)?.data;
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s <= data.len())
            .ok_or(KvError::OutOfRange)?;
        let end = start.saturating_add(len).min(data.len());
        Ok(Cow::Borrowed(data.get(start..end).unwrap_or_default()))
    }

    async fn list(&self, key: &str) -> Result<Vec<(String, EntryKind)>, KvError> {
        let key = normalize(key)?;
        match self.dictionaries.get(&key) {
            Some(d) => Ok(d.iter().map(|(n, k)| (n.clone(), *k)).collect()),
            None if self.values.contains_key(key.as_str()) => Err(KvError::IsValue),
            None => Err(KvError::NotFound),
        }
    }

    async fn size(&self, key: &str) -> Result<u64, KvError> {
        Ok(self.value(key)?.data.len() as u64)
    }

    async fn digest(&self, key: &str) -> Result<Digest, KvError> {
        Ok(Digest(self.value(key)?.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use std::boxed::Box;

    fn entry(path: &'static str, data: &'static [u8]) -> Entry {
        Entry {
            path,
            data,
            digest: crate::digest_of(data),
        }
    }

    fn table(entries: Vec<Entry>) -> &'static [Entry] {
        Box::leak(entries.into_boxed_slice())
    }

    fn site() -> Baked {
        Baked::new(table(vec![
            entry("index.html", b"<h1>home</h1>"),
            entry("css/site.css", b"body{}"),
            entry("docs/a/deep.txt", b"deep"),
            entry("docs/index.html", b"docs"),
        ]))
        .unwrap()
    }

    /// Runs a store future: the baked store never waits.
    fn now<F: Future>(f: F) -> F::Output {
        let platform: &'static Idle = Box::leak(Box::new(Idle));
        kiln_rt::block_on(platform, f)
    }

    struct Idle;
    impl kiln_rt::Platform for Idle {
        fn now(&self) -> kiln_devices::Instant {
            kiln_devices::Instant::ZERO
        }
        fn wait(&self, _: Option<kiln_devices::Instant>) {
            panic!("a baked store operation blocked");
        }
    }

    #[test]
    fn gets_values_borrowed_with_normalised_keys() {
        let kv = site();
        now(async {
            for key in ["css/site.css", "/css//site.css", "css/site.css/"] {
                let v = kv.get(key).await.unwrap();
                assert!(matches!(v, Cow::Borrowed(_)));
                assert_eq!(&*v, b"body{}");
            }
            assert_eq!(kv.size("docs/a/deep.txt").await, Ok(4));
            assert_eq!(
                kv.digest("index.html").await.unwrap(),
                Digest(crate::digest_of(b"<h1>home</h1>"))
            );
            assert_eq!(kv.get("missing").await, Err(KvError::NotFound));
            assert_eq!(kv.get("docs").await, Err(KvError::IsDictionary));
            assert_eq!(kv.get("../index.html").await, Err(KvError::InvalidKey));
            assert_eq!(kv.get("css/./site.css").await, Err(KvError::InvalidKey));
        });
    }

    #[test]
    fn partial_reads_clamp_and_refuse_offsets_past_the_end() {
        let kv = site();
        now(async {
            assert_eq!(
                &*kv.get_partial("docs/a/deep.txt", 1, 2).await.unwrap(),
                b"ee"
            );
            assert_eq!(
                &*kv.get_partial("docs/a/deep.txt", 2, 99).await.unwrap(),
                b"ep"
            );
            assert_eq!(
                &*kv.get_partial("docs/a/deep.txt", 4, 1).await.unwrap(),
                b""
            );
            assert_eq!(
                kv.get_partial("docs/a/deep.txt", 5, 1).await,
                Err(KvError::OutOfRange)
            );
            assert_eq!(
                kv.get_partial("docs/a/deep.txt", u64::MAX, usize::MAX)
                    .await,
                Err(KvError::OutOfRange)
            );
        });
    }

    #[test]
    fn dictionaries_come_from_paths() {
        let kv = site();
        now(async {
            let root = kv.list("/").await.unwrap();
            assert_eq!(
                root,
                vec![
                    ("css".into(), EntryKind::Dictionary),
                    ("docs".into(), EntryKind::Dictionary),
                    ("index.html".into(), EntryKind::Value),
                ]
            );
            assert_eq!(
                kv.list("docs").await.unwrap(),
                vec![
                    ("a".into(), EntryKind::Dictionary),
                    ("index.html".into(), EntryKind::Value),
                ]
            );
            assert_eq!(kv.exists("docs/a").await, Ok(Some(EntryKind::Dictionary)));
            assert_eq!(
                kv.exists("docs/a/deep.txt").await,
                Ok(Some(EntryKind::Value))
            );
            assert_eq!(kv.exists("").await, Ok(Some(EntryKind::Dictionary)));
            assert_eq!(kv.exists("nope").await, Ok(None));
            assert_eq!(kv.list("index.html").await, Err(KvError::IsValue));
            assert_eq!(kv.list("nope").await, Err(KvError::NotFound));
        });
        assert_eq!(kv.len(), 4);
        assert_eq!(kv.verify(), Ok(()));
    }

    #[test]
    fn bad_tables_are_refused() {
        let cases: [(Vec<Entry>, BakedError); 5] = [
            (
                vec![entry("a/../b", b"")],
                BakedError::InvalidPath {
                    path: "a/../b".into(),
                },
            ),
            (
                vec![entry("/", b"")],
                BakedError::InvalidPath { path: "/".into() },
            ),
            (
                vec![entry("/a//b", b"")],
                BakedError::NotNormalized {
                    path: "/a//b".into(),
                    normal: "a/b".into(),
                },
            ),
            (
                vec![entry("a", b""), entry("a", b"")],
                BakedError::Duplicate { path: "a".into() },
            ),
            (
                vec![entry("a/b", b""), entry("a/b/c", b"")],
                BakedError::FileIsDirectory { path: "a/b".into() },
            ),
        ];
        for (entries, expected) in cases {
            assert_eq!(Baked::new(table(entries)).unwrap_err(), expected);
        }
        let mut bad = entry("x", b"data");
        bad.digest[0] ^= 1;
        let kv = Baked::new(table(vec![bad])).unwrap();
        assert_eq!(
            kv.verify(),
            Err(BakedError::DigestMismatch { path: "x".into() })
        );
    }
}
