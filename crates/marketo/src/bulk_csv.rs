//! Streaming parse of bulk lead export CSV files into [`MarketoLead`](salesync_core::MarketoLead)s.
//!
//! The header row holds REST field names; the literal `null` (and the empty string) means absent.
//! Parsing is incremental (`csv-core` over the chunks as they arrive): the file is never held in
//! memory, only the current row.

use std::collections::VecDeque;
use std::io::Read;

use csv_core::{ReadRecordResult, Reader};
use futures::{Stream, StreamExt};
use salesync_core::RecordError;
use salesync_core::error::RecordProblem;
use salesync_core::mapping::{LeadRecord, MarketoLead};

use crate::error::MkError;

/// Longest row kept in memory; a longer one becomes one record error and is skipped.
pub(crate) const MAX_ROW_BYTES: usize = 16 * 1024 * 1024;
/// Most fields kept for one row; a row with more becomes one record error and is skipped.
const MAX_FIELDS: usize = 1 << 20;

/// A push parser: feed it chunks, collect one [`LeadRecord`] per data row.
///
/// Memory stays bounded whatever the input: a row longer than 16 MiB (a file without
/// newlines, an unterminated quote) is dropped as it streams by and reported as one record error.
#[derive(Debug)]
pub struct CsvLeadParser {
    reader: Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    header: Option<Vec<String>>,
    finished: bool,
    /// The current row outgrew the limits: its data is being dropped.
    overflow: bool,
    /// The first bytes, held until they tell whether the file starts with a UTF-8 BOM
    /// (`csv-core` strips one only when its first input holds all three bytes).
    head: Option<Vec<u8>>,
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xef\xbb\xbf";

impl Default for CsvLeadParser {
    fn default() -> Self {
        Self::new()
    }
}

impl CsvLeadParser {
    /// A parser expecting a header row first.
    pub fn new() -> Self {
        Self {
            reader: Reader::new(),
            out: vec![0; 4096],
            ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            header: None,
            finished: false,
            overflow: false,
            head: Some(Vec::new()),
        }
    }

    /// The header's field names, once read.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// Feeds a chunk; complete rows are pushed to `sink`.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl FnMut(LeadRecord)) {
        if chunk.is_empty() {
            return;
        }
        match self.head.take() {
            Some(mut head) => {
                head.extend_from_slice(chunk);
                if head.len() < BOM.len() && BOM.starts_with(&head) {
                    self.head = Some(head);
                } else {
                    self.run(&head, sink);
                }
            }
            None => self.run(chunk, sink),
        }
    }

    /// Signals the end of the file; a last row without a trailing newline is pushed to `sink`.
    pub fn finish(&mut self, sink: &mut impl FnMut(LeadRecord)) {
        if !self.finished {
            self.finished = true;
            if let Some(head) = self.head.take()
                && !head.is_empty()
            {
                self.run(&head, sink);
            }
            self.run(&[], sink);
        }
    }

