//! Bulk export CSV through both readers: the Marketo connector's push parser
//! (`CsvLeadParser`) and the engine's offset-tracking reader (`CsvRows` + `lead_from_row`).
//!
//! Properties: nothing panics; each reader gives the same rows however the file is cut into
//! chunks; every row offset the engine reports is a resume point (reading from it gives the
//! rows after it); where the engine reads the file, both readers map the same leads.
#![no_main]

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use salesync_core::mapping::LeadRecord;
use salesync_engine::csv_stream::{CsvRow, CsvRows, lead_from_row};
use salesync_marketo::CsvLeadParser;

fn chunks<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if sizes.is_empty() { rest.len() } else { usize::from(sizes[i % sizes.len()]).max(1) };
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

fn marketo(parts: &[&[u8]]) -> Vec<LeadRecord> {
    let mut p = CsvLeadParser::new();
    let mut rows = Vec::new();
    for c in parts {
        p.feed(c, &mut |r| rows.push(r));
    }
    p.finish(&mut |r| rows.push(r));
    rows
}

/// The engine's rows, or the error text that stopped them.
fn engine(parts: &[&[u8]], base: u64) -> (Vec<CsvRow>, Option<String>) {
    let v: Vec<salesync_core::Result<Vec<u8>>> = parts.iter().map(|c| Ok(c.to_vec())).collect();
    let mut r = CsvRows::new(futures::stream::iter(v).boxed(), base);
    let mut rows = Vec::new();
    loop {
        match futures::executor::block_on(r.next_row()) {
            Ok(Some(row)) => rows.push(row),
            Ok(None) => return (rows, None),
            Err(e) => return (rows, Some(format!("{e:?}"))),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, file) = match data.split_first() {
        Some((n, rest)) => rest.split_at(usize::from(*n % 4).min(rest.len())),
        None => return,
    };
    let whole: Vec<&[u8]> = if file.is_empty() { Vec::new() } else { vec![file] };
    let cut = chunks(file, sizes);
    let bytes: Vec<&[u8]> = file.chunks(1).collect();

    // Marketo connector parser: chunking does not matter.
    let m = marketo(&whole);
    assert_eq!(m, marketo(&cut));
    assert_eq!(m, marketo(&bytes));

    // Engine reader: chunking does not change the rows (offsets may differ by the blank lines a
    // row's end takes along, but each must be a resume point: checked below).
    let fields = |rows: &[CsvRow]| rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>();
    let (rows, err) = engine(&whole, 0);
    let (rows_cut, err_cut) = engine(&cut, 0);
    let (rows_bytes, err_bytes) = engine(&bytes, 0);
    assert_eq!(err.is_some(), err_cut.is_some(), "{err:?} / {err_cut:?}");
    assert_eq!(err.is_some(), err_bytes.is_some(), "{err:?} / {err_bytes:?}");
    if err.is_some() {
        return;
    }
    assert_eq!(fields(&rows), fields(&rows_cut), "chunks {:?}", cut.iter().map(|c| c.len()).collect::<Vec<_>>());
    assert_eq!(fields(&rows), fields(&rows_bytes), "one-byte chunks");

    // Every reported offset is a resume point.
    for set in [&rows, &rows_cut, &rows_bytes] {
        for (k, row) in set.iter().enumerate().take(6) {
            let at = usize::try_from(row.end_offset).unwrap();
            assert!(at <= file.len());
            let rest = &file[at..];
            let parts: Vec<&[u8]> = if rest.is_empty() { Vec::new() } else { vec![rest] };
            let (after, e) = engine(&parts, row.end_offset);
            assert!(e.is_none());
            assert_eq!(fields(&after), fields(&set[k + 1..]), "resuming at {at}");
        }
    }

    // Both readers agree on the leads.
    if let Some((header, data_rows)) = rows.split_first() {
        let leads: Vec<LeadRecord> =
            data_rows.iter().map(|r| LeadRecord(lead_from_row(&header.fields, &r.fields))).collect();
        assert_eq!(leads, m, "engine and connector read the file differently");
    }
});
