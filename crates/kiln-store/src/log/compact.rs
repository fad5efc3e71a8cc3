//! Compaction: copying the live records of the active region into the
//! other one, applying one change on the way, and committing it with the
//! new region's header.

use super::*;

/// A change applied by [`LogStore::compact_with`] in the new region.
pub(super) enum Change<'a> {
    None,
    Set(&'a str, &'a [u8]),
    Remove(&'a str),
}

impl<B: Block> LogStore<B> {
    /// Rewrites the live records, with `change` applied, into the other
    /// region, then makes it the active one by committing its header.
    pub(super) async fn compact_with(
        &self,
        st: &mut State,
        change: Change<'_>,
    ) -> Result<(), KvError> {
        let dropped = |k: &str| match change {
            Change::None => false,
            Change::Set(key, _) => k == key,
            Change::Remove(key) => under(k, key),
        };
        let mut needed: u64 = 0;
        for (k, slot) in &st.index {
            if dropped(k) {
                continue;
            }
            needed += match slot {
                Slot::Value(l) => self.record_sectors(l.key_len, l.len).ok_or(KvError::Full)?,
                Slot::Lost => 1,
            };
        }
        if let Change::Set(key, value) = change {
            needed += self
                .record_sectors(key.len(), value.len() as u64)
                .ok_or(KvError::Full)?;
        }
        if needed > self.region - HEADERS {
            return Err(KvError::Full);
        }
        let target = 1 - st.active;
        let generation = st.next_generation;
        let mut h = RegionHeader {
            version: VERSION,
            generation,
            state: BUILDING,
            sector_size: self.sector_size as u32,
            region_sectors: self.region,
            first_seq: st.seq + 1,
        };
        // From here the generation may be on the device: never reuse it.
        st.next_generation = generation + 1;
        let base = target * self.region;
        self.write_header(base, h, HEADERS).await?;
        let mut pos = base + HEADERS;
        let mut seq = st.seq;
        let mut index = BTreeMap::new();
        for (k, slot) in &st.index {
            if dropped(k) {
                continue;
            }
            seq += 1;
            let copied = match slot {
                Slot::Value(l) => {
                    let sectors = self.record_sectors(l.key_len, l.len).ok_or(KvError::Full)?;
                    match self
                        .copy_record(st.generation, l, pos, generation, seq, sectors)
                        .await
                    {
                        Ok(()) => {
                            let mut l = l.clone();
                            l.start = pos;
                            l.seq = seq;
                            pos += sectors;
                            Some(Slot::Value(l))
                        }
                        Err(KvError::Corrupt) => None,
                        Err(e) => return Err(e),
                    }
                }
                Slot::Lost => None,
            };
            let slot = match copied {
                Some(slot) => slot,
                None => {
                    pos += self
                        .write_record(pos, generation, seq, OP_LOST, k, &[])
                        .await?;
                    Slot::Lost
                }
            };
            index.insert(k.clone(), slot);
        }
        if let Change::Set(key, value) = change {
            seq += 1;
            let start = pos;
            pos += self
                .write_record(pos, generation, seq, OP_SET, key, value)
                .await?;
            index.insert(key.to_string(), new_slot(start, seq, key, value));
        }
        self.block.flush().await?;
        // Commit: one copy, then the other, so that a torn write leaves
        // one valid copy (building or committed).
        h.state = COMMITTED;
        st.dirty = true;
        self.write_header(base, h, 1).await?;
        self.write_header(base + 1, h, 1).await?;
        st.active = target;
        st.generation = generation;
        st.tail = pos;
        st.seq = seq;
        st.index = index;
        st.dirty = false;
        self.compactions.set(self.compactions.get() + 1);
        Ok(())
    }

    /// Copies the record at `loc` to sector `at` under a new frame.
    pub(super) async fn copy_record(
        &self,
        from_generation: u64,
        loc: &Location,
        at: u64,
        generation: u64,
        seq: u64,
        sectors: u64,
    ) -> Result<(), KvError> {
        let size = self.sector_size;
        let per = (CHUNK / size).max(1) as u64;
        let mut buf = vec![0u8; per.min(sectors) as usize * size];
        let mut k = 0;
        while k < sectors {
            let n = per.min(sectors - k);
            let chunk = buf.get_mut(..n as usize * size).unwrap_or_default();
            self.block.read(loc.start + k, chunk).await?;
            for (i, sector) in chunk.chunks_mut(size).enumerate() {
                let index = (k + i as u64) as u32;
                let want = Frame {
                    index,
                    generation: from_generation,
                    seq: loc.seq,
                };
                if frame(sector) != Some(want) {
                    return Err(KvError::Corrupt);
                }
                put_frame(
                    sector,
                    Frame {
                        index,
                        generation,
                        seq,
                    },
                );
            }
            self.block.write(at + k, chunk).await?;
            k += n;
        }
        Ok(())
    }
}
