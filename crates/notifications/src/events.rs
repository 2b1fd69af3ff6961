//! notifications' event handler: one email per event.
//!
//! Runs inside the consumer's inbox transaction. For each event it records the
//! notification row (id = the event id, `event_id` unique), sends the email, and only
//! then returns `Ok`, so the row and the inbox record commit after the send:
//!
//! - send fails → the transaction rolls back → the consumer retries (then
//!   dead-letters): no row without an email.
//! - crash after the send, before the commit → the event is redelivered and sent
//!   again under the same id. The maildir transport rewrites the same file (one
//!   email); SMTP sends a second copy with the same Message-ID (at-least-once).
//! - redelivery after the commit → the inbox says duplicate: nothing is sent.

use std::sync::Arc;

use chassis::bus::{Handler, HandlerError};
use chassis::events::{Envelope, topic_of};
use contracts::identity::UserRegistered;
use contracts::orders::{OrderCancelled, OrderConfirmed, OrderFailed};
use sqlx::AnyConnection;
use time::OffsetDateTime;

use crate::domain::{self, Email, Mailbox, Recipient};
use crate::store::{self, Sent};
use crate::transport::MailTransport;

/// The consumer name (inbox scope) and the topics it listens to.
pub const CONSUMER: &str = "notifications";

pub fn topics() -> Vec<String> {
    vec![
        topic_of::<UserRegistered>(),
        topic_of::<OrderConfirmed>(),
        topic_of::<OrderFailed>(),
        topic_of::<OrderCancelled>(),
    ]
}

/// The handler to subscribe (see [`crate::NotificationsService::events`]).
#[derive(Clone)]
pub struct NotificationEvents {
    transport: Arc<dyn MailTransport>,
    from: Mailbox,
}

impl std::fmt::Debug for NotificationEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationEvents")
            .field("transport", &self.transport.describe())
            .field("from", &self.from)
            .finish()
    }
}

impl NotificationEvents {
    pub fn new(transport: Arc<dyn MailTransport>, from: Mailbox) -> Self {
        Self { transport, from }
    }

    /// The recipient of an order event, who must have registered first. Order and
    /// identity events travel independently, so the registration may still be on its
    /// way: transient, retried.
    async fn recipient(tx: &mut AnyConnection, user_id: &str) -> Result<Recipient, HandlerError> {
        store::recipient(tx, user_id).await?.ok_or_else(|| {
            HandlerError::Transient(format!("no recipient known yet for user {user_id}"))
        })
    }

    /// Records the notification, then sends it (see the module docs for the order).
    async fn send(
        &self,
        tx: &mut AnyConnection,
        event: &Envelope,
        email: &Email,
        user_id: &str,
        order_id: Option<&str>,
    ) -> Result<(), HandlerError> {
        let sent = Sent {
            id: email.id.clone(),
            event_id: event.id.clone(),
            user_id: user_id.to_owned(),
            recipient: email.to.address.clone(),
            subject: email.subject.clone(),
            kind: email.kind,
            order_id: order_id.map(str::to_owned),
            sent_at: chassis::time::now_micros(),
        };
        if !store::record(tx, &sent).await? {
            // Already recorded (and so already sent) under this event id.
            tracing::info!(notification_id = %sent.id, "email already sent for this event");
            return Ok(());
        }
        self.transport.send(email).await.map_err(|e| {
            if e.is_permanent() {
                HandlerError::Permanent(e.to_string())
            } else {
                HandlerError::Transient(e.to_string())
            }
        })?;
        metrics::counter!("notifications_sent_total", "kind" => email.kind.as_str()).increment(1);
        tracing::info!(
            notification_id = %sent.id,
            kind = email.kind.as_str(),
            user_id = %user_id,
            order_id = order_id.unwrap_or(""),
            transport = %self.transport.describe(),
            "email sent"
        );
        Ok(())
    }
}

/// An address that cannot go into a header is a poison event, not a retry.
fn checked(recipient: Recipient) -> Result<Recipient, HandlerError> {
    if domain::is_address(&recipient.email) {
        Ok(recipient)
    } else {
        Err(HandlerError::Permanent(format!(
            "user {} has no usable email address",
            recipient.user_id
        )))
    }
}

#[async_trait::async_trait]
impl Handler for NotificationEvents {
    async fn handle(&self, tx: &mut AnyConnection, event: &Envelope) -> Result<(), HandlerError> {
        // The notification id is the event id: deterministic, so a redelivery can
        // only ever name the same row and the same file.
        let id = event.id.as_str();
        let date = OffsetDateTime::now_utc();
        if event.is::<UserRegistered>() {
            let registered: UserRegistered = event.decode()?;
            let to = checked(Recipient {
                user_id: registered.user_id,
                email: registered.email,
                name: registered.name,
            })?;
            store::upsert_recipient(tx, &to).await?;
            let env = domain::Addressing {
                id,
                from: &self.from,
                to: &to,
                date,
            };
            self.send(tx, event, &domain::welcome(&env), &to.user_id, None)
                .await
        } else if event.is::<OrderConfirmed>() {
            let confirmed: OrderConfirmed = event.decode()?;
            let to = checked(Self::recipient(tx, &confirmed.user_id).await?)?;
            let env = domain::Addressing {
                id,
                from: &self.from,
                to: &to,
                date,
            };
            let email = domain::order_confirmed(
                &env,
                &confirmed.order_id,
                &confirmed.lines,
                confirmed.total_cents,
                &confirmed.currency,
            );
            self.send(tx, event, &email, &to.user_id, Some(&confirmed.order_id))
                .await
        } else if event.is::<OrderFailed>() {
            let failed: OrderFailed = event.decode()?;
            let to = checked(Self::recipient(tx, &failed.user_id).await?)?;
            let env = domain::Addressing {
                id,
                from: &self.from,
                to: &to,
                date,
            };
            let email = domain::order_failed(&env, &failed.order_id, &failed.reason);
            self.send(tx, event, &email, &to.user_id, Some(&failed.order_id))
                .await
        } else if event.is::<OrderCancelled>() {
            let cancelled: OrderCancelled = event.decode()?;
            let to = checked(Self::recipient(tx, &cancelled.user_id).await?)?;
            let env = domain::Addressing {
                id,
                from: &self.from,
                to: &to,
                date,
            };
            let email = domain::order_cancelled(
                &env,
                &cancelled.order_id,
                cancelled.refunded_cents,
                &cancelled.currency,
            );
            self.send(tx, event, &email, &to.user_id, Some(&cancelled.order_id))
                .await
        } else {
            Err(HandlerError::Permanent(format!(
                "notifications does not handle {} events",
                event.topic()
            )))
        }
    }

    /// One transaction per event: a send (SMTP: up to its timeout) must not hold the
    /// notifications database's write lock for a whole batch.
    fn batchable(&self) -> bool {
        false
    }
}
