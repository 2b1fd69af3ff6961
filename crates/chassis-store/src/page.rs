//! Keyset pagination over `id` (UUIDv7, so id order is creation order): one page of
//! rows and whether another follows. The list routes' cursors (`chassis_core::page`)
//! carry the last id of the page before.

use std::fmt::Write as _;

use sqlx::AnyPool;
use sqlx::any::AnyRow;

/// Which way a list runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOrder {
    OldestFirst,
    NewestFirst,
}

/// One page of `select` (a `SELECT … FROM … WHERE <condition>` over rows with an
/// `id`), narrowed by `filter` (a condition on `$1` and the text bound to it), then to
/// the rows past `after` (the last id of the page before) in `order`: at most `limit`
/// rows, and whether more follow (one extra row is fetched to tell).
pub async fn keyset_page<R>(
    pool: &AnyPool,
    select: &str,
    filter: Option<(&str, &str)>,
    after: Option<&str>,
    order: PageOrder,
    limit: u32,
) -> Result<(Vec<R>, bool), sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
{
    let (past, direction) = match order {
        PageOrder::OldestFirst => (">", "ASC"),
        PageOrder::NewestFirst => ("<", "DESC"),
    };
    // Placeholders are numbered in the order the optional conditions appear.
    let mut sql = select.to_owned();
    let mut n = 0;
    if let Some((condition, _)) = filter {
        n += 1;
        let _ = write!(sql, " AND {condition}");
    }
    if after.is_some() {
        n += 1;
        let _ = write!(sql, " AND id {past} ${n}");
    }
    let _ = write!(sql, " ORDER BY id {direction} LIMIT ${}", n + 1);
    let mut query = sqlx::query_as::<_, R>(&sql);
    if let Some((_, value)) = filter {
        query = query.bind(value);
    }
    if let Some(id) = after {
        query = query.bind(id);
    }
    let mut rows = query.bind(i64::from(limit) + 1).fetch_all(pool).await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteSync, Store};

    #[tokio::test]
    async fn pages_run_both_ways_with_and_without_a_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), "t", 2, SqliteSync::Normal)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, tag TEXT NOT NULL)")
            .execute(store.pool())
            .await
            .unwrap();
        for (id, tag) in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "x"), ("e", "y")] {
            sqlx::query("INSERT INTO t (id, tag) VALUES ($1, $2)")
                .bind(id)
                .bind(tag)
                .execute(store.pool())
                .await
                .unwrap();
        }
        let pool = store.pool();
        let page = |filter, after, order, limit| async move {
            let (rows, more): (Vec<(String,)>, bool) = keyset_page(
                pool,
                "SELECT id FROM t WHERE 1 = 1",
                filter,
                after,
                order,
                limit,
            )
            .await
            .unwrap();
            (rows.into_iter().map(|(id,)| id).collect::<Vec<_>>(), more)
        };
        assert_eq!(
            page(None, None, PageOrder::OldestFirst, 2).await,
            (vec!["a".to_owned(), "b".to_owned()], true)
        );
        assert_eq!(
            page(None, Some("b"), PageOrder::OldestFirst, 3).await,
            (vec!["c".to_owned(), "d".to_owned(), "e".to_owned()], false)
        );
        let x = Some(("tag = $1", "x"));
        assert_eq!(
            page(x, None, PageOrder::NewestFirst, 2).await,
            (vec!["d".to_owned(), "c".to_owned()], true)
        );
        assert_eq!(
            page(x, Some("c"), PageOrder::NewestFirst, 2).await,
            (vec!["a".to_owned()], false)
        );
    }
}