    fn run(&mut self, mut input: &[u8], sink: &mut impl FnMut(LeadRecord)) {
        let eof = input.is_empty();
        loop {
            let (res, nin, nout, nend) =
                self.reader.read_record(input, &mut self.out[self.out_len..], &mut self.ends[self.ends_len..]);
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty => {
                    if input.is_empty() && !eof {
                        return;
                    }
                }
                ReadRecordResult::OutputFull if self.out.len() >= MAX_ROW_BYTES => self.drop_row(),
                ReadRecordResult::OutputFull => {
                    let n = (self.out.len() * 2).min(MAX_ROW_BYTES);
                    self.out.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull if self.ends.len() >= MAX_FIELDS => self.drop_row(),
                ReadRecordResult::OutputEndsFull => {
                    let n = (self.ends.len() * 2).min(MAX_FIELDS);
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record if self.overflow => {
                    self.overflow = false;
                    self.out_len = 0;
                    self.ends_len = 0;
                    self.emit_too_long(sink);
                    if input.is_empty() && !eof {
                        return;
                    }
                }
                ReadRecordResult::Record => {
                    self.emit(sink);
                    self.out_len = 0;
                    self.ends_len = 0;
                    if input.is_empty() && !eof {
                        return;
                    }
                }
                ReadRecordResult::End => return,
            }
        }
    }

    /// Forgets what was read of the current row; the rest of it streams by unkept.
    fn drop_row(&mut self) {
        self.overflow = true;
        self.out_len = 0;
        self.ends_len = 0;
    }

    fn emit_too_long(&mut self, sink: &mut impl FnMut(LeadRecord)) {
        if self.header.is_none() {
            // Without a usable header no row can be read: each reports a missing id.
            self.header = Some(Vec::new());
            return;
        }
        sink(LeadRecord(Err(RecordError {
            record_id: None,
            field: "(record)".into(),
            value: None,
            problem: RecordProblem::Invalid(format!(
                "bulk CSV row longer than {MAX_ROW_BYTES} bytes or {MAX_FIELDS} fields"
            )),
        })));
    }

    fn emit(&mut self, sink: &mut impl FnMut(LeadRecord)) {
        let out = &self.out[..self.out_len];
        let ends = &self.ends[..self.ends_len];
        let field = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            String::from_utf8_lossy(&out[start..ends[i]])
        };
        match &self.header {
            None => {
                let mut names: Vec<String> = (0..ends.len()).map(|i| field(i).trim().to_string()).collect();
                if let Some(first) = names.first_mut()
                    && let Some(stripped) = first.strip_prefix('\u{feff}')
                {
                    *first = stripped.to_string();
                }
                self.header = Some(names);
            }
            Some(names) => {
                // A blank line parses as one empty field: skip it.
                if ends.len() == 1 && ends[0] == 0 {
                    return;
                }
                let values: Vec<_> = (0..ends.len()).map(field).collect();
                let pairs = names.iter().map(String::as_str).zip(values.iter().map(|v| v.as_ref()));
                sink(LeadRecord(MarketoLead::from_text_fields(pairs)));
            }
        }
    }
}

/// Turns a bulk export byte stream (e.g. from `lead_export_file`) into a stream of rows. Errors of
/// the byte stream end the row stream; a row that does not map is an `Ok(LeadRecord(Err(..)))`.
pub fn bulk_csv_leads<S>(bytes: S) -> impl Stream<Item = salesync_core::Result<LeadRecord>> + Send + 'static
where
    S: Stream<Item = salesync_core::Result<Vec<u8>>> + Send + Unpin + 'static,
{
    struct St<S> {
        bytes: S,
        parser: CsvLeadParser,
        ready: VecDeque<LeadRecord>,
        done: bool,
    }
    let st = St { bytes, parser: CsvLeadParser::new(), ready: VecDeque::new(), done: false };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(r) = st.ready.pop_front() {
                return Some((Ok(r), st));
            }
            if st.done {
                return None;
            }
            match st.bytes.next().await {
                Some(Ok(chunk)) => {
                    let ready = &mut st.ready;
                    st.parser.feed(&chunk, &mut |r| ready.push_back(r));
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    let ready = &mut st.ready;
                    st.parser.finish(&mut |r| ready.push_back(r));
                }
            }
        }
    })
}

