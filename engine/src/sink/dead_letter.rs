//! Set-aside batches: inserts ClickHouse rejected as bad data, kept on
//! disk (fsynced, in the log's record format) until an operator re-inserts
//! them with `roomgate dead-letter replay` after fixing the cause.
//!
//! Each batch is two files in the dead-letter directory, named by the
//! insert's token: `<token>.seg` (the rows, as log records with their
//! original LSNs) and `<token>.json` (table, error, row count).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::writer::TableRow;
use crate::table::Table;
use crate::wal::codec::{self, Entry, Scan};
use crate::wal::Row;

/// A set-aside batch read back.
#[derive(Debug)]
pub struct DeadBatch {
    /// Its token (file stem): re-inserted with the same token.
    pub token: String,
    /// The `.seg` file.
    pub path: PathBuf,
    /// Table.
    pub table: Table,
    /// Rows in order.
    pub rows: Vec<Row>,
    /// Bytes that did not hold valid records.
    pub corrupt_bytes: usize,
}

/// Write a set-aside batch durably. Returns the `.seg` path.
pub fn write<R: TableRow>(
    dir: &Path,
    token: &str,
    table: Table,
    error: &str,
    first_lsn: u64,
    rows: &[R],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut buf = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        codec::append(
            &mut buf,
            first_lsn + i as u64,
            &Entry::Row(r.clone().into_row()),
        );
    }
    let seg = dir.join(format!("{token}.seg"));
    let meta = dir.join(format!("{token}.json"));
    let info = serde_json::json!({
        "table": table.name(), "token": token, "rows": rows.len(), "error": error,
        "replay": "roomgate dead-letter replay",
    });
    durable_write(&meta, info.to_string().as_bytes())?;
    durable_write(&seg, &buf)?;
    File::open(dir)?.sync_all()?;
    Ok(seg)
}

fn durable_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Read every set-aside batch in `dir` (oldest name first).
pub fn list(dir: &Path) -> std::io::Result<Vec<DeadBatch>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path)?;
        let token = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut rows = Vec::new();
        let mut corrupt = 0;
        for item in codec::scan(&bytes, 0) {
            match item {
                Scan::Record { payload, .. } => {
                    if let Ok(Entry::Row(r)) = codec::decode(payload) {
                        rows.push(r);
                    }
                }
                Scan::Garbage { len, .. } => corrupt += len,
                Scan::Tail { at } => corrupt += bytes.len() - at,
            }
        }
        let Some(table) = rows.first().map(Row::table) else {
            continue;
        };
        out.push(DeadBatch {
            token,
            path,
            table,
            rows,
            corrupt_bytes: corrupt,
        });
    }
    Ok(out)
}

/// Remove a replayed batch's files.
pub fn remove(batch: &DeadBatch) -> std::io::Result<()> {
    std::fs::remove_file(&batch.path)?;
    let _ = std::fs::remove_file(batch.path.with_extension("json"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::LikeRow;

    #[test]
    fn a_set_aside_batch_reads_back_whole() {
        let dir = std::env::temp_dir().join(format!("rg-dl-{}", rand::random::<u64>()));
        let rows: Vec<LikeRow> = (0..3)
            .map(|i| LikeRow {
                room_id: i,
                ts: 100,
                taps: 5,
            })
            .collect();
        let p = write(
            &dir,
            "id-like_ticks-1-3",
            Table::Likes,
            "Code: 53",
            1,
            &rows,
        )
        .unwrap();
        assert!(p.exists() && p.with_extension("json").exists());
        let got = list(&dir).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].token, "id-like_ticks-1-3");
        assert_eq!(got[0].table, Table::Likes);
        assert_eq!(
            got[0].rows,
            rows.into_iter().map(Row::Like).collect::<Vec<_>>()
        );
        remove(&got[0]).unwrap();
        assert!(list(&dir).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
