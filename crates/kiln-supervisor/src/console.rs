//! A unikernel's console: the last bytes in a bounded ring, everything in
//! `console.log` rotated to `console.log.1` at a size limit, and followers
//! that read the file from their own offset (a slow follower costs no
//! memory and loses nothing unless it falls a whole file behind, which it
//! is told).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The console's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes kept in memory for `logs` and `logs --tail`.
    pub ring: usize,
    /// `console.log` is rotated when a write would take it past this size.
    pub file: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            ring: 64 * 1024,
            file: 1024 * 1024,
        }
    }
}

struct Inner {
    ring: VecDeque<u8>,
    /// Whether the ring's first line lost its start.
    trimmed: bool,
    file: File,
    len: u64,
    /// Bumped at each rotation.
    generation: u64,
    /// Bytes dropped because the file could not be written.
    write_errors: u64,
}

/// One unikernel's console.
pub struct Console {
    dir: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
    changed: Condvar,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Console {
    /// Opens (or creates) the console files in `dir`, filling the ring from
    /// the end of `console.log`.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Arc<Console>> {
        let path = dir.join("console.log");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        // One byte more than the ring holds, to know whether the ring
        // starts at a line's start.
        let keep = (limits.ring as u64 + 1).min(len);
        let mut tail = Vec::with_capacity(keep as usize);
        file.seek(SeekFrom::Start(len - keep))?;
        (&mut file).take(keep).read_to_end(&mut tail)?;
        let mut trimmed = false;
        if tail.len() > limits.ring {
            trimmed = tail.first() != Some(&b'\n');
            tail.remove(0);
        }
        Ok(Arc::new(Console {
            dir: dir.to_path_buf(),
            limits,
            inner: Mutex::new(Inner {
                ring: tail.into(),
                trimmed,
                file,
                len,
                generation: 0,
                write_errors: 0,
            }),
            changed: Condvar::new(),
        }))
    }

    /// Appends `bytes`: to the file (rotating it first when full) and to
    /// the ring, then wakes the followers.
    pub fn append(&self, bytes: &[u8]) {
        let mut g = lock(&self.inner);
        if g.len > 0 && g.len + bytes.len() as u64 > self.limits.file {
            let path = self.dir.join("console.log");
            let rotated = std::fs::rename(&path, self.dir.join("console.log.1")).and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(&path)
            });
            match rotated {
                Ok(file) => {
                    g.file = file;
                    g.len = 0;
                    g.generation += 1;
                }
                Err(e) => eprintln!("kiln daemon: cannot rotate {}: {e}", path.display()),
            }
        }
        match g.file.write_all(bytes) {
            Ok(()) => g.len += bytes.len() as u64,
            Err(_) => g.write_errors += bytes.len() as u64,
        }
        g.ring.extend(bytes);
        let excess = g.ring.len().saturating_sub(self.limits.ring);
        if excess > 0 {
            let last = g.ring.drain(..excess).next_back();
            g.trimmed = last != Some(b'\n');
        }
        drop(g);
        self.changed.notify_all();
    }

    /// The last `lines` lines in the ring (all of it with `None`); a line
    /// cut by the ring's bound is left out.
    pub fn tail(&self, lines: Option<u32>) -> Vec<u8> {
        let g = lock(&self.inner);
        tail_of(&g, lines)
    }

    /// The ring's tail as [`Console::tail`], and a follower that continues
    /// exactly where that tail ends.
    pub fn follow(self: &Arc<Console>, lines: Option<u32>) -> io::Result<(Vec<u8>, Follower)> {
        let g = lock(&self.inner);
        let tail = tail_of(&g, lines);
        let mut file = File::open(self.dir.join("console.log"))?;
        file.seek(SeekFrom::Start(g.len))?;
        let follower = Follower {
            console: Arc::clone(self),
            file,
            generation: g.generation,
        };
        Ok((tail, follower))
    }

    /// Bytes dropped because `console.log` could not be written.
    pub fn write_errors(&self) -> u64 {
        lock(&self.inner).write_errors
    }
}

