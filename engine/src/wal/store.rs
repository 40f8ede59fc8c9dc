//! The log's files: segments named by their first LSN, appended and
//! fsynced by one thread ([`Log`]), read by any number of [`Reader`]s.
//!
//! Layout of `<storage.dir>/wal/`:
//! - `log.id`: a random id made when the log is created; part of every
//!   insert's deduplication token, so a new (or lost) data directory never
//!   reuses an old token.
//! - `<first_lsn:020>.seg`: segments. Only the last one is appended to;
//!   a segment is deleted when every row in it is committed to ClickHouse.
//!
//! With preallocation (`storage.preallocate`, on by default) the log writes
//! zeros up to [`ZERO_AHEAD`] bytes ahead of its write position, so the
//! fsync after a group finds the file's blocks allocated and its size
//! unchanged: `fdatasync` then writes the data and flushes, without
//! writing the inode as it must after an append (what PostgreSQL's
//! `wal_init_zero` does). A segment may therefore end in zeros: those are
//! not records and not a torn tail, and opening the log cuts them off.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::codec::{self, Entry, Scan};

/// A segment file.
#[derive(Debug, Clone)]
pub struct Segment {
    /// LSN of its first record (its name).
    pub first_lsn: u64,
    /// Path.
    pub path: PathBuf,
    /// Bytes.
    pub bytes: u64,
    /// LSN of its last record (0: none yet).
    pub last_lsn: u64,
}

/// The segment list shared between the log thread and readers.
pub type Segments = Arc<Mutex<Vec<Segment>>>;

/// What opening the log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenStats {
    /// Valid records.
    pub records: u64,
    /// Segments.
    pub segments: usize,
    /// Regions of corrupt bytes skipped (each may have held records).
    pub corrupt_regions: u64,
    /// Bytes in them.
    pub corrupt_bytes: u64,
    /// Bytes of a torn tail cut from the last segment.
    pub torn_bytes: u64,
    /// Records whose CRC matched but whose payload did not decode.
    pub undecodable: u64,
}

/// The appending side of the log (owned by the log thread).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    id: String,
    /// Holds the directory's lock (`LOCK`, an advisory file lock) for the
    /// life of the log: two engines on one log would corrupt it.
    _lock: File,
    segments: Segments,
    file: File,
    /// Where the next group is written in `file`.
    offset: u64,
    /// `file`'s length: zeros from `offset` to here (preallocation).
    zeroed: u64,
    /// Write zeros ahead of `offset` ([`Log::zero_ahead`]).
    preallocate: bool,
    buf: Vec<u8>,
    next_lsn: u64,
    durable_lsn: u64,
    segment_bytes: u64,
}

/// How far ahead of its write position the log keeps zeros (at most to the
/// segment's size). One small durable group on the build VM's ext4: 90 µs
/// into zeros against 126 µs appending (`cargo bench -p roomgate-benches
/// --bench wal -- wal_durable`, BENCHMARKS.md). The zeros are written and
/// synced by the log thread between groups, once per half of this.
pub const ZERO_AHEAD: u64 = 1 << 20;

