//! Queries of current state, generated from the row schema
//! ([`Table::key_columns`], [`Table::value_columns`]): no reader keeps a
//! column list of its own.
//!
//! Tables hold versioned upserts (SPEC §4); a key's current row is the
//! values of its greatest `version`, unless that version is a delete. The
//! `argMax … GROUP BY … HAVING` form reads it on ClickHouse 18.16 as on
//! current releases, and filters on key columns run before the grouping,
//! so a point lookup reads only its key's versions.

use revpulse_pipelines::row::{ColType, Table};

/// `name`'s value in the greatest version of its key, as `name`. A nullable
/// column goes through a tuple: `argMax` skips NULL values, so a key whose
/// newest version is NULL would read an older version's number.
pub fn latest(name: &str, ty: ColType) -> String {
    if ty.nullable() {
        format!("argMax(tuple({name}), version).1 AS {name}")
    } else {
        format!("argMax({name}, version) AS {name}")
    }
}

/// The current rows of `table` whose key columns satisfy `filter` (an SQL
/// condition with client-side `?` placeholders, or `1`), one per key, with
/// every key and value column under its own name.
pub fn current_query(table: Table, filter: &str) -> String {
    let keys: Vec<&str> = table.key_columns().iter().map(|(n, _)| *n).collect();
    let values: Vec<String> = table.value_columns().iter().map(|(n, ty)| latest(n, *ty)).collect();
    format!(
        "SELECT {k}, {v} FROM {t} WHERE {filter} GROUP BY {k} HAVING argMax(deleted, version) = 0",
        k = keys.join(", "),
        v = values.join(", "),
        t = table.name(),
    )
}

/// `SELECT <the columns of R> FROM (<current_query>)`: the row type names
/// what it reads, the schema how to read it. Append conditions on value
/// columns (`WHERE …`), `ORDER BY` and `LIMIT` to it.
pub fn select_current<R: clickhouse::Row>(table: Table, filter: &str) -> String {
    debug_assert!(
        R::COLUMN_NAMES.iter().all(|c| table.key_columns().iter().chain(table.value_columns()).any(|(n, _)| n == c)),
        "{} has no column of {:?}",
        table.name(),
        R::COLUMN_NAMES
    );
    format!("SELECT {} FROM ({})", R::COLUMN_NAMES.join(", "), current_query(table, filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clickhouse::Row, serde::Deserialize)]
    #[allow(dead_code)]
    struct Offer {
        offer_id: String,
        revenue: f64,
    }

    #[test]
    fn queries_come_from_the_schema() {
        assert_eq!(
            select_current::<Offer>(Table::OfferAcceptance, "tenant_id = ?"),
            "SELECT offer_id, revenue FROM (SELECT tenant_id, offer_id, argMax(accepted_lines, version) AS \
             accepted_lines, argMax(revenue, version) AS revenue FROM offer_acceptance WHERE tenant_id = ? \
             GROUP BY tenant_id, offer_id HAVING argMax(deleted, version) = 0)"
        );
    }
}
