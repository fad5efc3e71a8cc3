//! Opening a [`LogStore`](super::LogStore): reading the region headers and
//! replaying the active region's log into the index, with a read-ahead
//! window over the sectors.

use super::*;

/// A read-ahead window of sectors, for replaying a log sequentially.
pub(super) struct Window {
    size: usize,
    start: u64,
    count: u64,
    buf: Vec<u8>,
}

impl Window {
    pub(super) fn new(size: usize) -> Window {
        Window {
            size,
            start: 0,
            count: 0,
            buf: vec![0; CHUNK.max(size)],
        }
    }

    /// Sector `n` (`n < end`), reading up to a chunk ahead but not past `end`.
    pub(super) async fn sector<B: Block>(
        &mut self,
        block: &B,
        n: u64,
        end: u64,
    ) -> Result<&[u8], BlockError> {
        if !(self.start..self.start + self.count).contains(&n) {
            let per = (self.buf.len() / self.size) as u64;
            let count = per.min(end.saturating_sub(n)).max(1);
            let buf = self
                .buf
                .get_mut(..count as usize * self.size)
                .unwrap_or_default();
            self.count = 0;
            block.read(n, buf).await?;
            self.start = n;
            self.count = count;
        }
        let at = (n - self.start) as usize * self.size;
        Ok(self.buf.get(at..at + self.size).unwrap_or_default())
    }
}

impl<B: Block> LogStore<B> {
    /// Reads the region headers, picks the active region, brings its
    /// header copies up to date and replays its log.
    pub(super) async fn load(&self) -> Result<State, LogError> {
        let device = self.device.as_str();
        let size = self.sector_size;
        let mut raw = [vec![0u8; 2 * size], vec![0u8; 2 * size]];
        self.read_at(device, 0, &mut raw[0]).await?;
        self.read_at(device, self.region, &mut raw[1]).await?;
        let copies = raw.each_ref().map(|r| {
            [
                header(r.get(..size).unwrap_or_default()),
                header(r.get(size..).unwrap_or_default()),
            ]
        });
        let mut active: Option<(u64, RegionHeader)> = None;
        let mut max_generation = 0;
        for (region, pair) in copies.iter().enumerate() {
            for h in pair.iter().flatten() {
                if h.version != VERSION {
                    return Err(LogError::Version {
                        device: device.into(),
                        version: h.version,
                    });
                }
                if h.sector_size as usize != size || h.region_sectors != self.region {
                    return Err(LogError::Geometry {
                        device: device.into(),
                        made_size: h.sector_size,
                        made_sectors: h.region_sectors.saturating_mul(2),
                        sector_size: self.block.info().sector_size,
                        sectors: self.block.info().sectors,
                    });
                }
                max_generation = max_generation.max(h.generation);
            }
            // The region's header is its newest valid copy.
            let Some(h) = pair
                .iter()
                .flatten()
                .max_by_key(|h| (h.generation, h.state))
            else {
                continue;
            };
            if h.state == COMMITTED && active.is_none_or(|(_, a)| h.generation > a.generation) {
                active = Some((region as u64, *h));
            }
        }
        let Some((region, h)) = active else {
            return Err(LogError::NotAStore {
                device: device.into(),
            });
        };
        // Bring a stale or damaged copy of the active header up to date, so
        // that one bad sector later still leaves a good copy.
        if let Some(pair) = copies.get(region as usize) {
            for (copy, found) in pair.iter().enumerate() {
                if *found != Some(h) {
                    let at = region * self.region + copy as u64;
                    self.write_header(at, h, 1)
                        .await
                        .map_err(|e| LogError::Block {
                            device: device.into(),
                            action: "write",
                            sector: at,
                            source: match e {
                                KvError::Block(b) => b,
                                _ => BlockError::Io(5),
                            },
                        })?;
                }
            }
        }
        self.replay(device, region, h, max_generation.saturating_add(1))
            .await
    }

