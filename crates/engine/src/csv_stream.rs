//! A streaming CSV reader over a bulk export file.
//!
//! The bytes go through `salesync_core::bulk_csv::RecordReader` (the one bulk CSV reader, which
//! the Marketo connector's lead parser uses too) as the chunks arrive; each row comes with the
//! absolute byte offset where it ends, so a resumed download can start right after the last
//! applied row.

use std::collections::VecDeque;

use futures::StreamExt;
use futures::stream::BoxStream;
use salesync_core::bulk_csv::{Item, RecordReader, header_name};
use salesync_core::error::RecordError;
use salesync_core::mapping::MarketoLead;
use salesync_core::ports::marketo::bytes_stream::ByteStream;

/// One CSV row and the absolute byte offset just after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    /// Field values.
    pub fields: Vec<String>,
    /// Offset in the file right after this row (and its line end).
    pub end_offset: u64,
}

/// Reads CSV rows from a byte stream that starts at `base_offset` of the file.
pub struct CsvRows {
    stream: ByteStream,
    reader: RecordReader,
    ready: VecDeque<Result<CsvRow, CsvError>>,
    /// The byte stream ended (and the reader was told), or the file was refused.
    done: bool,
}

impl std::fmt::Debug for CsvRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvRows")
            .field("offset", &self.reader.offset())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

/// A CSV problem: the file is not readable as CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CsvError(pub String);

impl CsvRows {
    /// A reader over `stream`, whose first byte is at `base_offset` of the file.
    pub fn new(stream: ByteStream, base_offset: u64) -> Self {
        Self { stream, reader: RecordReader::at_offset(base_offset), ready: VecDeque::new(), done: false }
    }

    /// The next row, `Ok(None)` at the end of the file. Empty lines are skipped. After a
    /// [`RowError::Csv`] the file is refused: later calls answer `Ok(None)`.
    pub async fn next_row(&mut self) -> Result<Option<CsvRow>, RowError> {
        loop {
            match self.ready.pop_front() {
                Some(Ok(row)) => return Ok(Some(row)),
                Some(Err(e)) => {
                    self.ready.clear();
                    self.done = true;
                    return Err(RowError::Csv(e));
                }
                None if self.done => return Ok(None),
                None => {}
            }
            let ready = &mut self.ready;
            let mut sink = |item: Item<'_>| match item {
                Item::Record(rec) => {
                    ready.push_back(Ok(CsvRow { fields: rec.to_strings(), end_offset: rec.end_offset() }))
                }
                Item::TooLong(e) => ready.push_back(Err(CsvError(e.to_string()))),
            };
            match self.stream.next().await {
                Some(Ok(chunk)) => self.reader.feed(&chunk, &mut sink),
                Some(Err(e)) => return Err(RowError::Port(e)),
                None => {
                    // The end of the file: a last row without a line end is complete now.
                    self.done = true;
                    self.reader.finish(&mut sink);
                }
            }
        }
    }
}

/// Why the next row could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// The download failed.
    #[error(transparent)]
    Port(salesync_core::Error),
    /// The bytes are not CSV.
    #[error("unreadable CSV: {0}")]
    Csv(CsvError),
}

/// Rows of a bulk export file, each with the byte offset just after it.
pub type RowStream = BoxStream<'static, Result<CsvRow, RowError>>;

/// Turns a bulk export file, downloaded from byte `offset` on, into rows. Read from offset 0,
/// the first row is the header (Marketo REST field names); from a later offset (a resumed
/// download, always at a row boundary the parser reported) there is no header.
///
/// The default, [`CsvExportParser`], reads Marketo's CSV; hosts whose connector asks for
/// another format plug their own into
/// [`EngineSettings::export_parser`](crate::EngineSettings::export_parser).
pub trait ExportParser: Send + Sync + 'static {
    /// The rows of `file`, whose first byte is at `offset` of the whole file.
    fn rows(&self, file: ByteStream, offset: u64) -> RowStream;
}

/// The default [`ExportParser`]: streaming CSV, one row at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvExportParser;