/// Opened for writing at an offset (never `append`: the file may hold
/// zeros past the last record).
fn open_write(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .create(create)
        .truncate(false)
        .write(true)
        .open(path)
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// Open (or create) the log in `dir`, calling `visit` for every valid
    /// entry in LSN order. A torn tail of the last segment is cut off;
    /// corrupt regions elsewhere are skipped and counted; zeros at the end
    /// of a segment (preallocation) are cut off and not counted.
    /// `preallocate`: see the module docs.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        preallocate: bool,
        mut visit: impl FnMut(u64, Entry),
    ) -> io::Result<(Log, OpenStats)> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        if let Err(e) = lock.try_lock() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the log in {} is in use by another roomgate process ({e}); one data directory per engine",
                    dir.display()
                ),
            ));
        }
        let id_path = dir.join("log.id");
        let id = match std::fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => {
                let id = format!("{:016x}", rand::random::<u64>());
                let tmp = dir.join("log.id.tmp");
                let mut f = File::create(&tmp)?;
                f.write_all(id.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &id_path)?;
                sync_dir(dir)?;
                id
            }
        };
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut stats = OpenStats::default();
        let mut segments = Vec::new();
        let mut last = 0u64;
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let bytes = std::fs::read(&path)?;
            let mut keep = bytes.len() as u64;
            let mut seg_last = 0;
            for item in codec::scan(&bytes, last) {
                match item {
                    Scan::Record { lsn, payload, .. } => {
                        stats.records += 1;
                        last = lsn;
                        seg_last = lsn;
                        match codec::decode(payload) {
                            Ok(e) => visit(lsn, e),
                            Err(e) => {
                                stats.undecodable += 1;
                                tracing::error!(lsn, error = %e, segment = %path.display(), "log record does not decode; skipped");
                            }
                        }
                    }
                    Scan::Garbage { at, len } => {
                        stats.corrupt_regions += 1;
                        stats.corrupt_bytes += len as u64;
                        tracing::error!(segment = %path.display(), offset = at, bytes = len, after_lsn = last, "corrupt region in the log; skipped");
                    }
                    // The last segment's preallocated, never written rest:
                    // not a record, not torn. (A sealed segment never ends
                    // in zeros, which stop at its size: zeros there are
                    // lost writes, reported below as a corrupt end.)
                    Scan::Tail { at } if i + 1 == count && codec::all_zero(&bytes[at..]) => {
                        keep = at as u64;
                        tracing::debug!(segment = %path.display(), offset = at, bytes = bytes.len() - at, "preallocated end of a log segment cut off");
                    }
                    Scan::Tail { at } if i + 1 == count => {
                        stats.torn_bytes += (bytes.len() - at) as u64;
                        keep = at as u64;
                        tracing::warn!(segment = %path.display(), offset = at, bytes = bytes.len() - at, "torn tail of the log cut off");
                    }
                    Scan::Tail { at } => {
                        stats.corrupt_regions += 1;
                        stats.corrupt_bytes += (bytes.len() - at) as u64;
                        tracing::error!(segment = %path.display(), offset = at, bytes = bytes.len() - at, "corrupt end of a sealed segment; skipped");
                    }
                }
            }
            if keep < bytes.len() as u64 {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(keep)?;
                f.sync_all()?;
            }
            segments.push(Segment {
                first_lsn: first,
                path,
                bytes: keep,
                last_lsn: seg_last,
            });
        }
        stats.segments = segments.len();
        // The next LSN follows the last record, and never goes below the
        // name of the last segment (all records may have been deleted).
        let next_lsn = (last + 1).max(segments.last().map_or(1, |s| s.first_lsn));
        // Always append to a fresh segment: the old last one may end in
        // bytes a reader already judged.
        let path = segment_path(dir, next_lsn);
        let (file, offset) = match segments.last() {
            Some(s) if s.first_lsn == next_lsn => (open_write(&s.path, false)?, s.bytes),
            _ => {
                let f = open_write(&path, true)?;
                sync_dir(dir)?;
                segments.push(Segment {
                    first_lsn: next_lsn,
                    path,
                    bytes: 0,
                    last_lsn: 0,
                });
                (f, 0)
            }
        };
        Ok((
            Log {
                dir: dir.to_owned(),
                id,
                _lock: lock,
                segments: Arc::new(Mutex::new(segments)),
                file,
                offset,
                zeroed: offset,
                preallocate,
                buf: Vec::with_capacity(1 << 20),
                next_lsn,
                durable_lsn: last,
                segment_bytes: segment_bytes.max(4096),
            },
            stats,
        ))
    }

    /// The log's id (see the module docs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The segment list, for readers.
    pub fn segments(&self) -> Segments {
        self.segments.clone()
    }

    /// Directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Buffer `entry`; it is durable after the next [`Log::sync`]. Returns
    /// its LSN.
    pub fn append(&mut self, entry: &Entry) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        codec::append(&mut self.buf, lsn, entry);
        lsn
    }

    /// Bytes buffered and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Write what is buffered and fsync it (`fdatasync`); then roll to a
    /// new segment if this one is full. Returns the durable LSN.
    pub fn sync(&mut self) -> io::Result<u64> {
        if self.buf.is_empty() {
            return Ok(self.durable_lsn);
        }
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        let written = self.buf.len() as u64;
        self.offset += written;
        self.zeroed = self.zeroed.max(self.offset);
        self.buf.clear();
        self.durable_lsn = self.next_lsn - 1;
        let full = {
            let mut segs = lock(&self.segments);
            let cur = segs.last_mut().expect("there is always a current segment");
            cur.bytes += written;
            cur.last_lsn = self.durable_lsn;
            cur.bytes >= self.segment_bytes
        };
        if full {
            let path = segment_path(&self.dir, self.next_lsn);
            self.file = open_write(&path, true)?;
            self.offset = 0;
            self.zeroed = 0;
            sync_dir(&self.dir)?;
            lock(&self.segments).push(Segment {
                first_lsn: self.next_lsn,
                path,
                bytes: 0,
                last_lsn: 0,
            });
        }
        Ok(self.durable_lsn)
    }

    /// With preallocation, write zeros ahead of the write position when
    /// fewer than half of [`ZERO_AHEAD`] are left (never past the segment's
    /// size), and sync them: their blocks and the new size are on disk
    /// before the next group, whose fsync then writes only its records.
    /// Call it between groups, after their acks (under load it runs in the
    /// group-commit interval the log thread waits out anyway). Returns the
    /// bytes of zeros written. After an error preallocation stays off:
    /// groups are then appended, as without it.
    pub fn zero_ahead(&mut self) -> io::Result<u64> {
        let end = (self.offset + ZERO_AHEAD).min(self.segment_bytes);
        if !self.preallocate || self.zeroed >= end || self.zeroed >= self.offset + ZERO_AHEAD / 2 {
            return Ok(0);
        }
        let from = self.zeroed.max(self.offset);
        let written = self
            .write_zeros(from, end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.preallocate = false;
            return Err(e);
        }
        self.zeroed = end;
        Ok(end - from)
    }

    fn write_zeros(&self, from: u64, end: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = from;
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }

    /// The last durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    /// Delete every sealed segment whose records all have LSNs below
    /// `lsn`. Returns how many were deleted.
    pub fn delete_below(&mut self, lsn: u64) -> io::Result<usize> {
        let doomed: Vec<Segment> = {
            let mut segs = lock(&self.segments);
            let n = segs
                .iter()
                .take(segs.len().saturating_sub(1))
                .take_while(|s| s.last_lsn < lsn)
                .count();
            segs.drain(..n).collect()
        };
        for s in &doomed {
            std::fs::remove_file(&s.path)?;
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(doomed.len())
    }

    /// Bytes in all segments.
    pub fn bytes(&self) -> u64 {
        lock(&self.segments).iter().map(|s| s.bytes).sum::<u64>() + self.buf.len() as u64
    }
}

