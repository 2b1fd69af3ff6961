//! `bazaar audit`: checks the non-negotiable invariants against the stores the
//! configuration points at. Run it on a quiet system (after a load test, after a
//! crash and restart): events still in flight show up as differences.

use std::collections::HashMap;
use std::time::Duration;

use orders::domain::Status;
use serde::Serialize;

use crate::Modules;

/// One invariant and what violates it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub violations: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub orders: usize,
    pub checks: Vec<Check>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read the {module} store")]
    Read {
        module: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The audit reads every module's store; this configuration runs only some
    /// (`only` is set).
    #[error("the audit needs every module's store; {0} is not opened here (unset `only`)")]
    Missing(&'static str),
}

fn read(module: &'static str) -> impl FnOnce(sqlx::Error) -> AuditError {
    move |source| AuditError::Read { module, source }
}

fn need<'a, T>(module: Option<&'a T>, name: &'static str) -> Result<&'a T, AuditError> {
    module.ok_or(AuditError::Missing(name))
}

fn check(name: &'static str, violations: Vec<String>) -> Check {
    Check {
        name,
        ok: violations.is_empty(),
        violations,
    }
}

/// Runs every check. `stuck_after`: how long an order may stay non-terminal.
pub async fn run(modules: &Modules, stuck_after: Duration) -> Result<Report, AuditError> {
    let payments = need(modules.service::<payments::PaymentsService>(), "payments")?;
    let catalog = need(modules.store(catalog::MODULE), "catalog")?;
    let orders = need(modules.service::<orders::OrdersService>(), "orders")?
        .store()
        .audit_rows()
        .await
        .map_err(read("orders"))?;
    let mut checks = Vec::new();

    checks.push(check(
        "stock is never negative and reservations match reserved stock",
        catalog::audit::violations(catalog.pool())
            .await
            .map_err(read("catalog"))?,
    ));

    // Money: per order, captured - refunded equals the total of a confirmed order
    // and zero for every other settled order; in sum, the ledger equals confirmed
    // revenue. A second capture for one order would show up here.
    let net: HashMap<String, (i64, i64)> = payments
        .net_by_order()
        .await
        .map_err(read("payments"))?
        .into_iter()
        .map(|(order, captured, refunded)| (order, (captured, refunded)))
        .collect();
    let mut money = Vec::new();
    let mut confirmed_total = 0_i64;
    for order in &orders {
        let (captured, refunded) = net.get(&order.id).copied().unwrap_or((0, 0));
        // In flight (pending, or a cancellation running): the saga will settle it;
        // the stuck-order check catches it if it does not.
        if order.saga_open || order.status == Status::Pending {
            continue;
        }
        let expected = if order.status == Status::Confirmed {
            confirmed_total += order.total_cents;
            order.total_cents
        } else {
            0
        };
        if captured - refunded != expected {
            money.push(format!(
                "order {} ({}): captured {captured} - refunded {refunded} != {expected}",
                order.id,
                order.status.as_str()
            ));
        }
    }
    if let Some(unknown) = net.keys().find(|id| !orders.iter().any(|o| &o.id == *id)) {
        money.push(format!("payment for unknown order {unknown}"));
    }
    let totals = payments.totals().await.map_err(read("payments"))?;
    let open_total: i64 = orders
        .iter()
        .filter(|o| o.saga_open || o.status == Status::Pending)
        .map(|o| {
            let (c, r) = net.get(&o.id).copied().unwrap_or((0, 0));
            c - r
        })
        .sum();
    if totals.captured_cents - totals.refunded_cents - open_total != confirmed_total {
        money.push(format!(
            "ledger: captured {} - refunded {} (- {open_total} in flight) != confirmed orders {confirmed_total}",
            totals.captured_cents, totals.refunded_cents
        ));
    }
    checks.push(check(
        "money is conserved: captured - refunded = confirmed orders, one charge each",
        money,
    ));

    // Events: every order that was confirmed (cancelled ones were, first) got exactly
    // one confirmation email and is counted once by analytics.
    let ever_confirmed: Vec<&str> = orders
        .iter()
        .filter(|o| matches!(o.status, Status::Confirmed | Status::Cancelled))
        .map(|o| o.id.as_str())
        .collect();
    let emails = need(
        modules.service::<notifications::NotificationsService>(),
        "notifications",
    )?
    .confirmed_emails_per_order()
    .await
    .map_err(read("notifications"))?;
    let mut email_violations: Vec<String> = ever_confirmed
        .iter()
        .filter_map(|id| match emails.get(*id).copied().unwrap_or(0) {
            1 => None,
            n => Some(format!("order {id}: {n} confirmation emails")),
        })
        .collect();
    email_violations.extend(
        emails
            .keys()
            .filter(|id| !ever_confirmed.contains(&id.as_str()))
            .map(|id| format!("confirmation email for order {id}, which was never confirmed")),
    );
    checks.push(check("one email per confirmed order", email_violations));

    let counted = need(
        modules.service::<analytics::AnalyticsService>(),
        "analytics",
    )?
    .orders_confirmed()
    .await
    .map_err(read("analytics"))?;
    let expected = i64::try_from(ever_confirmed.len()).unwrap_or(i64::MAX);
    checks.push(check(
        "analytics counts every confirmation exactly once",
        if counted == expected {
            Vec::new()
        } else {
            vec![format!(
                "analytics counts {counted} confirmed orders, the orders store {expected}"
            )]
        },
    ));

    let bound = i64::try_from(stuck_after.as_micros()).unwrap_or(i64::MAX);
    let now = chassis::time::now_micros();
    checks.push(check(
        "every order reaches a terminal state",
        orders
            .iter()
            .filter(|o| o.saga_open && now - o.updated_at > bound)
            .map(|o| {
                format!(
                    "order {} stuck in {} since {}",
                    o.id,
                    o.status.as_str(),
                    chassis::time::micros_to_rfc3339(o.updated_at)
                )
            })
            .collect(),
    ));

    let ok = checks.iter().all(|c| c.ok);
    Ok(Report {
        ok,
        orders: orders.len(),
        checks,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "bazaar audit: {} orders", self.orders)?;
        for check in &self.checks {
            writeln!(
                f,
                "  [{}] {}",
                if check.ok { "ok" } else { "FAIL" },
                check.name
            )?;
            for v in check.violations.iter().take(20) {
                writeln!(f, "         {v}")?;
            }
            if check.violations.len() > 20 {
                writeln!(f, "         ... and {} more", check.violations.len() - 20)?;
            }
        }
        write!(
            f,
            "{}",
            if self.ok {
                "all invariants hold"
            } else {
                "VIOLATIONS FOUND"
            }
        )
    }
}
