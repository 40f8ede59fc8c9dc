//! Log records, sans-IO: framing with a CRC, and the binary encoding of
//! every entry the log holds.
//!
//! A record on disk is
//!
//! ```text
//! len: u32 LE | crc32: u32 LE | lsn: u64 LE | payload: len bytes
//! ```
//!
//! where the CRC (IEEE, as `crc32fast` computes it) covers the LSN and the
//! payload. The payload is one [`Entry`]: a tag byte, then its fields
//! (integers little-endian, strings as `u32` length + UTF-8).

use crate::sink::{
    ChatRow, LeadRow, LikeRow, LikeViewerRow, ModerationRow, SessionRow, WithdrawalRow,
};
use crate::table::Table;
use crate::wire::{CloseCode, Reason, Verdict};

/// Bytes before a record's payload.
pub const HEADER: usize = 16;
/// Largest payload accepted when reading; anything claiming more is corrupt.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// A decided row, as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// `chat_messages`.
    Chat(ChatRow),
    /// `like_ticks`.
    Like(LikeRow),
    /// `leads` (boxed: a lead row is several times the size of the others,
    /// and leads are rare, so a `Vec<Row>` of chat and likes stays small).
    Lead(Box<LeadRow>),
    /// `sessions`.
    Session(SessionRow),
    /// `moderation_events`.
    Moderation(ModerationRow),
    /// `lead_withdrawals`.
    Withdrawal(WithdrawalRow),
    /// `like_viewers`.
    LikeViewer(LikeViewerRow),
}

impl Row {
    /// The table this row goes to.
    pub fn table(&self) -> Table {
        match self {
            Row::Chat(_) => Table::Chat,
            Row::Like(_) => Table::Likes,
            Row::Lead(_) => Table::Leads,
            Row::Session(_) => Table::Sessions,
            Row::Moderation(_) => Table::Moderation,
            Row::Withdrawal(_) => Table::Withdrawals,
            Row::LikeViewer(_) => Table::LikeViewers,
        }
    }
}

/// How an insert ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// ClickHouse committed it.
    Committed = 1,
    /// ClickHouse rejected it as bad data; it was written to the dead-letter
    /// directory (fsynced) first.
    SetAside = 2,
}

/// One log entry.
// Entries live for one append; boxing the row would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A decided row.
    Row(Row),
    /// An insert about to be sent: every `table` row with an LSN in
    /// `first..=last` (`rows` of them). Durable before the insert is sent,
    /// so a restart re-sends exactly this insert with the same token.
    Batch {
        /// Table.
        table: Table,
        /// LSN of the batch's first row.
        first: u64,
        /// LSN of its last row.
        last: u64,
        /// Rows in it.
        rows: u32,
    },
    /// The insert `first..=last` of `table` ended.
    Done {
        /// Table.
        table: Table,
        /// LSN of the batch's first row.
        first: u64,
        /// LSN of its last row.
        last: u64,
        /// Committed or set aside.
        outcome: Outcome,
    },
}

const TAG_ROW: u8 = 0x10; // + table index
const TAG_BATCH: u8 = 0x01;
const TAG_DONE: u8 = 0x02;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload ended early or has bytes left over.
    #[error("record payload has the wrong length")]
    Length,
    /// An unknown tag, table, enum value or string.
    #[error("record payload has an unknown value")]
    Value,
}

/// The result of looking for a record at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole record whose CRC matches.
    Record {
        /// Its LSN.
        lsn: u64,
        /// Its payload.
        payload: &'a [u8],
        /// Bytes it occupies (header + payload).
        len: usize,
    },
    /// The buffer ends inside the record (a torn tail, or read more).
    Incomplete,
    /// Not a valid record here (bad length or CRC).
    Corrupt,
}

/// Append `entry` as a framed record with `lsn` to `out`.
pub fn append(out: &mut Vec<u8>, lsn: u64, entry: &Entry) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    encode(out, entry);
    let payload_len = out.len() - start - HEADER;
    out[start + 8..start + 16].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Parse the record at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < HEADER {
        return Parsed::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Parsed::Corrupt;
    }
    if buf.len() < HEADER + len {
        return Parsed::Incomplete;
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[8..HEADER + len]) != crc {
        return Parsed::Corrupt;
    }
    Parsed::Record {
        lsn: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
        payload: &buf[HEADER..HEADER + len],
        len: HEADER + len,
    }
}