/// Reads records in LSN order from a point, up to a limit the caller
/// knows is durable.
#[derive(Debug)]
pub struct Reader {
    segments: Segments,
    /// First LSN of the segment being read (0: none opened yet).
    seg_first: u64,
    file: Option<File>,
    offset: u64,
    /// The next LSN wanted.
    next: u64,
    /// LSN of the last record returned or skipped.
    last: u64,
    buf: Vec<u8>,
}

impl Reader {
    /// A reader returning records with LSN ≥ `from`.
    pub fn new(segments: Segments, from: u64) -> Self {
        Reader {
            segments,
            seg_first: 0,
            file: None,
            offset: 0,
            next: from.max(1),
            last: 0,
            buf: Vec::new(),
        }
    }

    /// The next LSN this reader will look at.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Call `f(lsn, payload)` for records with LSN in `position()..=durable`,
    /// reading about `max_bytes` at most. Returns how many records it saw.
    pub fn read(
        &mut self,
        durable: u64,
        max_bytes: usize,
        mut f: impl FnMut(u64, &[u8]),
    ) -> io::Result<usize> {
        let mut seen = 0;
        let mut total = 0usize;
        let mut chunk = max_bytes.max(64 * 1024);
        while self.next <= durable && total < max_bytes {
            if self.file.is_none() && !self.open_segment()? {
                break;
            }
            let file = self.file.as_ref().expect("opened above");
            // The buffer keeps its length between reads: zeroing a 4 MiB
            // chunk before every look for a few new records was 13 % of
            // the engine's CPU under load (make perf's profile).
            if self.buf.len() < chunk {
                self.buf.resize(chunk, 0);
            }
            // Only what the log wrote and synced: past it the file may
            // hold preallocated zeros, which are no use to look through.
            let left = self.synced_bytes().saturating_sub(self.offset);
            let want = chunk.min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file.read_at(&mut self.buf[..want], self.offset)?;
            let bytes = &self.buf[..n];
            let mut consumed = 0usize;
            let mut beyond = false;
            for item in codec::scan(bytes, self.last) {
                match item {
                    Scan::Record { at, lsn, payload } => {
                        if lsn > durable {
                            beyond = true;
                            break;
                        }
                        consumed = at + codec::HEADER + payload.len();
                        self.last = lsn;
                        if lsn >= self.next {
                            f(lsn, payload);
                            seen += 1;
                            self.next = lsn + 1;
                        }
                    }
                    Scan::Garbage { at, len } => consumed = at + len,
                    Scan::Tail { .. } => break,
                }
            }
            self.offset += consumed as u64;
            total += consumed;
            if beyond {
                break;
            }
            if consumed == 0 {
                if n == chunk {
                    // A record (or a corrupt region and the record after
                    // it) larger than the chunk: read more at once.
                    chunk = (chunk * 2).max(codec::claimed_len(&self.buf[..n]));
                    continue;
                }
                // Nothing whole here: the end of this segment. A later
                // segment means this one is complete; else wait for bytes.
                if !self.next_segment() {
                    break;
                }
            }
        }
        Ok(seen)
    }

