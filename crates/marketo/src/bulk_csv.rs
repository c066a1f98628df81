//! Streaming parse of bulk lead export CSV files into [`MarketoLead`](salesync_core::mapping::MarketoLead)s.
//!
//! The header row holds REST field names; the literal `null` (and the empty string) means absent.
//! Records are read by `salesync_core::bulk_csv::RecordReader` (the one bulk CSV reader, which
//! the engine's resumable row stream uses too) over the chunks as they arrive: the file is never
//! held in memory, only the current row.

use std::collections::VecDeque;
use std::io::Read;

use futures::{Stream, StreamExt};
use salesync_core::bulk_csv::{Item, RecordReader, header_name};
use salesync_core::error::RecordError;
use salesync_core::error::RecordProblem;
use salesync_core::mapping::{LeadRecord, MarketoLead};

use crate::error::MkError;

/// A push parser: feed it chunks, collect one [`LeadRecord`] per data row.
///
/// Memory stays bounded whatever the input: a row longer than 16 MiB or with more than 2^20
/// fields (a file without newlines, an unterminated quote) is dropped as it streams by and
/// reported as one record error.
#[derive(Debug, Default)]
pub struct CsvLeadParser {
    reader: RecordReader,
    header: Option<Vec<String>>,
}

impl CsvLeadParser {
    /// A parser expecting a header row first.
    pub fn new() -> Self {
        Self::default()
    }

    /// The header's field names, once read.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// Feeds a chunk; complete rows are pushed to `sink`.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl FnMut(LeadRecord)) {
        let header = &mut self.header;
        self.reader.feed(chunk, &mut |item| on_item(header, item, sink));
    }

    /// Signals the end of the file; a last row without a trailing newline is pushed to `sink`.
    pub fn finish(&mut self, sink: &mut impl FnMut(LeadRecord)) {
        let header = &mut self.header;
        self.reader.finish(&mut |item| on_item(header, item, sink));
    }

    /// Bytes the parser holds for the row being read.
    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.reader.buffered_capacity()
    }
}

/// The first record is the header; each later one a lead.
fn on_item(header: &mut Option<Vec<String>>, item: Item<'_>, sink: &mut impl FnMut(LeadRecord)) {
    match (header.as_ref(), item) {
        (None, Item::Record(rec)) => {
            let names = rec.iter().enumerate().map(|(i, f)| header_name(i, &String::from_utf8_lossy(f)).to_string());
            *header = Some(names.collect());
        }
        // Without a usable header no row can be read: each reports a missing id.
        (None, Item::TooLong(_)) => *header = Some(Vec::new()),
        (Some(names), Item::Record(rec)) => {
            let values: Vec<_> = rec.iter().map(String::from_utf8_lossy).collect();
            let pairs = names.iter().map(String::as_str).zip(values.iter().map(|v| v.as_ref()));
            sink(LeadRecord(MarketoLead::from_text_fields(pairs)));
        }
        (Some(_), Item::TooLong(e)) => sink(LeadRecord(Err(RecordError {
            record_id: None,
            field: "(record)".into(),
            value: None,
            problem: RecordProblem::Invalid(format!("bulk CSV row: {e}")),
        }))),
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
    use salesync_core::bulk_csv::MAX_RECORD_BYTES;

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
        for _ in 0..(MAX_RECORD_BYTES / chunk.len() + 2) {
            p.feed(&chunk, &mut |r| rows.push(r));
        }
        p.feed(b"\n2,Acme\n", &mut |r| rows.push(r));
        p.finish(&mut |r| rows.push(r));
        assert!(p.buffered_capacity() <= MAX_RECORD_BYTES + 4096);
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