impl ExportParser for CsvExportParser {
    fn rows(&self, file: ByteStream, offset: u64) -> RowStream {
        futures::stream::unfold(Some(CsvRows::new(file, offset)), |state| async move {
            let mut rows = state?;
            match rows.next_row().await {
                Ok(Some(row)) => Some((Ok(row), Some(rows))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

/// Maps a bulk export row to a lead: header names are REST names, literal `null` and empty
/// values are absent, unknown columns are ignored. Header names are read as the connector's lead
/// parser reads them ([`header_name`]): trimmed, and the first without a UTF-8 BOM (one that
/// follows blank lines is still in it).
pub fn lead_from_row(header: &[String], row: &[String]) -> Result<MarketoLead, RecordError> {
    let names = header.iter().enumerate().map(|(i, h)| header_name(i, h));
    MarketoLead::from_text_fields(names.zip(row.iter().map(String::as_str)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn chunks(parts: &[&str]) -> ByteStream {
        let v: Vec<salesync_core::Result<Vec<u8>>> = parts.iter().map(|p| Ok(p.as_bytes().to_vec())).collect();
        stream::iter(v).boxed()
    }

    async fn all(mut r: CsvRows) -> Vec<CsvRow> {
        let mut out = Vec::new();
        while let Some(row) = r.next_row().await.unwrap() {
            out.push(row);
        }
        out
    }

    #[tokio::test]
    async fn rows_split_across_chunks_and_quoted_newlines() {
        let file = "id,firstName,title\n1,\"Zo\"\"ë\",\"multi\nline\"\n2,null,CTO";
        for split in 1..file.len() {
            if !file.is_char_boundary(split) {
                continue;
            }
            let (a, b) = file.split_at(split);
            let rows = all(CsvRows::new(chunks(&[a, b]), 0)).await;
            assert_eq!(rows.len(), 3, "split at {split}");
            assert_eq!(rows[0].fields, vec!["id", "firstName", "title"]);
            assert_eq!(rows[1].fields, vec!["1", "Zo\"ë", "multi\nline"]);
            assert_eq!(rows[2].fields, vec!["2", "null", "CTO"]);
            assert_eq!(rows[0].end_offset, 19);
            assert_eq!(rows[2].end_offset, file.len() as u64);
        }
    }

    #[tokio::test]
    async fn offsets_are_absolute_and_crlf_and_blank_lines_are_fine() {
        let rows = all(CsvRows::new(chunks(&["5,a\r\n", "\r\n6,b\r\n"]), 100)).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].fields, vec!["5", "a"]);
        assert_eq!(rows[0].end_offset, 105);
        assert_eq!(rows[1].fields, vec!["6", "b"]);
        assert_eq!(rows[1].end_offset, 112);
    }

    #[tokio::test]
    async fn the_default_parser_streams_rows_and_stops_after_an_error() {
        let rows: Vec<_> = CsvExportParser.rows(chunks(&["a,b\n1,2\n"]), 0).collect().await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].as_ref().unwrap().fields, vec!["1", "2"]);
        let failing: ByteStream = stream::iter(vec![
            Ok(b"a\n".to_vec()),
            Err(salesync_core::Error::Protocol {
                service: salesync_core::error::Service::Marketo,
                detail: "cut".into(),
            }),
            Ok(b"b\n".to_vec()),
        ])
        .boxed();
        let rows: Vec<_> = CsvExportParser.rows(failing, 0).collect().await;
        assert_eq!(rows.len(), 2);
        assert!(matches!(rows[1], Err(RowError::Port(_))));
    }

    /// Regression (fuzz/bulk_csv): a quote inside an unquoted field is a literal character for
    /// `csv`, but the boundary scanner took it for an opening quote, so where a chunk ended decided
    /// whether a later quoted newline split its row in two.
    #[tokio::test]
    async fn stray_quotes_do_not_make_rows_depend_on_chunking() {
        let file = "id,company\n1,Joe \"Best\n2,\"x\ny\",\"a\"b\n3,z\n";
        let want: Vec<Vec<&str>> =
            vec![vec!["id", "company"], vec!["1", "Joe \"Best"], vec!["2", "x\ny", "ab"], vec!["3", "z"]];
        for split in 1..file.len() {
            let (a, b) = file.split_at(split);
            let rows = all(CsvRows::new(chunks(&[a, b]), 0)).await;
            let got: Vec<Vec<&str>> = rows.iter().map(|r| r.fields.iter().map(String::as_str).collect()).collect();
            assert_eq!(got, want, "split at {split}");
        }
    }

    /// Regression (fuzz/bulk_csv): `csv` stripped a BOM at the start of every parsed prefix, so a
    /// row starting with one lost it or kept it depending on where chunks ended. Only the file's
    /// own BOM is dropped, and a quote right after it still opens a quoted field.
    #[tokio::test]
    async fn only_the_files_bom_is_stripped_whatever_the_chunking() {
        let file = "\u{feff}\"id\",company\n1,\"a\nb\"\n\u{feff}\n2,c\n";
        let want: Vec<Vec<&str>> = vec![vec!["id", "company"], vec!["1", "a\nb"], vec!["\u{feff}"], vec!["2", "c"]];
        for split in 1..file.len() {
            let (a, b) = file.as_bytes().split_at(split);
            let parts: Vec<salesync_core::Result<Vec<u8>>> = vec![Ok(a.to_vec()), Ok(b.to_vec())];
            let rows = all(CsvRows::new(stream::iter(parts).boxed(), 0)).await;
            let got: Vec<Vec<&str>> = rows.iter().map(|r| r.fields.iter().map(String::as_str).collect()).collect();
            assert_eq!(got, want, "split at {split}");
        }
    }

    /// Regression (fuzz/bulk_csv): at the end of the file a tail of ASCII whitespace was dropped,
    /// while the same bytes earlier in the file were a row, so resuming at a reported offset could
    /// lose the last row.
    #[tokio::test]
    async fn a_whitespace_tail_is_read_alike_from_any_offset() {
        let whole = all(CsvRows::new(chunks(&["id\r1\r\u{c} \r"]), 0)).await;
        let got: Vec<Vec<&str>> = whole.iter().map(|r| r.fields.iter().map(String::as_str).collect()).collect();
        assert_eq!(got, vec![vec!["id"], vec!["1"], vec!["\u{c} "]]);
        let resumed = all(CsvRows::new(chunks(&["\u{c} \r"]), whole[1].end_offset)).await;
        assert_eq!(resumed, whole[2..]);
        assert!(all(CsvRows::new(chunks(&["1\n\r\n\n"]), 0)).await.len() == 1);
    }

    #[tokio::test]
    async fn a_row_without_end_is_refused_not_buffered_whole() {
        let chunk = vec![b'x'; 1024 * 1024];
        let endless = stream::iter(std::iter::repeat_with(move || Ok(chunk.clone()))).boxed();
        let mut rows = CsvRows::new(endless, 0);
        match rows.next_row().await {
            Err(RowError::Csv(CsvError(m))) => assert!(m.contains("longer than"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn row_to_lead_treats_null_as_absent() {
        let header: Vec<String> = ["id", "firstName", "sfdcType", "sfdcLeadOwnerId", "extra"].map(String::from).into();
        let row: Vec<String> = ["7", "null", "Lead", "0055g00000AbCdE", "x"].map(String::from).into();
        let lead = lead_from_row(&header, &row).unwrap();
        assert_eq!(lead.id, 7);
        assert_eq!(lead.first_name, None);
        // Regression (fuzz/bulk_csv): padded header names map as the connector's reader maps them.
        let padded: Vec<String> = [" id", "firstName\u{b}"].map(String::from).into();
        let lead = lead_from_row(&padded, &["9".to_string(), "Ada".to_string()]).unwrap();
        assert_eq!((lead.id, lead.first_name.as_deref()), (9, Some("Ada")));
        let bom_after_blank_lines: Vec<String> = ["\u{feff}id".to_string()].into();
        assert_eq!(lead_from_row(&bom_after_blank_lines, &["9".to_string()]).unwrap().id, 9);
        let bad: Vec<String> = ["8", "A", "Lead", "nope"].map(String::from).into();
        let err = lead_from_row(&header, &bad).unwrap_err();
        assert_eq!(err.record_id, Some(8));
        assert_eq!(err.field, "sfdcLeadOwnerId");
    }
}
