//! Salesforce record ids: validated, case-safe, typed by key prefix.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::IdError;

const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The Salesforce object an id's 3-character key prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SalesforceObject {
    /// `00Q`
    Lead,
    /// `003`
    Contact,
    /// `001`
    Account,
    /// `006`
    Opportunity,
    /// `005`
    User,
    /// `00T`
    Task,
    /// `00G` (a queue or public group; lead owners may be queues)
    Group,
    /// `00K`
    OpportunityContactRole,
    /// Any other prefix.
    Other,
}

impl SalesforceObject {
    /// The object for a key prefix.
    pub fn from_prefix(prefix: &str) -> Self {
        match prefix {
            "00Q" => Self::Lead,
            "003" => Self::Contact,
            "001" => Self::Account,
            "006" => Self::Opportunity,
            "005" => Self::User,
            "00T" => Self::Task,
            "00G" => Self::Group,
            "00K" => Self::OpportunityContactRole,
            _ => Self::Other,
        }
    }
}

/// A Salesforce record id, always held in its 18-character case-safe form.
///
/// Parsing accepts the 15-character case-sensitive form (and derives the suffix) or the
/// 18-character form (whose suffix is checked). Two ids are equal when they name the same record.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SalesforceId([u8; 18]);

impl SalesforceId {
    /// Parses a 15- or 18-character id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() != 15 && b.len() != 18 {
            return Err(IdError::Length { value: s.chars().take(40).collect(), len: s.chars().count() });
        }
        if let Some(pos) = b.iter().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(IdError::Character { value: s.to_string(), position: pos });
        }
        let mut out = [0u8; 18];
        out[..15].copy_from_slice(&b[..15]);
        let suffix = case_suffix(&b[..15]);
        if b.len() == 18 && !b[15..].eq_ignore_ascii_case(&suffix) {
            return Err(IdError::Checksum { value: s.to_string(), expected: String::from_utf8_lossy(&suffix).into() });
        }
        out[15..].copy_from_slice(&suffix);
        Ok(Self(out))
    }

    /// The 18-character case-safe form.
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The 15-character case-sensitive form.
    pub fn as_15(&self) -> &str {
        &self.as_str()[..15]
    }

    /// The 3-character key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.as_str()[..3]
    }

    /// The object type the prefix names.
    pub fn object(&self) -> SalesforceObject {
        SalesforceObject::from_prefix(self.key_prefix())
    }
}

/// The 3-character case-safe suffix of a 15-character id.
fn case_suffix(id15: &[u8]) -> [u8; 3] {
    let mut out = [0u8; 3];
    for (chunk, slot) in out.iter_mut().enumerate() {
        let mut v = 0usize;
        for bit in 0..5 {
            if id15[chunk * 5 + bit].is_ascii_uppercase() {
                v |= 1 << bit;
            }
        }
        *slot = SUFFIX_ALPHABET[v];
    }
    out
}

impl fmt::Debug for SalesforceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SalesforceId({})", self.as_str())
    }
}

impl fmt::Display for SalesforceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SalesforceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SalesforceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SalesforceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_to_eighteen_known_pairs() {
        // Published pairs (Salesforce help / community answers).
        for (short, long) in [("001A0000006Vm9r", "001A0000006Vm9rIAC"), ("003d000000Yp8Uz", "003d000000Yp8UzAAJ")] {
            let id = SalesforceId::parse(short).unwrap();
            assert_eq!(id.as_str(), long);
            assert_eq!(id.as_15(), short);
            assert_eq!(SalesforceId::parse(long).unwrap(), id);
        }
    }

    #[test]
    fn suffix_is_case_insensitive_on_input_but_body_is_not() {
        let a = SalesforceId::parse("001A0000006Vm9riac").unwrap();
        assert_eq!(a.as_str(), "001A0000006Vm9rIAC");
        assert_ne!(SalesforceId::parse("001a0000006Vm9r").unwrap(), a);
    }

    #[test]
    fn rejects_bad_ids_with_reasons() {
        assert!(matches!(SalesforceId::parse("001A0000006Vm9"), Err(IdError::Length { len: 14, .. })));
        assert!(matches!(SalesforceId::parse("001A0000006Vm9-"), Err(IdError::Character { position: 14, .. })));
        assert!(matches!(SalesforceId::parse("001A0000006Vm9rAAA"), Err(IdError::Checksum { .. })));
        assert!(SalesforceId::parse("").is_err());
    }

    #[test]
    fn prefix_names_the_object() {
        let cases = [
            ("00Q5g00000QwErT", SalesforceObject::Lead),
            ("0035g00000XyZaB", SalesforceObject::Contact),
            ("0015g00000AbCdE", SalesforceObject::Account),
            ("0065g00000AbCdE", SalesforceObject::Opportunity),
            ("0055g00000AbCdE", SalesforceObject::User),
            ("00T5g00000AbCdE", SalesforceObject::Task),
            ("00G5g00000AbCdE", SalesforceObject::Group),
            ("a005g00000AbCdE", SalesforceObject::Other),
        ];
        for (id, obj) in cases {
            assert_eq!(SalesforceId::parse(id).unwrap().object(), obj, "{id}");
        }
    }

    #[test]
    fn serde_round_trip_uses_18_chars() {
        let id = SalesforceId::parse("003d000000Yp8Uz").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"003d000000Yp8UzAAJ\"");
        assert_eq!(serde_json::from_str::<SalesforceId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SalesforceId>("\"nope\"").is_err());
    }
}
