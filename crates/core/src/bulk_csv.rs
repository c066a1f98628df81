//! The one reader of Marketo bulk export CSV files: a pure, incremental record tokenizer.
//!
//! [`RecordReader`] is fed the file's bytes chunk by chunk as they arrive (no I/O here) and hands
//! each complete record to a sink, with the absolute byte offset where the record ends. Both the
//! Marketo connector's lead parser and the engine's resumable row stream read files through it,
//! so they cannot disagree on where records start and end.
//!
//! The quoting is RFC 4180 as `csv-core` reads it (which does the byte-level work): `,`
//! separates fields, a `"` at the start of a field opens a quoted field in which `""` is a quote
//! and newlines are data, a `"` anywhere else is a literal character. CRLF, LF and CR each end a
//! record. On top of `csv-core` the reader:
//!
//! - strips a UTF-8 byte order mark only at the very start of the file (offset 0), however the
//!   first chunks are cut, and never elsewhere;
//! - skips blank lines, and records of one empty field (`""` on a line of its own);
//! - reports, for each record, the offset right after its line end (`\r\n` counts whole), the
//!   same however the file is cut into chunks: reading the file again from that offset (with
//!   [`RecordReader::at_offset`]) gives the records after it;
//! - bounds memory: a record longer than [`MAX_RECORD_BYTES`] bytes (a file without line ends,
//!   an unterminated quote) or with more than [`MAX_RECORD_FIELDS`] fields is reported once as
//!   [`Item::TooLong`] as soon as it passes the limit, and the rest of it streams by unkept;
//!   reading goes on after its end.

use csv_core::{ReadRecordResult, Reader};

/// Longest record, in bytes of the file from its first byte to its line end, that is kept.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Most fields of a record that are kept.
pub const MAX_RECORD_FIELDS: usize = 1 << 20;

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// A record passed a limit of [`RecordReader`]; it is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooLong {
    /// Longer than [`MAX_RECORD_BYTES`].
    #[error(
        "a record starting at byte {start_offset} is longer than {MAX_RECORD_BYTES} bytes (no record end; an \
         unterminated quote?)"
    )]
    Bytes {
        /// Absolute offset of the record's first byte.
        start_offset: u64,
    },
    /// More than [`MAX_RECORD_FIELDS`] fields.
    #[error("a record starting at byte {start_offset} has more than {MAX_RECORD_FIELDS} fields")]
    Fields {
        /// Absolute offset of the record's first byte.
        start_offset: u64,
    },
}

impl TooLong {
    /// Absolute offset of the record's first byte.
    pub fn start_offset(&self) -> u64 {
        match *self {
            TooLong::Bytes { start_offset } | TooLong::Fields { start_offset } => start_offset,
        }
    }
}

/// One complete record, borrowed from the reader until the sink returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The fields' unquoted bytes, back to back.
    data: &'a [u8],
    /// Where each field ends in `data`.
    ends: &'a [usize],
    end_offset: u64,
}

impl<'a> Record<'a> {
    /// Number of fields (at least 1).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the record has no fields (never, for a record the reader hands out).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`'s bytes (quotes removed, `""` read as `"`).
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.data.get(start..end)
    }

    /// The fields' bytes, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let (data, ends) = (self.data, self.ends);
        ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &data[start..end]
        })
    }

    /// The fields as text; invalid UTF-8 becomes U+FFFD.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect()
    }

    /// Absolute offset in the file right after this record's line end (or the file's end).
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }
}

/// What [`RecordReader`] hands its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A complete record.
    Record(Record<'a>),
    /// A record passed a limit; it is skipped, reading goes on after its end.
    TooLong(TooLong),
}

/// The incremental bulk CSV record reader (see the [module docs](self)).
///
/// Feed it the file's chunks in order with [`feed`](Self::feed), then call
/// [`finish`](Self::finish) once at the end of the file (a last record without a line end is
/// handed out then). A record that ends with a `\r` as the last byte of a chunk is handed out
/// with the next chunk, once it is known whether a `\n` follows.
#[derive(Debug)]
pub struct RecordReader {
    reader: Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    /// Absolute offset of the next byte to read.
    offset: u64,
    /// Absolute offset of the current record's first byte (while `in_record`).
    start: u64,
    /// `csv-core` has been given bytes of a record it has not finished.
    in_record: bool,
    /// A complete record waits in `out`/`ends` to know whether its `\r` is followed by `\n`.
    pending: bool,
    /// The current record passed a limit: its data is being dropped.
    overflow: bool,
    /// `csv-core` has been called (so it will not strip a BOM itself).
    primed: bool,
    /// At offset 0: the first bytes, held until they tell whether the file starts with a BOM.
    head: Option<Vec<u8>>,
    finished: bool,
}

