//! notifications' use cases: the admin list of sent emails and the audit's counts.
//! Sending itself happens in [`crate::events`], on the bus.

use std::collections::BTreeMap;
use std::sync::Arc;

use chassis::page;
use serde::Serialize;
use sqlx::AnyPool;
use utoipa::ToSchema;

use crate::domain::{Kind, Mailbox};
use crate::error::NotificationsError;
use crate::events::NotificationEvents;
use crate::store;
use crate::transport::{MailTransport, TransportError};

/// The From of every email unless configured otherwise.
pub const DEFAULT_SENDER: &str = "bazaar <no-reply@bazaar.localhost>";

/// Longest `order_id` filter accepted.
const ORDER_ID_MAX: usize = 200;

/// A sent email as the admin route shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Notification {
    /// The notification id (the id of the event that caused it).
    pub id: String,
    /// The address it was sent to.
    #[schema(example = "ada@example.com")]
    pub to: String,
    pub subject: String,
    pub kind: Kind,
    /// The order it is about; absent for `welcome`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// When it was sent, RFC 3339 UTC.
    #[schema(example = "2026-01-01T12:00:00.123456Z")]
    pub sent_at: String,
}

/// A page of sent emails, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<Notification>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct NotificationsService {
    pool: AnyPool,
    transport: Arc<dyn MailTransport>,
    from: Mailbox,
}

impl std::fmt::Debug for NotificationsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsService")
            .field("transport", &self.transport.describe())
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl NotificationsService {
    /// Emails come from [`DEFAULT_SENDER`] unless [`Self::with_sender`] says otherwise.
    pub fn new(pool: AnyPool, transport: Arc<dyn MailTransport>) -> Self {
        Self {
            pool,
            transport,
            from: Mailbox::parse(DEFAULT_SENDER)
                .unwrap_or_else(|| Mailbox::new(None, "no-reply@bazaar.localhost")),
        }
    }

    /// Sets the From: `Name <address>` or a bare address.
    pub fn with_sender(mut self, from: &str) -> Result<Self, TransportError> {
        self.from = Mailbox::parse(from).ok_or_else(|| {
            TransportError::Config(format!("{from:?} is not a mailbox (`Name <user@host>`)"))
        })?;
        Ok(self)
    }

    /// The bus handler, sharing this service's transport and sender.
    pub fn events(&self) -> NotificationEvents {
        NotificationEvents::new(Arc::clone(&self.transport), self.from.clone())
    }

    pub fn transport(&self) -> &Arc<dyn MailTransport> {
        &self.transport
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Sent emails, newest first, optionally only those about one order.
    pub async fn list(
        &self,
        order_id: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<NotificationPage, NotificationsError> {
        let mut v = chassis::error::Violations::new();
        let limit = v.check("limit", page::limit(limit));
        if order_id.is_some_and(|o| o.chars().count() > ORDER_ID_MAX) {
            v.push(
                "order_id",
                format!("must be at most {ORDER_ID_MAX} characters"),
            );
        }
        v.finish()
            .map_err(|e| NotificationsError::Invalid(e.into()))?;
        let limit = limit.unwrap_or(page::DEFAULT_LIMIT);
        let cursor = page::cursor(cursor).map_err(|_| NotificationsError::BadCursor)?;
        let page = store::list(&self.pool, order_id, cursor.as_ref(), limit).await?;
        let next_cursor = page::next_cursor(&page.items, page.has_more, |n| &n.id);
        Ok(NotificationPage {
            items: page
                .items
                .into_iter()
                .map(|n| Notification {
                    id: n.id,
                    to: n.recipient,
                    subject: n.subject,
                    kind: n.kind,
                    order_id: n.order_id,
                    sent_at: chassis::time::micros_to_rfc3339(n.sent_at),
                })
                .collect(),
            next_cursor,
        })
    }

    /// For the audit: emails of `kind` per order id (orders with none are absent).
    pub async fn count_by_kind_and_order(
        &self,
        kind: Kind,
    ) -> Result<BTreeMap<String, i64>, sqlx::Error> {
        store::count_per_order(&self.pool, kind).await
    }

    /// For the audit: `order_confirmed` emails per order id; every confirmed order
    /// should map to exactly 1.
    pub async fn confirmed_emails_per_order(&self) -> Result<BTreeMap<String, i64>, sqlx::Error> {
        self.count_by_kind_and_order(Kind::OrderConfirmed).await
    }

    /// Emails sent, per kind.
    pub async fn count_by_kind(&self) -> Result<BTreeMap<Kind, i64>, sqlx::Error> {
        store::count_per_kind(&self.pool).await
    }
}
