//! The two `pgoutput` messages change capture needs — Relation and Insert —
//! decoded from the bytes the replication client forwards (protocol version
//! 1, text format). Begin and Commit are framed by the client itself.

use std::fmt;

/// A decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Describes a table; sent before its first change in a session and after
    /// every change of its shape.
    Relation(Relation),
    /// A new row: the text of each column, `None` for NULL.
    Insert {
        relation_id: u32,
        values: Vec<Option<String>>,
    },
    /// Anything else (Update, Delete, Truncate, Type, Origin): not captured,
    /// and skipped by the reader.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed pgoutput message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!(
                "needed {n} bytes, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn cstring(&mut self) -> Result<String, DecodeError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let text = std::str::from_utf8(&self.0[..end])
            .map_err(|e| DecodeError(format!("string is not UTF-8: {e}")))?
            .to_owned();
        self.0 = &self.0[end + 1..];
        Ok(text)
    }
}

/// Decodes one message.
pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
    let mut cursor = Cursor(data);
    match cursor.u8()? {
        b'R' => {
            let id = cursor.u32()?;
            let namespace = cursor.cstring()?;
            let name = cursor.cstring()?;
            let _replica_identity = cursor.u8()?;
            let count = cursor.i16()?;
            let mut columns = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            for _ in 0..count {
                let _flags = cursor.u8()?;
                columns.push(cursor.cstring()?);
                let _type_oid = cursor.u32()?;
                let _type_modifier = cursor.i32()?;
            }
            Ok(Message::Relation(Relation {
                id,
                namespace,
                name,
                columns,
            }))
        }
        b'I' => {
            let relation_id = cursor.u32()?;
            let marker = cursor.u8()?;
            if marker != b'N' {
                return Err(DecodeError(format!("insert tuple marker {marker:#x}")));
            }
            let count = cursor.i16()?;
            let mut values = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            for _ in 0..count {
                values.push(match cursor.u8()? {
                    b'n' => None,
                    b't' => {
                        let len = usize::try_from(cursor.i32()?)
                            .map_err(|_| DecodeError("negative value length".into()))?;
                        let bytes = cursor.take(len)?;
                        Some(
                            String::from_utf8(bytes.to_vec())
                                .map_err(|e| DecodeError(format!("value is not UTF-8: {e}")))?,
                        )
                    }
                    other => {
                        return Err(DecodeError(format!(
                            "column kind {:?} in an insert (text format expected)",
                            char::from(other)
                        )));
                    }
                });
            }
            Ok(Message::Insert {
                relation_id,
                values,
            })
        }
        other => Ok(Message::Other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    #[test]
    fn a_relation_message_names_its_columns() {
        let mut data = vec![b'R'];
        data.extend_from_slice(&16_384_u32.to_be_bytes());
        cstr(&mut data, "public");
        cstr(&mut data, "orders");
        data.push(b'd');
        data.extend_from_slice(&2_i16.to_be_bytes());
        for (name, oid) in [("id", 2950_u32), ("total_minor", 20)] {
            data.push(1);
            cstr(&mut data, name);
            data.extend_from_slice(&oid.to_be_bytes());
            data.extend_from_slice(&(-1_i32).to_be_bytes());
        }
        assert_eq!(
            decode(&data).unwrap(),
            Message::Relation(Relation {
                id: 16_384,
                namespace: "public".into(),
                name: "orders".into(),
                columns: vec!["id".into(), "total_minor".into()],
            })
        );
    }

    #[test]
    fn an_insert_message_carries_text_and_nulls() {
        let mut data = vec![b'I'];
        data.extend_from_slice(&7_u32.to_be_bytes());
        data.push(b'N');
        data.extend_from_slice(&2_i16.to_be_bytes());
        data.push(b't');
        data.extend_from_slice(&4_i32.to_be_bytes());
        data.extend_from_slice(b"2599");
        data.push(b'n');
        assert_eq!(
            decode(&data).unwrap(),
            Message::Insert {
                relation_id: 7,
                values: vec![Some("2599".into()), None],
            }
        );
    }

    /// An UPDATE (sent only by a publication widened past inserts) is no
    /// message of the capture: skipped, whatever its tuples.
    #[test]
    fn an_update_message_is_not_captured() {
        let mut data = vec![b'U'];
        data.extend_from_slice(&7_u32.to_be_bytes());
        data.push(b'N');
        data.extend_from_slice(&3_i16.to_be_bytes());
        data.push(b't');
        data.extend_from_slice(&9_i32.to_be_bytes());
        data.extend_from_slice(b"cancelled");
        data.push(b'u');
        data.push(b'n');
        assert_eq!(decode(&data).unwrap(), Message::Other(b'U'));
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        assert!(decode(&[b'I', 0, 0]).is_err());
        assert!(decode(&[b'R', 0, 0, 0, 1, b'x']).is_err());
        assert_eq!(decode(b"D").unwrap(), Message::Other(b'D'));
    }
}