impl Default for RecordReader {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordReader {
    /// A reader of a file from its start (a leading UTF-8 BOM is stripped).
    pub fn new() -> Self {
        Self::at_offset(0)
    }

    /// A reader of a file from byte `offset` on (a resumed download, at a record end this reader
    /// reported). Offsets it reports are absolute. From offset 0 it is [`new`](Self::new).
    pub fn at_offset(offset: u64) -> Self {
        Self {
            reader: Reader::new(),
            out: vec![0; 4096],
            ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            offset,
            start: offset,
            in_record: false,
            pending: false,
            overflow: false,
            primed: false,
            head: (offset == 0).then(Vec::new),
            finished: false,
        }
    }

    /// Absolute offset of the next byte the reader expects.
    pub fn offset(&self) -> u64 {
        self.offset + self.head.as_ref().map_or(0, |h| h.len() as u64)
    }

    /// Bytes held for the record being read (bounded by about [`MAX_RECORD_BYTES`] plus the
    /// field ends, whatever the input).
    pub fn buffered_capacity(&self) -> usize {
        self.out.capacity() + self.ends.capacity() * size_of::<usize>() + self.head.as_ref().map_or(0, Vec::capacity)
    }

    /// Reads a chunk; complete records (and limit reports) go to `sink`. Ignored after
    /// [`finish`](Self::finish).
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl FnMut(Item<'_>)) {
        if self.finished || chunk.is_empty() {
            return;
        }
        match self.head.take() {
            None => self.run(chunk, sink),
            Some(head) if head.is_empty() && chunk.len() >= BOM.len() => self.start_file(chunk, sink),
            Some(mut head) => {
                head.extend_from_slice(chunk);
                if head.len() < BOM.len() && BOM.starts_with(&head) {
                    self.head = Some(head);
                } else {
                    self.start_file(&head, sink);
                }
            }
        }
    }

    /// Ends the file: a record still open (no line end) or held back goes to `sink`. Only the
    /// first call does anything.
    pub fn finish(&mut self, sink: &mut impl FnMut(Item<'_>)) {
        if self.finished {
            return;
        }
        if let Some(head) = self.head.take() {
            self.start_file(&head, sink);
        }
        self.finished = true;
        if self.pending {
            self.emit(sink);
        }
        if !self.in_record {
            return;
        }
        // At the end of input `csv-core` closes the open record; it may first ask for room for
        // the last field's end. Bounded: each round either ends or makes room.
        for _ in 0..4 {
            let (res, _, nout, nend) =
                self.reader.read_record(&[], &mut self.out[self.out_len..], &mut self.ends[self.ends_len..]);
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::Record => {
                    self.record_done(sink);
                    return;
                }
                ReadRecordResult::OutputEndsFull => self.grow_ends(sink),
                ReadRecordResult::OutputFull => self.grow_out(sink),
                ReadRecordResult::InputEmpty | ReadRecordResult::End => return,
            }
        }
    }

