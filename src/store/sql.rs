//! SQL fragments that differ between backends: multi-row insert value lists and inserts that skip
//! rows already stored.

use super::Backend;

/// The value list of a multi-row insert of `rows` rows of `columns` values: `(?, ?), (?, ?), ...`
/// on SQLite, `($1, $2), ($3, $4), ...` on PostgreSQL (which has no `?`). SQLite needs the
/// anonymous form: binding a numbered parameter looks its name up in a list, which makes a
/// statement with thousands of `$N` parameters quadratic to bind.
pub(super) fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(row * columns + column + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// The start of an insert whose rows are skipped when they already exist. On SQLite this is
/// `INSERT OR IGNORE`, which can never abort half way, so SQLite keeps no statement journal for
/// it (with `ON CONFLICT DO NOTHING` a NOT NULL violation could still abort the statement, and
/// every page it touches is first copied to that journal); PostgreSQL says it at the end instead.
pub(super) fn insert_or_skip(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INSERT OR IGNORE INTO",
        Backend::Postgres => "INSERT INTO",
    }
}

/// The end of an insert started by [`insert_or_skip`]: nothing on SQLite, `ON CONFLICT target DO
/// NOTHING` on PostgreSQL.
pub(super) fn on_conflict_skip(backend: Backend, target: &str) -> String {
    match backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres => format!("ON CONFLICT {target} DO NOTHING"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        assert_eq!(placeholders(Backend::Sqlite, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(placeholders(Backend::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