fn tail_of(g: &Inner, lines: Option<u32>) -> Vec<u8> {
    let (a, b) = g.ring.as_slices();
    let mut all = Vec::with_capacity(a.len() + b.len());
    all.extend_from_slice(a);
    all.extend_from_slice(b);
    let mut start = 0;
    if g.trimmed {
        start = all
            .iter()
            .position(|&c| c == b'\n')
            .map_or(all.len(), |i| i + 1);
    }
    if let Some(n) = lines {
        // Count back `n` newlines, not counting one that ends the text.
        let body = all.get(start..).unwrap_or_default();
        let end = body.len() - usize::from(body.last() == Some(&b'\n'));
        let mut seen = 0u32;
        let mut cut = 0;
        for (i, &c) in body.iter().enumerate().take(end).rev() {
            if c == b'\n' {
                seen += 1;
                if seen == n {
                    cut = i + 1;
                    break;
                }
            }
        }
        if n == 0 {
            cut = body.len();
        }
        start += cut;
    }
    all.split_off(start)
}

/// Reads a console from an offset on, across rotations.
pub struct Follower {
    console: Arc<Console>,
    file: File,
    generation: u64,
}

/// What [`Follower::next`] returns.
pub enum Next {
    /// New bytes.
    Data(Vec<u8>),
    /// Nothing new within the wait: the caller checks whether to go on.
    Idle,
}

impl Follower {
    /// The next bytes, waiting up to `wait` for some.
    pub fn next(&mut self, wait: Duration) -> io::Result<Next> {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = self.file.read(&mut buf)?;
            if n > 0 {
                buf.truncate(n);
                return Ok(Next::Data(buf));
            }
            let g = lock(&self.console.inner);
            if g.generation == self.generation {
                let (g, _) = self
                    .console
                    .changed
                    .wait_timeout(g, wait)
                    .unwrap_or_else(|e| e.into_inner());
                if g.generation == self.generation {
                    let more = g.len > self.file.stream_position().unwrap_or(u64::MAX);
                    drop(g);
                    if !more {
                        return Ok(Next::Idle);
                    }
                }
                continue;
            }
            // Rotated: what was written to this file before the rotation
            // is read first, then the reader moves to the current file.
            drop(g);
            let n = self.file.read(&mut buf)?;
            if n > 0 {
                buf.truncate(n);
                return Ok(Next::Data(buf));
            }
            let g = lock(&self.console.inner);
            let skipped = g.generation - self.generation - 1;
            self.file = File::open(self.console.dir.join("console.log"))?;
            self.generation = g.generation;
            drop(g);
            if skipped > 0 {
                return Ok(Next::Data(
                    format!(
                        "\n[kiln: this reader fell {skipped} rotated log file(s) behind; their lines are not shown]\n"
                    )
                    .into_bytes(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("kiln-console-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn ring_is_bounded_and_tails_whole_lines() {
        let dir = tmp("ring");
        let c = Console::open(
            &dir,
            Limits {
                ring: 20,
                file: 1 << 20,
            },
        )
        .unwrap();
        for i in 0..10 {
            c.append(format!("line {i}\n").as_bytes());
        }
        assert_eq!(c.tail(None), b"line 8\nline 9\n");
        assert_eq!(c.tail(Some(1)), b"line 9\n");
        assert_eq!(c.tail(Some(0)), b"");
        // Reopened: the ring comes back from the file.
        drop(c);
        let c = Console::open(
            &dir,
            Limits {
                ring: 14,
                file: 1 << 20,
            },
        )
        .unwrap();
        assert_eq!(c.tail(Some(5)), b"line 8\nline 9\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn follower_loses_nothing_across_a_rotation() {
        let dir = tmp("follow");
        let c = Console::open(
            &dir,
            Limits {
                ring: 64,
                file: 100,
            },
        )
        .unwrap();
        c.append(b"before\n");
        let (tail, mut f) = c.follow(Some(10)).unwrap();
        assert_eq!(tail, b"before\n");
        let mut want = Vec::new();
        for i in 0..15 {
            let line = format!("after {i:02}\n");
            c.append(line.as_bytes());
            want.extend_from_slice(line.as_bytes());
            if i == 5 {
                // Read part of it between rotations.
                let mut got = Vec::new();
                while let Ok(Next::Data(d)) = f.next(Duration::from_millis(1)) {
                    got.extend(d);
                }
                assert_eq!(got, want);
                want.clear();
            }
        }
        let mut got = Vec::new();
        while let Ok(Next::Data(d)) = f.next(Duration::from_millis(1)) {
            got.extend(d);
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        assert!(dir.join("console.log.1").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