    /// Rebuilds the index from the log of `region`.
    pub(super) async fn replay(
        &self,
        device: &str,
        region: u64,
        h: RegionHeader,
        next_generation: u64,
    ) -> Result<State, LogError> {
        let size = self.sector_size;
        let end = (region + 1) * self.region;
        let mut window = Window::new(size);
        let mut index = BTreeMap::new();
        let mut pos = region * self.region + HEADERS;
        let mut expect = h.first_seq;
        let io = |sector, source| LogError::Block {
            device: device.into(),
            action: "read",
            sector,
            source,
        };
        let malformed = |sector, why| LogError::Malformed {
            device: device.into(),
            sector,
            why,
        };
        while pos < end {
            let first = window
                .sector(&self.block, pos, end)
                .await
                .map_err(|e| io(pos, e))?;
            match frame(first) {
                Some(f) if f.generation == h.generation && f.seq == expect && f.index == 0 => {}
                _ => break,
            }
            let record = first.get(FRAME..).unwrap_or_default();
            let op = record.first().copied().unwrap_or(0);
            let key_len = usize::from(u16::from_le_bytes([
                record.get(2).copied().unwrap_or(0),
                record.get(3).copied().unwrap_or(0),
            ]));
            let value_len = le_u64(record, 8);
            if key_len > MAX_KEY_LEN {
                return Err(malformed(pos, "key too long"));
            }
            let Some(sectors) = self.record_sectors(key_len, value_len) else {
                return Err(malformed(pos, "value larger than a region"));
            };
            if pos + sectors > end {
                return Err(malformed(pos, "record runs past the end of its region"));
            }
            let key = record
                .get(RECORD_HEADER..RECORD_HEADER + key_len)
                .and_then(|k| core::str::from_utf8(k).ok())
                .ok_or_else(|| malformed(pos, "key is not UTF-8"))?;
            if normalize(key).ok().as_deref() != Some(key) {
                return Err(malformed(pos, "key is not in normal form"));
            }
            let key = key.to_string();
            if !matches!(op, OP_SET | OP_REMOVE | OP_LOST) {
                return Err(malformed(pos, "unknown operation"));
            }
            if op != OP_SET && sectors != 1 {
                return Err(malformed(pos, "removal with a value"));
            }
            let mut whole = true;
            for k in 1..sectors {
                let s = window
                    .sector(&self.block, pos + k, end)
                    .await
                    .map_err(|e| io(pos + k, e))?;
                let want = Frame {
                    index: k as u32,
                    generation: h.generation,
                    seq: expect,
                };
                if frame(s) != Some(want) {
                    whole = false;
                    break;
                }
            }
            if !whole {
                // Torn (the last record, being written at a crash) or
                // corrupt (later records exist).
                if self
                    .later_frame(&mut window, pos, end, h.generation, expect + 1)
                    .await
                    .map_err(|(s, e)| io(s, e))?
                    .is_none()
                {
                    break;
                }
                index.insert(key, Slot::Lost);
            } else {
                match op {
                    OP_SET => {
                        index.insert(
                            key,
                            Slot::Value(Location {
                                start: pos,
                                seq: expect,
                                len: value_len,
                                key_len,
                                digest: None,
                            }),
                        );
                    }
                    OP_REMOVE => index.retain(|k: &String, _| !under(k, &key)),
                    _ => {
                        index.insert(key, Slot::Lost);
                    }
                }
            }
            pos += sectors;
            expect += 1;
        }
        if let Some(_later) = self
            .later_frame(&mut window, pos, end, h.generation, expect + 1)
            .await
            .map_err(|(s, e)| io(s, e))?
        {
            return Err(LogError::Corrupt {
                device: device.into(),
                sector: pos,
            });
        }
        Ok(State {
            active: region,
            generation: h.generation,
            next_generation,
            tail: pos,
            seq: expect - 1,
            index,
            dirty: false,
        })
    }

    /// The first sector in `from..end` framed for `generation` with a
    /// sequence number of at least `min_seq`: evidence that the log goes on
    /// past an unreadable record.
    pub(super) async fn later_frame(
        &self,
        window: &mut Window,
        from: u64,
        end: u64,
        generation: u64,
        min_seq: u64,
    ) -> Result<Option<u64>, (u64, BlockError)> {
        for n in from..end {
            let s = window
                .sector(&self.block, n, end)
                .await
                .map_err(|e| (n, e))?;
            if frame(s).is_some_and(|f| f.generation == generation && f.seq >= min_seq) {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }
}