/// The same over a blocking reader (a downloaded file on disk).
pub fn bulk_csv_leads_from_reader<R: Read>(reader: R) -> impl Iterator<Item = salesync_core::Result<LeadRecord>> {
    let mut reader = reader;
    let mut parser = CsvLeadParser::new();
    let mut ready: VecDeque<salesync_core::Result<LeadRecord>> = VecDeque::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = false;
    std::iter::from_fn(move || {
        loop {
            if let Some(r) = ready.pop_front() {
                return Some(r);
            }
            if done {
                return None;
            }
            match reader.read(&mut buf) {
                Ok(0) => {
                    done = true;
                    parser.finish(&mut |r| ready.push_back(Ok(r)));
                }
                Ok(n) => parser.feed(&buf[..n], &mut |r| ready.push_back(Ok(r))),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    done = true;
                    return Some(Err(MkError::Stream { operation: "bulk csv", detail: e.to_string() }.into()));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    const CSV: &str = "\u{feff}id,firstName,lastName,email,sfdcType,sfdcLeadOwnerId,company,updatedAt\n\
        1,Ada,Lovelace,ada@example.com,Contact,0055g00000AbCdE,\"Analytical, Engines\",2026-01-16T23:32:19Z\n\
        2,null,Turing,,Lead,null,null,null\n\
        \n\
        x,Bad,Id,,,,,\n\
        3,\"Multi\nLine\",\"Quote \"\"q\"\"\",,,,,";

    fn check(rows: Vec<LeadRecord>) {
        assert_eq!(rows.len(), 4, "{rows:?}");
        let a = rows[0].0.as_ref().unwrap();
        assert_eq!(a.id, 1);
        assert_eq!(a.company.as_deref(), Some("Analytical, Engines"));
        assert!(a.owner_id.is_some());
        let b = rows[1].0.as_ref().unwrap();
        assert_eq!(b.first_name, None);
        assert_eq!(b.email, None);
        assert_eq!(b.owner_id, None);
        assert!(rows[2].0.is_err());
        let d = rows[3].0.as_ref().unwrap();
        assert_eq!(d.first_name.as_deref(), Some("Multi\nLine"));
        assert_eq!(d.last_name.as_deref(), Some("Quote \"q\""));
    }

    #[test]
    fn parses_in_any_chunking() {
        for size in [1usize, 2, 3, 7, 64, 4096] {
            let mut p = CsvLeadParser::new();
            let mut rows = Vec::new();
            for chunk in CSV.as_bytes().chunks(size) {
                p.feed(chunk, &mut |r| rows.push(r));
            }
            p.finish(&mut |r| rows.push(r));
            assert_eq!(p.header().unwrap()[0], "id");
            check(rows);
        }
    }

    #[test]
    fn reader_adapter() {
        let rows: Vec<LeadRecord> = bulk_csv_leads_from_reader(CSV.as_bytes()).collect::<Result<_, _>>().unwrap();
        check(rows);
    }

    #[tokio::test]
    async fn stream_adapter() {
        let chunks: Vec<salesync_core::Result<Vec<u8>>> = CSV.as_bytes().chunks(5).map(|c| Ok(c.to_vec())).collect();
        let rows: Vec<LeadRecord> = bulk_csv_leads(futures::stream::iter(chunks)).try_collect().await.unwrap();
        check(rows);
    }

    #[test]
    fn an_overlong_row_is_one_record_error_and_memory_stays_bounded() {
        let mut p = CsvLeadParser::new();
        let mut rows = Vec::new();
        p.feed(b"id,company\n1,", &mut |r| rows.push(r));
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..(MAX_ROW_BYTES / chunk.len() + 2) {
            p.feed(&chunk, &mut |r| rows.push(r));
        }
        p.feed(b"\n2,Acme\n", &mut |r| rows.push(r));
        p.finish(&mut |r| rows.push(r));
        assert!(p.out.len() <= MAX_ROW_BYTES);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let e = rows[0].0.as_ref().unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        assert_eq!(rows[1].0.as_ref().unwrap().company.as_deref(), Some("Acme"));
    }

    /// Regression: a BOM split over the first chunks stayed in the header, where it turned a
    /// quoted first name (`"id"`) into a literal one, so no row had an id.
    #[test]
    fn a_bom_split_over_chunks_is_stripped() {
        let csv = "\u{feff}\"id\",company\n1,x\n";
        let whole = bulk_csv_leads_from_reader(csv.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(whole[0].0.as_ref().unwrap().id, 1);
        for size in [1, 2] {
            let mut p = CsvLeadParser::new();
            let mut rows = Vec::new();
            for chunk in csv.as_bytes().chunks(size) {
                p.feed(chunk, &mut |r| rows.push(r));
            }
            p.finish(&mut |r| rows.push(r));
            assert_eq!(rows, whole, "chunks of {size}");
        }
    }

    #[test]
    fn long_fields_grow_buffers() {
        let long = "x".repeat(10_000);
        let csv = format!("id,company\n7,{long}\n");
        let rows: Vec<LeadRecord> = bulk_csv_leads_from_reader(csv.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(rows[0].0.as_ref().unwrap().company.as_deref(), Some(long.as_str()));
    }
}