    /// The file's first bytes: a BOM is not data.
    fn start_file(&mut self, data: &[u8], sink: &mut impl FnMut(Item<'_>)) {
        match data.strip_prefix(BOM) {
            Some(rest) => {
                self.offset += BOM.len() as u64;
                self.start = self.offset;
                self.run(rest, sink);
            }
            None => self.run(data, sink),
        }
    }

    fn run(&mut self, mut input: &[u8], sink: &mut impl FnMut(Item<'_>)) {
        if self.pending {
            if input.first() == Some(&b'\n') {
                input = &input[1..];
                self.offset += 1;
            }
            self.emit(sink);
        }
        while !input.is_empty() {
            if !self.in_record {
                // Between records line ends are blank lines (`csv-core` would discard them too).
                let blank = input.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                input = &input[blank..];
                self.offset += blank as u64;
                if input.is_empty() {
                    return;
                }
                self.in_record = true;
                self.start = self.offset;
            }
            let mut take = input.len();
            if !self.overflow {
                let used = usize::try_from(self.offset - self.start).unwrap_or(usize::MAX);
                let allowed = MAX_RECORD_BYTES.saturating_sub(used);
                if allowed == 0 {
                    self.too_long(TooLong::Bytes { start_offset: self.start }, sink);
                    continue;
                }
                take = take.min(allowed);
            }
            if !self.primed {
                // `csv-core` strips a BOM only from a first input of three bytes or more; the
                // file's own BOM is handled above, so it must not strip another.
                take = take.min(1);
                self.primed = true;
            }
            let (res, nin, nout, nend) =
                self.reader.read_record(&input[..take], &mut self.out[self.out_len..], &mut self.ends[self.ends_len..]);
            let ended_with_cr = nin > 0 && input[nin - 1] == b'\r';
            input = &input[nin..];
            self.offset += nin as u64;
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty | ReadRecordResult::End => {}
                ReadRecordResult::OutputFull => self.grow_out(sink),
                ReadRecordResult::OutputEndsFull => self.grow_ends(sink),
                ReadRecordResult::Record if ended_with_cr && !self.overflow => match input.first() {
                    // `\r\n` is one line end: the record ends after both.
                    Some(b'\n') => {
                        input = &input[1..];
                        self.offset += 1;
                        self.record_done(sink);
                    }
                    Some(_) => self.record_done(sink),
                    None => {
                        self.in_record = false;
                        self.pending = true;
                    }
                },
                ReadRecordResult::Record => self.record_done(sink),
            }
        }
    }

    /// `csv-core` ended a record at `self.offset`.
    fn record_done(&mut self, sink: &mut impl FnMut(Item<'_>)) {
        self.in_record = false;
        if self.overflow {
            self.overflow = false;
            self.out_len = 0;
            self.ends_len = 0;
        } else {
            self.emit(sink);
        }
    }

    /// Hands out the record in `out`/`ends` (unless it is one empty field) and clears them.
    fn emit(&mut self, sink: &mut impl FnMut(Item<'_>)) {
        self.pending = false;
        let ends = &self.ends[..self.ends_len];
        if !(ends.is_empty() || ends == [0]) {
            sink(Item::Record(Record { data: &self.out[..self.out_len], ends, end_offset: self.offset }));
        }
        self.out_len = 0;
        self.ends_len = 0;
    }

    fn grow_out(&mut self, sink: &mut impl FnMut(Item<'_>)) {
        if self.overflow {
            self.out_len = 0;
        } else if self.out.len() >= MAX_RECORD_BYTES {
            // Not reached: a field's data is never longer than the record's bytes.
            self.too_long(TooLong::Bytes { start_offset: self.start }, sink);
        } else {
            let n = (self.out.len() * 2).min(MAX_RECORD_BYTES);
            self.out.resize(n, 0);
        }
    }

    fn grow_ends(&mut self, sink: &mut impl FnMut(Item<'_>)) {
        if self.overflow {
            self.ends_len = 0;
        } else if self.ends.len() >= MAX_RECORD_FIELDS {
            self.too_long(TooLong::Fields { start_offset: self.start }, sink);
        } else {
            let n = (self.ends.len() * 2).min(MAX_RECORD_FIELDS);
            self.ends.resize(n, 0);
        }
    }

    /// Reports the current record and drops what was kept of it; the rest streams by unkept.
    fn too_long(&mut self, e: TooLong, sink: &mut impl FnMut(Item<'_>)) {
        self.overflow = true;
        self.out_len = 0;
        self.ends_len = 0;
        sink(Item::TooLong(e));
    }
}

/// A bulk export header name as it maps to a lead field: trimmed, and the first one without a
/// UTF-8 BOM (one the reader kept because blank lines came before it).
pub fn header_name(index: usize, raw: &str) -> &str {
    let name = raw.trim();
    if index == 0 { name.strip_prefix('\u{feff}').unwrap_or(name) } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reader made of some chunks: records as text with their end offsets, limit reports.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Row(Vec<String>, u64),
        TooLong(TooLong),
    }

    fn collect(got: &mut Vec<Got>) -> impl FnMut(Item<'_>) + '_ {
        |item| {
            got.push(match item {
                Item::Record(rec) => Got::Row(rec.to_strings(), rec.end_offset()),
                Item::TooLong(e) => Got::TooLong(e),
            })
        }
    }

    fn read_at(offset: u64, parts: &[&[u8]]) -> Vec<Got> {
        let mut r = RecordReader::at_offset(offset);
        let mut got = Vec::new();
        for p in parts {
            r.feed(p, &mut collect(&mut got));
        }
        r.finish(&mut collect(&mut got));
        r.finish(&mut collect(&mut got));
        got
    }

    fn row(fields: &[&str], end: u64) -> Got {
        Got::Row(fields.iter().map(|f| f.to_string()).collect(), end)
    }

    /// The same records and offsets whole, in every two-piece split and in one-byte chunks.
    fn same_in_any_chunking(file: &[u8], offset: u64) -> Vec<Got> {
        let whole = read_at(offset, &[file]);
        for split in 0..=file.len() {
            let (a, b) = file.split_at(split);
            assert_eq!(read_at(offset, &[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = file.chunks(1).collect();
        assert_eq!(read_at(offset, &bytes), whole, "one-byte chunks");
        whole
    }

    #[test]
    fn quoting_line_ends_and_offsets() {
        let file = b"id,name\r\n1,\"a,\"\"b\"\"\r\nc\"\r\n\r\n\n2,x\"y\r3,\"\"\n\"\"\n4,";
        let got = same_in_any_chunking(file, 0);
        assert_eq!(
            got,
            vec![
                row(&["id", "name"], 9),
                row(&["1", "a,\"b\"\r\nc"], 25),
                row(&["2", "x\"y"], 34),
                row(&["3", ""], 39),
                row(&["4", ""], file.len() as u64),
            ]
        );
    }

    #[test]
    fn every_offset_is_a_resume_point() {
        let file: &[u8] = b"\xef\xbb\xbfid\r\r\n1,\"q\"\"\n\"\r\n\xef\xbb\xbf2\r\"\"\r\n\x0c \r";
        let whole = same_in_any_chunking(file, 0);
        assert_eq!(whole.len(), 4, "{whole:?}");
        for (k, g) in whole.iter().enumerate() {
            let Got::Row(_, end) = g else { panic!("{g:?}") };
            let rest = &file[*end as usize..];
            assert_eq!(same_in_any_chunking(rest, *end), whole[k + 1..], "resuming at {end}");
        }
    }

    #[test]
    fn only_the_files_own_bom_is_stripped() {
        let got = same_in_any_chunking(b"\xef\xbb\xbf\xef\xbb\xbf\"id\"\n\xef\xbb\xbf\"x\"\n", 0);
        assert_eq!(got, vec![row(&["\u{feff}\"id\""], 11), row(&["\u{feff}\"x\""], 18)]);
        assert_eq!(same_in_any_chunking(b"\xef\xbb\xbf\"id\",b\n", 0), vec![row(&["id", "b"], 10)]);
        // Resumed, a BOM is data.
        assert_eq!(same_in_any_chunking(b"\xef\xbb\xbfa\n", 5), vec![row(&["\u{feff}a"], 10)]);
        // A partial BOM alone is data too.
        assert_eq!(same_in_any_chunking(b"\xef\xbb", 0), vec![row(&["\u{fffd}"], 2)]);
        assert_eq!(same_in_any_chunking(b"\xef\xbb\xbf", 0), vec![]);
        assert_eq!(same_in_any_chunking(b"", 0), vec![]);
    }

    #[test]
    fn a_held_back_cr_record_waits_for_the_next_chunk() {
        let mut r = RecordReader::new();
        let mut n = 0;
        r.feed(b"a\r", &mut |_| n += 1);
        assert_eq!(n, 0);
        r.feed(b"\n", &mut |_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(r.offset(), 3);
    }

    #[test]
    fn an_overlong_record_is_reported_at_once_then_skipped() {
        let mut r = RecordReader::new();
        let mut got = Vec::new();
        r.feed(b"id\n1,\"", &mut collect(&mut got));
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..(MAX_RECORD_BYTES / chunk.len() - 1) {
            r.feed(&chunk, &mut collect(&mut got));
        }
        r.feed(&chunk[3..], &mut collect(&mut got));
        assert_eq!(got, vec![row(&["id"], 3)], "exactly at the limit");
        r.feed(b"y", &mut collect(&mut got));
        assert_eq!(got.len(), 2, "past it: reported at once");
        for _ in 0..3 {
            r.feed(&chunk, &mut collect(&mut got));
        }
        assert!(r.buffered_capacity() <= MAX_RECORD_BYTES + 4096);
        r.feed(b"\"\n2\n", &mut collect(&mut got));
        r.finish(&mut collect(&mut got));
        let end = 3 + (MAX_RECORD_BYTES + 1 + 3 * chunk.len()) as u64 + 2;
        assert_eq!(got, vec![row(&["id"], 3), Got::TooLong(TooLong::Bytes { start_offset: 3 }), row(&["2"], end + 2)]);
        assert!(TooLong::Bytes { start_offset: 3 }.to_string().contains("longer than"));
    }

    #[test]
    fn too_many_fields_is_reported_and_skipped() {
        let mut wide = vec![b','; MAX_RECORD_FIELDS];
        wide.extend_from_slice(b"\n1\n");
        let got = read_at(0, &[&wide]);
        assert_eq!(got, vec![Got::TooLong(TooLong::Fields { start_offset: 0 }), row(&["1"], wide.len() as u64)]);
        let mut ok = vec![b','; MAX_RECORD_FIELDS - 1];
        ok.push(b'\n');
        assert!(matches!(&read_at(0, &[&ok])[..], [Got::Row(f, _)] if f.len() == MAX_RECORD_FIELDS));
        // At the end of the file too.
        let got = read_at(0, &[&wide[..MAX_RECORD_FIELDS]]);
        assert_eq!(got, vec![Got::TooLong(TooLong::Fields { start_offset: 0 })]);
    }

    #[test]
    fn blank_lines_and_empty_records_are_skipped() {
        assert_eq!(same_in_any_chunking(b"\r\n\n\"\"\n\r,\n\"\"", 0), vec![row(&["", ""], 9)]);
        assert_eq!(same_in_any_chunking(b"\n\r\n", 0), vec![]);
    }

    #[test]
    fn record_accessors() {
        let mut seen = Vec::new();
        let mut r = RecordReader::new();
        r.feed(b"a,\"b\"\"\",\n", &mut |item| {
            if let Item::Record(rec) = item {
                seen.push((rec.len(), rec.is_empty(), rec.get(1).map(<[u8]>::to_vec), rec.get(3).is_none()));
                assert_eq!(rec.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"b\"", b""]);
            }
        });
        assert_eq!(seen, vec![(3, false, Some(b"b\"".to_vec()), true)]);
    }

    #[test]
    fn header_names_are_trimmed_and_the_first_loses_a_bom() {
        assert_eq!(header_name(0, " \u{feff}id"), "id");
        assert_eq!(header_name(0, "\u{feff} id"), " id");
        assert_eq!(header_name(0, "\u{feff}id\u{b}"), "id");
        assert_eq!(header_name(1, "\u{feff}id"), "\u{feff}id");
        assert_eq!(header_name(2, " firstName "), "firstName");
    }

    proptest::proptest! {
        /// The properties `fuzz/bulk_csv` checks, on bytes of the characters that matter: the
        /// same records and offsets however the file is cut, and every offset a resume point.
        #[test]
        fn chunking_never_matters_and_offsets_resume(
            file in proptest::collection::vec(proptest::sample::select(b"ab,\"\r\n \xef\xbb\xbf".to_vec()), 0..48),
            sizes in proptest::collection::vec(1usize..6, 1..4),
        ) {
            let whole = read_at(0, &[&file]);
            let mut parts = Vec::new();
            let mut rest = &file[..];
            for n in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (a, b) = rest.split_at((*n).min(rest.len()));
                parts.push(a);
                rest = b;
            }
            proptest::prop_assert_eq!(&read_at(0, &parts), &whole);
            for (k, g) in whole.iter().enumerate() {
                let Got::Row(_, end) = g else { continue };
                proptest::prop_assert_eq!(&read_at(*end, &[&file[*end as usize..]]), &whole[k + 1..].to_vec());
            }
        }
    }
}
