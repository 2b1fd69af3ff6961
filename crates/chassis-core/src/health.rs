//! What readiness asks of a part of the process (a store, a required peer).
//!
//! The trait lives here so a store can be a check without depending on the HTTP
//! server that serves `/health/ready` (chassis-http's `Readiness`).

#[async_trait::async_trait]
pub trait Check: Send + Sync {
    fn name(&self) -> String;
    async fn check(&self) -> Result<(), String>;
}