/// The size a record at the start of `buf` claims (header included), or 0.
pub fn claimed_len(buf: &[u8]) -> usize {
    match buf.get(0..4) {
        Some(b) => {
            let len = u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
            if len > MAX_PAYLOAD {
                0
            } else {
                HEADER + len
            }
        }
        None => 0,
    }
}

/// The table of a row payload without decoding it (`None` for markers).
pub fn row_table(payload: &[u8]) -> Option<Table> {
    match payload.first() {
        Some(&t) if t >= TAG_ROW => Table::from_index(t - TAG_ROW),
        _ => None,
    }
}

fn encode(out: &mut Vec<u8>, entry: &Entry) {
    let mut e = Enc(out);
    match entry {
        Entry::Row(row) => {
            e.u8(TAG_ROW + row.table().index() as u8);
            match row {
                Row::Chat(r) => {
                    e.u64(r.room_id);
                    e.i64(r.ts);
                    e.u64(r.viewer_id);
                    e.u64(r.session_id);
                    e.u64(r.client_msg_id);
                    e.str(&r.text);
                    e.str(r.verdict);
                    e.strs(&r.dry_run_reasons);
                }
                Row::Like(r) => {
                    e.u64(r.room_id);
                    e.u32(r.ts);
                    e.u64(r.taps);
                }
                Row::Lead(r) => {
                    e.u64(r.room_id);
                    e.i64(r.ts);
                    e.u64(r.viewer_id);
                    e.u64(r.session_id);
                    e.u64(r.client_lead_id);
                    e.str(r.verdict);
                    e.str(r.reason);
                    e.u8(r.score);
                    e.strs(&r.reasons);
                    e.strs(&r.dry_run_reasons);
                    for s in [
                        &r.phone_hmac,
                        &r.phone_masked,
                        &r.phone_enc,
                        &r.wechat_enc,
                        &r.name_enc,
                        &r.fields_enc,
                        &r.ip_hmac,
                    ] {
                        e.str(s);
                    }
                    e.u8(u8::from(r.consent));
                    e.u32(r.fill_ms);
                    // Last, so records written before they existed decode.
                    e.str(&r.pii_key_id);
                    e.str(&r.consent_version);
                }
                Row::Session(r) => {
                    e.u64(r.room_id);
                    e.i64(r.ts);
                    e.u64(r.viewer_id);
                    e.u64(r.session_id);
                    e.str(r.event);
                    e.u64(r.watch_ms);
                    e.str(&r.client);
                    e.str(r.close);
                }
                Row::Moderation(r) => {
                    e.u64(r.room_id);
                    e.i64(r.ts);
                    e.u64(r.viewer_id);
                    e.u64(r.session_id);
                    e.str(r.kind);
                    e.u64(r.client_id);
                    e.str(r.reason);
                    e.u8(u8::from(r.dry_run));
                    e.str(&r.detail);
                    // Last, so records written before it existed decode.
                    e.u32(r.count);
                }
                Row::Withdrawal(r) => {
                    e.i64(r.ts);
                    e.u64(r.room_id);
                    e.u64(r.viewer_id);
                    e.u64(r.client_lead_id);
                    e.str(r.action);
                    e.str(r.source);
                    e.str(&r.actor);
                }
                Row::LikeViewer(r) => {
                    e.u64(r.room_id);
                    e.u32(r.minute);
                    e.u64(r.viewer_id);
                    e.u64(r.taps);
                }
            }
        }
        Entry::Batch {
            table,
            first,
            last,
            rows,
        } => {
            e.u8(TAG_BATCH);
            e.u8(table.index() as u8);
            e.u64(*first);
            e.u64(*last);
            e.u32(*rows);
        }
        Entry::Done {
            table,
            first,
            last,
            outcome,
        } => {
            e.u8(TAG_DONE);
            e.u8(table.index() as u8);
            e.u64(*first);
            e.u64(*last);
            e.u8(*outcome as u8);
        }
    }
}

