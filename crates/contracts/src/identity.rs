//! The identity module's contract: users as others see them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user account as the public API shows it. Credentials never leave identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    /// `customer` or `admin`.
    pub role: String,
}

/// A new account exists. Carries what notifications need to address the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub name: String,
}
crate::event!(UserRegistered, "identity", "UserRegistered", v 1, |e| e.user_id);

/// The events this module publishes (its descriptor's `publishes`).
pub const EVENTS: &[&str] = &[<UserRegistered as chassis_core::events::DomainEvent>::TYPE];
