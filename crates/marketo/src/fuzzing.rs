//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not a stable API): the
//! connector's response decoding, run on bytes without any HTTP.

use salesync_core::mapping::LeadRecord;
use salesync_core::ports::marketo::{Activity, ExportJob};

use crate::client::{Interp, interpret_json};
use crate::envelope::Envelope;
use crate::error::MkError;
use crate::wire::{WireActivity, WireExport};

/// How one response was understood by the request loop.
#[derive(Debug)]
pub enum Decoded<T> {
    /// A successful envelope's records (after the connector's per-record mapping).
    Records(Vec<T>),
    /// An error the loop would act on (retry, re-authenticate or fail) with its code.
    Act {
        /// The Marketo error code, or the HTTP status when the body has none.
        code: String,
        /// The message.
        message: String,
    },
    /// A typed failure.
    Failed(salesync_core::Error),
}

fn decode<W: serde::de::DeserializeOwned, T>(
    status: u16,
    body: &[u8],
    map: impl Fn(Envelope<W>) -> Result<Vec<T>, MkError>,
) -> Decoded<T> {
    match interpret_json::<W>(status, body) {
        Interp::Done(env) => match map(env) {
            Ok(v) => Decoded::Records(v),
            Err(e) => Decoded::Failed(e.into()),
        },
        Interp::Act { code, message, .. } => Decoded::Act { code, message },
        Interp::Fail(e) | Interp::Unreadable(e) => Decoded::Failed(e.into()),
    }
}

/// A Get Leads page (`/rest/v1/leads.json`) as the connector reads it.
pub fn decode_lead_page(status: u16, body: &[u8]) -> Decoded<LeadRecord> {
    decode::<LeadRecord, _>(status, body, |env| Ok(env.records()))
}

/// A Get Lead Changes / Get Lead Activities page as the connector reads it.
pub fn decode_activity_page(status: u16, body: &[u8]) -> Decoded<Activity> {
    decode::<WireActivity, _>(status, body, |env| env.records().into_iter().map(WireActivity::into_activity).collect())
}

/// A bulk export job status answer as the connector reads it.
pub fn decode_export_status(status: u16, body: &[u8]) -> Decoded<ExportJob> {
    decode::<WireExport, _>(status, body, |env| env.records().into_iter().map(|w| w.into_job(None)).collect())
}