/// Decode a record's payload.
pub fn decode(payload: &[u8]) -> Result<Entry, DecodeError> {
    let mut d = Dec(payload);
    let tag = d.u8()?;
    let entry = match tag {
        TAG_BATCH => Entry::Batch {
            table: d.table()?,
            first: d.u64()?,
            last: d.u64()?,
            rows: d.u32()?,
        },
        TAG_DONE => Entry::Done {
            table: d.table()?,
            first: d.u64()?,
            last: d.u64()?,
            outcome: match d.u8()? {
                1 => Outcome::Committed,
                2 => Outcome::SetAside,
                _ => return Err(DecodeError::Value),
            },
        },
        t if t >= TAG_ROW => {
            let table = Table::from_index(t - TAG_ROW).ok_or(DecodeError::Value)?;
            Entry::Row(match table {
                Table::Chat => Row::Chat(ChatRow {
                    room_id: d.u64()?,
                    ts: d.i64()?,
                    viewer_id: d.u64()?,
                    session_id: d.u64()?,
                    client_msg_id: d.u64()?,
                    text: d.string()?,
                    verdict: d.name()?,
                    dry_run_reasons: d.names()?,
                }),
                Table::Likes => Row::Like(LikeRow {
                    room_id: d.u64()?,
                    ts: d.u32()?,
                    taps: d.u64()?,
                }),
                Table::Leads => Row::Lead(Box::new(LeadRow {
                    room_id: d.u64()?,
                    ts: d.i64()?,
                    viewer_id: d.u64()?,
                    session_id: d.u64()?,
                    client_lead_id: d.u64()?,
                    verdict: d.name()?,
                    reason: d.name()?,
                    score: d.u8()?,
                    reasons: d.names()?,
                    dry_run_reasons: d.names()?,
                    phone_hmac: d.string()?,
                    phone_masked: d.string()?,
                    phone_enc: d.string()?,
                    wechat_enc: d.string()?,
                    name_enc: d.string()?,
                    fields_enc: d.string()?,
                    ip_hmac: d.string()?,
                    consent: d.u8()? != 0,
                    fill_ms: d.u32()?,
                    pii_key_id: d.string_or_empty()?,
                    consent_version: d.string_or_empty()?,
                })),
                Table::Sessions => Row::Session(SessionRow {
                    room_id: d.u64()?,
                    ts: d.i64()?,
                    viewer_id: d.u64()?,
                    session_id: d.u64()?,
                    event: d.name()?,
                    watch_ms: d.u64()?,
                    client: d.string()?,
                    close: d.name()?,
                }),
                Table::Moderation => Row::Moderation(ModerationRow {
                    room_id: d.u64()?,
                    ts: d.i64()?,
                    viewer_id: d.u64()?,
                    session_id: d.u64()?,
                    kind: d.name()?,
                    client_id: d.u64()?,
                    reason: d.name()?,
                    dry_run: d.u8()? != 0,
                    detail: d.string()?,
                    count: if d.0.is_empty() { 1 } else { d.u32()? },
                }),
                Table::Withdrawals => Row::Withdrawal(WithdrawalRow {
                    ts: d.i64()?,
                    room_id: d.u64()?,
                    viewer_id: d.u64()?,
                    client_lead_id: d.u64()?,
                    action: d.name()?,
                    source: d.name()?,
                    actor: d.string()?,
                }),
                Table::LikeViewers => Row::LikeViewer(LikeViewerRow {
                    room_id: d.u64()?,
                    minute: d.u32()?,
                    viewer_id: d.u64()?,
                    taps: d.u64()?,
                }),
            })
        }
        _ => return Err(DecodeError::Value),
    };
    if !d.0.is_empty() {
        return Err(DecodeError::Length);
    }
    Ok(entry)
}

/// The `&'static str` a row field held: rows carry names of verdicts,
/// reasons, close codes and a few fixed words, never free text.
pub fn intern(s: &str) -> Option<&'static str> {
    const WORDS: [&str; 14] = [
        "", "join", "leave", "chat", "like", "lead", "session", "withdraw", "erase", "erased",
        "viewer", "merchant", "admin", "engine",
    ];
    const VERDICTS: [Verdict; 4] = [
        Verdict::Accepted,
        Verdict::Suspect,
        Verdict::Rejected,
        Verdict::Duplicate,
    ];
    WORDS
        .iter()
        .copied()
        .find(|w| *w == s)
        .or_else(|| VERDICTS.iter().map(|v| v.as_str()).find(|w| *w == s))
        .or_else(|| Reason::ALL.iter().map(|r| r.as_str()).find(|w| *w == s))
        .or_else(|| CloseCode::ALL.iter().map(|c| c.as_str()).find(|w| *w == s))
}

struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn strs(&mut self, v: &[&'static str]) {
        self.u32(v.len() as u32);
        for s in v {
            self.str(s);
        }
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Length);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn table(&mut self) -> Result<Table, DecodeError> {
        Table::from_index(self.u8()?).ok_or(DecodeError::Value)
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Value)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }
    /// A trailing string added to a record layout later: `''` when the
    /// record ends before it.
    fn string_or_empty(&mut self) -> Result<String, DecodeError> {
        if self.0.is_empty() {
            Ok(String::new())
        } else {
            self.string()
        }
    }
    fn name(&mut self) -> Result<&'static str, DecodeError> {
        intern(self.str()?).ok_or(DecodeError::Value)
    }
    fn names(&mut self) -> Result<Vec<&'static str>, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return Err(DecodeError::Length);
        }
        (0..n).map(|_| self.name()).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn lead(room: u64, viewer: u64, id: u64) -> Row {
        Row::Lead(Box::new(LeadRow {
            room_id: room,
            ts: 1_700_000_000_123,
            viewer_id: viewer,
            session_id: 9,
            client_lead_id: id,
            verdict: "accepted",
            reason: "none",
            score: 97,
            reasons: vec!["duplicate_lead"],
            dry_run_reasons: vec![],
            phone_hmac: "ab".into(),
            phone_masked: "138****5678".into(),
            phone_enc: "00ff".into(),
            wechat_enc: String::new(),
            name_enc: "11".into(),
            fields_enc: String::new(),
            pii_key_id: "k1".into(),
            ip_hmac: "cd".into(),
            consent: true,
            consent_version: "v3".into(),
            fill_ms: 4_000,
        }))
    }

    #[test]
    fn lead_records_from_before_the_key_id_and_consent_version_decode() {
        let mut payload = Vec::new();
        encode(&mut payload, &Entry::Row(lead(1, 2, 3)));
        let Row::Lead(new) = lead(1, 2, 3) else {
            unreachable!()
        };
        // Before the consent version: without its u32 len + "v3".
        payload.truncate(payload.len() - 6);
        let Ok(Entry::Row(Row::Lead(old))) = decode(&payload) else {
            panic!("old lead record must decode");
        };
        assert_eq!(old.consent_version, "");
        let without_version = LeadRow {
            consent_version: String::new(),
            ..(*new).clone()
        };
        assert_eq!(*old, without_version);
        // Before the key id too (u32 len + "k1").
        payload.truncate(payload.len() - 6);
        let Ok(Entry::Row(Row::Lead(older))) = decode(&payload) else {
            panic!("older lead record must decode");
        };
        assert_eq!(
            LeadRow {
                pii_key_id: "k1".into(),
                ..*older
            },
            without_version
        );
    }

    pub(crate) fn samples() -> Vec<Entry> {
        vec![
            Entry::Row(Row::Chat(ChatRow {
                room_id: 1,
                ts: -5,
                viewer_id: 2,
                session_id: 3,
                client_msg_id: 4,
                text: "你好 👋".into(),
                verdict: "accepted",
                dry_run_reasons: vec!["link", "flood"],
            })),
            Entry::Row(Row::Like(LikeRow {
                room_id: 7,
                ts: 1_700_000_000,
                taps: 12,
            })),
            Entry::Row(lead(1, 2, 3)),
            Entry::Row(Row::Session(SessionRow {
                room_id: 1,
                ts: 2,
                viewer_id: 3,
                session_id: 4,
                event: "leave",
                watch_ms: 5,
                client: "ios/1.2".into(),
                close: "shutting_down",
            })),
            Entry::Row(Row::Moderation(ModerationRow {
                room_id: 1,
                ts: 2,
                viewer_id: 3,
                session_id: 4,
                kind: "chat",
                client_id: 5,
                reason: "busy",
                dry_run: true,
                count: 3,
                detail: "x".into(),
            })),
            Entry::Row(Row::Withdrawal(WithdrawalRow {
                ts: 7,
                room_id: 1,
                viewer_id: 3,
                client_lead_id: 9,
                action: "withdraw",
                source: "viewer",
                actor: "s-4".into(),
            })),
            Entry::Row(Row::LikeViewer(LikeViewerRow {
                room_id: 1,
                minute: 1_700_000_040,
                viewer_id: 3,
                taps: 12,
            })),
            Entry::Batch {
                table: Table::Leads,
                first: 3,
                last: 90,
                rows: 12,
            },
            Entry::Done {
                table: Table::Sessions,
                first: 1,
                last: 2,
                outcome: Outcome::SetAside,
            },
        ]
    }

    #[test]
    fn every_entry_round_trips() {
        let mut buf = Vec::new();
        for (i, e) in samples().iter().enumerate() {
            append(&mut buf, 100 + i as u64, e);
        }
        let mut rest = &buf[..];
        for (i, e) in samples().iter().enumerate() {
            let Parsed::Record { lsn, payload, len } = parse(rest) else {
                panic!("record {i} did not parse");
            };
            assert_eq!(lsn, 100 + i as u64);
            assert_eq!(&decode(payload).unwrap(), e);
            if let Entry::Row(r) = e {
                assert_eq!(row_table(payload), Some(r.table()));
            } else {
                assert_eq!(row_table(payload), None);
            }
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn truncation_is_incomplete_and_a_flipped_bit_is_corrupt() {
        let mut buf = Vec::new();
        append(&mut buf, 1, &samples()[0]);
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        for byte in 4..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x20;
            assert_eq!(parse(&bad), Parsed::Corrupt, "flip in byte {byte}");
        }
        assert_eq!(parse(&[0u8; 32]), Parsed::Corrupt);
    }

    #[test]
    fn unknown_names_and_trailing_bytes_are_rejected() {
        assert_eq!(intern("accepted"), Some("accepted"));
        assert_eq!(intern("shutting_down"), Some("shutting_down"));
        assert_eq!(intern("nope"), None);
        let mut buf = Vec::new();
        encode(&mut buf, &samples()[1]);
        buf.push(0);
        assert_eq!(decode(&buf), Err(DecodeError::Length));
        assert_eq!(decode(&[0x7f]), Err(DecodeError::Value));
    }
}

