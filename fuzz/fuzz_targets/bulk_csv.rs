//! Bulk export CSV through the one record reader (`salesync_core::bulk_csv::RecordReader`) and
//! the two readers built on it: the Marketo connector's push parser (`CsvLeadParser`) and the
//! engine's offset-tracking row stream (`CsvRows` + `lead_from_row`).
//!
//! Properties: nothing panics; the record reader gives the same records, end offsets and limit
//! reports however the file is cut into chunks; every end offset is a resume point (reading from
//! it gives the records after it); the engine's rows are the reader's records; both the
//! connector and the engine map the same leads.
#![no_main]

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use salesync_core::bulk_csv::{Item, RecordReader};
use salesync_core::mapping::LeadRecord;
use salesync_engine::{CsvRow, CsvRows, lead_from_row};
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

/// What the record reader handed out: `Ok((fields, end offset))` or the limit report.
type Got = Result<(Vec<Vec<u8>>, u64), String>;

fn records(parts: &[&[u8]], offset: u64) -> Vec<Got> {
    let mut r = RecordReader::at_offset(offset);
    let mut got = Vec::new();
    let mut sink = |item: Item<'_>| {
        got.push(match item {
            Item::Record(rec) => Ok((rec.iter().map(<[u8]>::to_vec).collect(), rec.end_offset())),
            Item::TooLong(e) => Err(e.to_string()),
        })
    };
    for c in parts {
        r.feed(c, &mut sink);
    }
    r.finish(&mut sink);
    got
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

    // The record reader: chunking does not matter, offsets included.
    let recs = records(&whole, 0);
    assert_eq!(recs, records(&cut, 0), "chunks {:?}", cut.iter().map(|c| c.len()).collect::<Vec<_>>());
    assert_eq!(recs, records(&bytes, 0), "one-byte chunks");

    // Every reported offset is a resume point.
    for (k, rec) in recs.iter().enumerate().take(8) {
        let Ok((_, end)) = rec else { continue };
        let at = usize::try_from(*end).unwrap();
        assert!(at <= file.len());
        let rest = &file[at..];
        let parts: Vec<&[u8]> = if rest.is_empty() { Vec::new() } else { vec![rest] };
        assert_eq!(records(&parts, *end), recs[k + 1..], "resuming at {at}");
        assert_eq!(records(&chunks(rest, sizes), *end), recs[k + 1..], "resuming at {at}, cut");
    }

    // The connector's parser: chunking does not matter.
    let m = marketo(&whole);
    assert_eq!(m, marketo(&cut));
    assert_eq!(m, marketo(&bytes));

    // The engine's rows are the reader's records, up to a refused record.
    let (rows, err) = engine(&cut, 0);
    let ok: Vec<_> = recs.iter().take_while(|r| r.is_ok()).flatten().collect();
    assert_eq!(err.is_some(), ok.len() < recs.len(), "{err:?}");
    let as_text = |(fields, end): &(Vec<Vec<u8>>, u64)| CsvRow {
        fields: fields.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect(),
        end_offset: *end,
    };
    assert_eq!(rows, ok.iter().copied().map(as_text).collect::<Vec<_>>());
    if err.is_some() {
        return;
    }

    // Both map the same leads.
    if let Some((header, data_rows)) = rows.split_first() {
        let leads: Vec<LeadRecord> =
            data_rows.iter().map(|r| LeadRecord(lead_from_row(&header.fields, &r.fields))).collect();
        assert_eq!(leads, m, "engine and connector read the file differently");
    }
});