    /// The synced length of the segment being read (its file's length if
    /// it is no longer listed).
    fn synced_bytes(&self) -> u64 {
        lock(&self.segments)
            .iter()
            .find(|s| s.first_lsn == self.seg_first)
            .map_or(u64::MAX, |s| s.bytes)
    }

    fn next_segment(&mut self) -> bool {
        let next = lock(&self.segments)
            .iter()
            .find(|s| s.first_lsn > self.seg_first)
            .map(|s| (s.first_lsn, s.path.clone()));
        match next.and_then(|(first, p)| File::open(p).ok().map(|f| (first, f))) {
            Some((first, f)) => {
                self.seg_first = first;
                self.file = Some(f);
                self.offset = 0;
                true
            }
            None => false,
        }
    }

    fn open_segment(&mut self) -> io::Result<bool> {
        let pick = {
            let segs = lock(&self.segments);
            segs.iter()
                .rev()
                .find(|s| s.first_lsn <= self.next)
                .or_else(|| segs.first())
                .map(|s| (s.first_lsn, s.path.clone()))
        };
        let Some((first, path)) = pick else {
            return Ok(false);
        };
        self.file = Some(File::open(path)?);
        self.seg_first = first;
        self.offset = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::LikeRow;
    use crate::wal::codec::Row;
    use proptest::prelude::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rg-wal-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn like(i: u64) -> Entry {
        Entry::Row(Row::Like(LikeRow {
            room_id: i,
            ts: 1,
            taps: i * 3,
        }))
    }

    fn open(dir: &Path, seg: u64) -> (Log, OpenStats, Vec<(u64, Entry)>) {
        let mut seen = Vec::new();
        let (log, stats) = Log::open(dir, seg, true, |l, e| seen.push((l, e))).unwrap();
        (log, stats, seen)
    }

    fn room_ids(seen: &[(u64, Entry)]) -> Vec<u64> {
        seen.iter()
            .map(|(_, e)| match e {
                Entry::Row(Row::Like(l)) => l.room_id,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn seg_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_log_directory_serves_one_engine() {
        let dir = tmp();
        let (log, _, _) = open(&dir, 1 << 20);
        let err = Log::open(&dir, 1 << 20, true, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(log);
        Log::open(&dir, 1 << 20, true, |_, _| {}).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The synced length of the log's last segment and its file's length.
    fn last_segment_lengths(log: &Log) -> (u64, u64) {
        let seg = lock(&log.segments).last().cloned().unwrap();
        (seg.bytes, std::fs::metadata(&seg.path).unwrap().len())
    }

    #[test]
    fn zeros_are_written_ahead_and_a_crash_leaves_them_as_no_torn_tail() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 4 << 20);
        for i in 1..=5 {
            log.append(&like(i));
        }
        log.sync().unwrap();
        assert_eq!(
            log.zero_ahead().unwrap(),
            ZERO_AHEAD,
            "the first group is followed by zeros"
        );
        assert_eq!(log.zero_ahead().unwrap(), 0, "enough are left ahead");
        let (synced, len) = last_segment_lengths(&log);
        assert_eq!(len, synced + ZERO_AHEAD);
        // Records written into the zeros; a reader stops at what is synced.
        for i in 6..=9 {
            log.append(&like(i));
        }
        log.sync().unwrap();
        let (synced2, len2) = last_segment_lengths(&log);
        assert!(synced2 > synced);
        assert_eq!(
            len2, len,
            "a group written into zeros keeps the file's length"
        );
        let mut r = Reader::new(log.segments(), 1);
        let mut got = Vec::new();
        while r
            .read(log.durable_lsn(), 1 << 20, |l, _| got.push(l))
            .unwrap()
            > 0
        {}
        assert_eq!(got, (1..=9).collect::<Vec<_>>());
        assert_eq!(r.read(u64::MAX, 1 << 20, |l, _| got.push(l)).unwrap(), 0);
        // Killed here: the segment ends in zeros.
        drop(log);
        let (mut log, stats, seen) = open(&dir, 4 << 20);
        assert_eq!(room_ids(&seen), (1..=9).collect::<Vec<_>>());
        assert_eq!((stats.torn_bytes, stats.corrupt_regions), (0, 0));
        let first = seg_files(&dir)[0].clone();
        assert_eq!(
            std::fs::metadata(&first).unwrap().len(),
            synced2,
            "the zeros were cut off"
        );
        assert_eq!(log.append(&like(10)), 10);
        log.sync().unwrap();
        drop(log);
        let (_, stats, seen) = open(&dir, 4 << 20);
        assert_eq!(room_ids(&seen), (1..=10).collect::<Vec<_>>());
        assert_eq!(stats.torn_bytes, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_torn_inside_the_zeros_is_a_torn_tail() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 4 << 20);
        for i in 1..=3 {
            log.append(&like(i));
        }
        log.sync().unwrap();
        log.zero_ahead().unwrap();
        let (synced, len) = last_segment_lengths(&log);
        drop(log);
        // A fourth record, half written into the zeros when the machine died.
        let mut half = Vec::new();
        codec::append(&mut half, 4, &like(4));
        let last = seg_files(&dir).pop().unwrap();
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.write_all_at(&half[..half.len() / 2], synced).unwrap();
        drop(f);
        let (_, stats, seen) = open(&dir, 4 << 20);
        assert_eq!(room_ids(&seen), vec![1, 2, 3]);
        assert_eq!(
            stats.torn_bytes,
            len - synced,
            "the half record and the zeros after it"
        );
        assert_eq!(stats.corrupt_regions, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn zeros_stop_at_the_segment_size_and_a_rolled_segment_gets_its_own() {
        let dir = tmp();
        let seg = ZERO_AHEAD + ZERO_AHEAD / 4;
        let (mut log, _, _) = open(&dir, seg);
        let mut i = 0;
        while seg_files(&dir).len() < 2 {
            for _ in 0..1_000 {
                i += 1;
                log.append(&like(i));
            }
            log.sync().unwrap();
            log.zero_ahead().unwrap();
            let (_, len) = last_segment_lengths(&log);
            assert!(
                len <= seg.max(log.offset),
                "zeros past the segment's size: {len}"
            );
        }
        // The sealed segment ends with its last record, not in zeros.
        let sealed = lock(&log.segments)[0].clone();
        assert_eq!(std::fs::metadata(&sealed.path).unwrap().len(), sealed.bytes);
        // The group that rolled was followed by zeros in the new segment.
        let (synced, len) = last_segment_lengths(&log);
        assert_eq!((synced, len), (0, ZERO_AHEAD));
        log.append(&like(i + 1));
        log.sync().unwrap();
        assert_eq!(
            last_segment_lengths(&log).1,
            ZERO_AHEAD,
            "written into the zeros"
        );
        drop(log);
        let (_, stats, seen) = open(&dir, seg);
        assert_eq!(room_ids(&seen), (1..=i + 1).collect::<Vec<_>>());
        assert_eq!((stats.torn_bytes, stats.corrupt_regions), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn zeros_at_the_end_of_a_sealed_segment_are_reported_as_corrupt() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 1 << 20);
        for i in 1..=3 {
            log.append(&like(i));
        }
        log.sync().unwrap();
        drop(log);
        // Reopened: appending goes to a new segment, the first is sealed.
        drop(open(&dir, 1 << 20));
        assert_eq!(seg_files(&dir).len(), 2);
        // The sealed segment ends in zeros: writes the disk lost, not
        // preallocation (which stops at a segment's size).
        let first = seg_files(&dir)[0].clone();
        let f = OpenOptions::new().write(true).open(&first).unwrap();
        f.set_len(f.metadata().unwrap().len() + 4096).unwrap();
        drop(f);
        let (mut log, stats, seen) = open(&dir, 1 << 20);
        assert_eq!(room_ids(&seen), vec![1, 2, 3]);
        assert_eq!((stats.corrupt_regions, stats.corrupt_bytes), (1, 4096));
        assert_eq!(stats.torn_bytes, 0);
        log.append(&like(4));
        log.sync().unwrap();
        drop(log);
        let (_, _, seen) = open(&dir, 1 << 20);
        assert_eq!(room_ids(&seen), vec![1, 2, 3, 4]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_goes_on() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 1 << 20);
        for i in 1..=5 {
            log.append(&like(i));
        }
        log.sync().unwrap();
        let id = log.id().to_owned();
        drop(log);
        // A sixth record, half written when the machine died.
        let mut half = Vec::new();
        codec::append(&mut half, 6, &like(6));
        let last = seg_files(&dir).pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let (mut log, stats, seen) = open(&dir, 1 << 20);
        assert_eq!(room_ids(&seen), vec![1, 2, 3, 4, 5]);
        assert_eq!(stats.torn_bytes, (half.len() / 2) as u64);
        assert_eq!(stats.corrupt_regions, 0);
        assert_eq!(log.id(), id, "the log keeps its id");
        assert_eq!(log.append(&like(7)), 6, "LSNs continue after the cut");
        log.sync().unwrap();
        drop(log);
        let (_, stats, seen) = open(&dir, 1 << 20);
        assert_eq!(room_ids(&seen), vec![1, 2, 3, 4, 5, 7]);
        assert_eq!(stats.torn_bytes, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_crc_in_the_middle_loses_that_record_only() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 1 << 20);
        let mut offsets = Vec::new();
        for i in 1..=9 {
            offsets.push(log.buffered());
            log.append(&like(i));
        }
        log.sync().unwrap();
        drop(log);
        let seg = seg_files(&dir).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[offsets[4] + codec::HEADER + 3] ^= 0xff; // record 5's payload
        std::fs::write(&seg, &bytes).unwrap();
        let (_, stats, seen) = open(&dir, 1 << 20);
        assert_eq!(room_ids(&seen), vec![1, 2, 3, 4, 6, 7, 8, 9]);
        assert_eq!(stats.corrupt_regions, 1);
        // A corrupt length field is skipped the same way.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[offsets[6]..offsets[6] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&seg, &bytes).unwrap();
        let (_, stats, seen) = open(&dir, 1 << 20);
        assert_eq!(room_ids(&seen), vec![1, 2, 3, 4, 6, 8, 9]);
        assert_eq!(stats.corrupt_regions, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replaying_twice_is_replaying_once() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 256);
        for i in 1..=40 {
            log.append(&like(i));
            if i % 3 == 0 {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
        drop(log);
        let (log, s1, first) = open(&dir, 256);
        drop(log);
        let (_, s2, second) = open(&dir, 256);
        assert_eq!(first, second);
        assert_eq!(room_ids(&first), (1..=40).collect::<Vec<_>>());
        assert_eq!((s1.records, s2.records), (40, 40));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn segments_roll_over_and_committed_ones_are_deleted() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 4096);
        for i in 1..=400 {
            log.append(&like(i));
            if i % 10 == 0 {
                log.sync().unwrap();
            }
        }
        let segs = seg_files(&dir).len();
        assert!(segs >= 4, "{segs} segments");
        // A reader from the start sees every record across segments.
        let mut r = Reader::new(log.segments(), 1);
        let mut got = Vec::new();
        while r.read(log.durable_lsn(), 1000, |l, _| got.push(l)).unwrap() > 0 {}
        assert_eq!(got, (1..=400).collect::<Vec<_>>());
        // Everything below 200 committed: whole segments below it go.
        let deleted = log.delete_below(200).unwrap();
        assert!(deleted >= 1);
        let left = lock(&log.segments).clone();
        assert!(left[0].first_lsn <= 200, "the segment holding 200 stays");
        assert_eq!(seg_files(&dir).len(), segs - deleted);
        // The current segment is never deleted.
        log.delete_below(u64::MAX).unwrap();
        assert_eq!(seg_files(&dir).len(), 1);
        drop(log);
        let (_, _, seen) = open(&dir, 4096);
        assert!(seen.iter().all(|(l, _)| *l > 200));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reader_stops_at_the_durable_lsn_and_resumes() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 1 << 20);
        for i in 1..=10 {
            log.append(&like(i));
        }
        log.sync().unwrap();
        let mut r = Reader::new(log.segments(), 4);
        let mut got = Vec::new();
        r.read(6, 1 << 20, |l, _| got.push(l)).unwrap();
        assert_eq!(got, vec![4, 5, 6]);
        r.read(10, 1 << 20, |l, _| got.push(l)).unwrap();
        assert_eq!(got, vec![4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(r.position(), 11);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lsns_never_restart_after_every_record_was_deleted() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 4096);
        // Write until a sync has just rolled to a fresh, empty segment.
        for i in 1.. {
            log.append(&like(i));
            log.sync().unwrap();
            if i > 100 && lock(&log.segments).last().unwrap().bytes == 0 {
                break;
            }
        }
        let last = log.durable_lsn();
        log.delete_below(u64::MAX).unwrap();
        drop(log);
        // Only the empty current segment is left.
        let (mut log, _, seen) = open(&dir, 4096);
        assert!(seen.is_empty());
        assert!(
            log.append(&like(1)) > last,
            "a reused LSN would reuse tokens"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reader_finds_records_after_a_corrupt_region_larger_than_its_chunk() {
        let dir = tmp();
        let (mut log, _, _) = open(&dir, 64 << 20);
        for i in 1..=5_000 {
            log.append(&like(i));
        }
        log.sync().unwrap();
        let durable = log.durable_lsn();
        let segs = log.segments();
        drop(log);
        let seg = seg_files(&dir).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[1_000..101_000].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let (_, _, seen) = open(&dir, 64 << 20);
        let mut r = Reader::new(segs, 1);
        let mut got = Vec::new();
        while r.read(durable, 4096, |l, _| got.push(l)).unwrap() > 0 {}
        let want: Vec<u64> = seen.iter().map(|(l, _)| *l).collect();
        assert!(want.len() > 2_000 && *want.last().unwrap() == 5_000);
        assert_eq!(got, want, "the reader skips exactly what recovery skips");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        Sync,
        /// Crash: drop unsynced bytes; maybe leave a torn half-record.
        Crash {
            torn: bool,
        },
        /// Everything up to this fraction of durable LSNs is committed.
        Commit(u8),
        /// Zeros written ahead of the write position (the log thread does
        /// this after a group's acks).
        ZeroAhead,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..20).prop_map(Op::Append),
            3 => Just(Op::Sync),
            1 => any::<bool>().prop_map(|torn| Op::Crash { torn }),
            1 => (0u8..=100).prop_map(Op::Commit),
            1 => Just(Op::ZeroAhead),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the sequence of appends, syncs, commits and crashes
        /// (torn writes included), a reopened log yields every synced
        /// (acknowledged) record that was not committed-and-deleted, exactly
        /// once, in LSN order; nothing unsynced is ever acknowledged.
        #[test]
        fn acknowledged_records_survive_crashes_exactly_once(
            ops in proptest::collection::vec(op(), 1..60),
            preallocate in any::<bool>(),
        ) {
            let dir = tmp();
            let reopen = |dir: &Path| {
                let mut seen = Vec::new();
                let (log, stats) = Log::open(dir, 2048, preallocate, |l, e| seen.push((l, e))).unwrap();
                (log, stats, seen)
            };
            let (mut log, _, _) = reopen(&dir);
            let mut acked: Vec<u64> = Vec::new();
            let mut buffered: Vec<u64> = Vec::new();
            let mut committed_below = 0u64;
            for op in ops {
                match op {
                    Op::Append(n) => {
                        for _ in 0..n {
                            let lsn = log.append(&like(0));
                            buffered.push(lsn);
                        }
                    }
                    Op::Sync => {
                        log.sync().unwrap();
                        acked.append(&mut buffered);
                    }
                    Op::Crash { torn } => {
                        let (synced, _) = last_segment_lengths(&log);
                        drop(log);
                        if torn && !buffered.is_empty() {
                            // Written where the next group goes: at the end
                            // of the synced records (into zeros, if any). A
                            // record whose last bytes are not zeros: one
                            // whose missing bytes the zeros already hold is
                            // whole on disk, not torn.
                            let mut half = Vec::new();
                            codec::append(&mut half, buffered[0], &like(0x0101_0101_0101));
                            assert_ne!(half[half.len() - 3..], [0, 0, 0]);
                            let last = seg_files(&dir).pop().unwrap();
                            let f = OpenOptions::new().write(true).open(&last).unwrap();
                            f.write_all_at(&half[..half.len() - 3], synced).unwrap();
                        }
                        buffered.clear();
                        let (l, stats, seen) = reopen(&dir);
                        log = l;
                        let lsns: Vec<u64> = seen.iter().map(|(l, _)| *l).collect();
                        let expect: Vec<u64> = acked.iter().copied().filter(|l| *l >= committed_below).collect();
                        // Deletion is by whole segment: records below the
                        // commit point may still be there, never others.
                        let kept: Vec<u64> = lsns.iter().copied().filter(|l| *l >= committed_below).collect();
                        prop_assert_eq!(&kept, &expect);
                        prop_assert!(lsns.windows(2).all(|w| w[0] < w[1]));
                        prop_assert!(lsns.iter().all(|l| acked.contains(l)), "an unsynced record came back");
                        prop_assert_eq!(stats.corrupt_regions, 0);
                    }
                    Op::ZeroAhead => {
                        log.zero_ahead().unwrap();
                    }
                    Op::Commit(pct) => {
                        if let Some(&max) = acked.last() {
                            let below = max * u64::from(pct) / 100;
                            committed_below = committed_below.max(below);
                            log.delete_below(committed_below).unwrap();
                        }
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