/// One step of [`scan`]ning a buffer of records.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A valid record at byte `at`.
    Record {
        /// Offset in the buffer.
        at: usize,
        /// LSN.
        lsn: u64,
        /// Payload.
        payload: &'a [u8],
    },
    /// Bytes at `at` that hold no valid record, followed by a valid one:
    /// corruption in the middle.
    Garbage {
        /// Offset.
        at: usize,
        /// Length.
        len: usize,
    },
    /// From `at` to the end no valid record follows: a torn (partly
    /// written) tail, or more bytes are still to come.
    Tail {
        /// Offset.
        at: usize,
    },
}

/// True when every byte of `buf` is zero (a preallocated, unwritten
/// region of a segment).
pub fn all_zero(buf: &[u8]) -> bool {
    let words = buf.chunks_exact(8);
    let rest = words.remainder();
    words
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .all(|w| w == 0)
        && rest.iter().all(|&b| b == 0)
}

/// Walk the records of `buf`, whose previous record had LSN `after`.
/// A record must have a larger LSN than the one before it; corruption in
/// the middle is skipped by looking for the next valid record.
pub fn scan(buf: &[u8], after: u64) -> impl Iterator<Item = Scan<'_>> {
    let mut at = 0usize;
    let mut last = after;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || at >= buf.len() {
            return None;
        }
        match parse(&buf[at..]) {
            Parsed::Record { lsn, payload, len } if lsn > last => {
                let item = Scan::Record { at, lsn, payload };
                at += len;
                last = lsn;
                return Some(item);
            }
            // A record still being written (or cut by the read): never look
            // inside it for records (its payload holds viewers' bytes).
            Parsed::Incomplete => {
                done = true;
                return Some(Scan::Tail { at });
            }
            _ => {}
        }
        // Zeros to the end (a preallocated segment's unwritten rest): no
        // record can start in them, so do not look at every offset.
        if all_zero(&buf[at..]) {
            done = true;
            return Some(Scan::Tail { at });
        }
        // Resynchronise: the next offset holding a valid, later record.
        let next = (at + 1..buf.len())
            .find(|&q| matches!(parse(&buf[q..]), Parsed::Record { lsn, .. } if lsn > last));
        match next {
            Some(q) => {
                let item = Scan::Garbage { at, len: q - at };
                at = q;
                Some(item)
            }
            None => {
                done = true;
                Some(Scan::Tail { at })
            }
        }
    })
}
