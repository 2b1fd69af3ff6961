//! The notifications store. Writes run on the consumer's inbox transaction (the
//! `&mut AnyConnection` a handler is given); reads on the pool.

use std::collections::BTreeMap;

use chassis::page::Cursor;
use chassis::store::{PageOrder, keyset_page};
use sqlx::{AnyConnection, AnyPool};

use crate::domain::{Kind, Recipient};

/// A sent email as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    pub event_id: String,
    pub user_id: String,
    pub recipient: String,
    pub subject: String,
    pub kind: Kind,
    pub order_id: Option<String>,
    pub sent_at: i64,
}

/// Inserts or refreshes a recipient.
pub async fn upsert_recipient(
    conn: &mut AnyConnection,
    recipient: &Recipient,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recipients (user_id, email, name, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name, \
         updated_at = excluded.updated_at",
    )
    .bind(&recipient.user_id)
    .bind(&recipient.email)
    .bind(&recipient.name)
    .bind(chassis::time::now_micros())
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn recipient(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Option<Recipient>, sqlx::Error> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT email, name FROM recipients WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(email, name)| Recipient {
        user_id: user_id.to_owned(),
        email,
        name,
    }))
}

/// Records a sent email; `false` when one was already recorded for its event (the
/// caller then must not send again).
pub async fn record(conn: &mut AnyConnection, sent: &Sent) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifications (id, event_id, user_id, recipient, subject, kind, order_id, sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&sent.id)
    .bind(&sent.event_id)
    .bind(&sent.user_id)
    .bind(&sent.recipient)
    .bind(&sent.subject)
    .bind(sent.kind.as_str())
    .bind(sent.order_id.as_deref())
    .bind(sent.sent_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
);

fn sent(row: Row) -> Option<Sent> {
    let (id, event_id, user_id, recipient, subject, kind, order_id, sent_at) = row;
    Some(Sent {
        id,
        event_id,
        user_id,
        recipient,
        subject,
        kind: Kind::parse(&kind)?,
        order_id,
        sent_at,
    })
}

/// One page of sent emails, newest first, and whether more follow.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Sent>,
    pub has_more: bool,
}

/// Newest first (ids are UUIDv7 event ids, so they order by time), after `before`.
pub async fn list(
    pool: &AnyPool,
    order_id: Option<&str>,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<Page, sqlx::Error> {
    let (rows, has_more) = keyset_page::<Row>(
        pool,
        "SELECT id, event_id, user_id, recipient, subject, kind, order_id, sent_at \
         FROM notifications WHERE 1 = 1",
        order_id.map(|order_id| ("order_id = $1", order_id)),
        before.map(Cursor::last_id),
        PageOrder::NewestFirst,
        limit,
    )
    .await?;
    let items = rows.into_iter().filter_map(sent).collect();
    Ok(Page { items, has_more })
}

/// For the audit: how many emails of `kind` each order got (orders with none are
/// absent).
pub async fn count_per_order(
    pool: &AnyPool,
    kind: Kind,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT order_id, COUNT(*) FROM notifications \
         WHERE kind = $1 AND order_id IS NOT NULL GROUP BY order_id",
    )
    .bind(kind.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Emails sent, per kind.
pub async fn count_per_kind(pool: &AnyPool) -> Result<BTreeMap<Kind, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, COUNT(*) FROM notifications GROUP BY kind")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, n)| Kind::parse(&kind).map(|k| (k, n)))
        .collect())
}
