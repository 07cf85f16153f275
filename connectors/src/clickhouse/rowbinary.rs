//! RowBinary encoding of metric rows (ClickHouse's native row format, the
//! same the `clickhouse` crate's typed inserts send). Rows come from
//! [`revpulse_pipelines::row`], whose column lists are generic over tables.

use revpulse_pipelines::row::{Cell, RowKey, RowVals};

fn leb128(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

fn string(buf: &mut Vec<u8>, s: &str) {
    leb128(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

fn cell(buf: &mut Vec<u8>, c: &Cell) {
    match c {
        Cell::Str(s) => string(buf, s),
        // `Date` is UInt16 days; the event model keeps dates in 1970..2105.
        Cell::Date(d) => buf.extend_from_slice(&(u16::try_from(*d).unwrap_or(0)).to_le_bytes()),
        Cell::Minute(m) => buf.extend_from_slice(&m.to_le_bytes()),
        Cell::F64(v) => buf.extend_from_slice(&v.0.to_le_bytes()),
        Cell::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Cell::NullF64(None) => buf.push(1),
        Cell::NullF64(Some(v)) => {
            buf.push(0);
            buf.extend_from_slice(&v.0.to_le_bytes());
        }
        Cell::NullU64(None) | Cell::NullSecond(None) => buf.push(1),
        Cell::NullU64(Some(v)) => {
            buf.push(0);
            buf.extend_from_slice(&v.to_le_bytes());
        }
        Cell::NullSecond(Some(v)) => {
            buf.push(0);
            buf.extend_from_slice(&v.to_le_bytes());
        }
        Cell::StrArray(v) => {
            leb128(buf, v.len());
            for s in v {
                string(buf, s);
            }
        }
    }
}

/// Appends one row: key columns, value columns (zeros when deleted),
/// `version`, `deleted`.
pub fn encode_row(buf: &mut Vec<u8>, key: &RowKey, vals: Option<&RowVals>, version: u64) {
    for c in &key.key {
        cell(buf, c);
    }
    match vals {
        Some(vals) => vals.iter().for_each(|c| cell(buf, c)),
        None => key.table.value_columns().iter().for_each(|(_, ty)| cell(buf, &Cell::zero(*ty))),
    }
    buf.extend_from_slice(&version.to_le_bytes());
    buf.push(u8::from(vals.is_none()));
}

/// The column list of an insert, in encoding order.
pub fn columns(table: revpulse_pipelines::row::Table) -> String {
    let names: Vec<&str> = table.key_columns().iter().chain(table.value_columns()).map(|(n, _)| *n).collect();
    format!("{}, version, deleted", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_lengths() {
        let mut b = Vec::new();
        leb128(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
    }
}
