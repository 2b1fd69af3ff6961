//! Every dependency of a process, for the admin endpoint.

use std::sync::{Arc, Mutex, PoisonError};

use crate::dependency::{Dependency, DependencyStatus};

/// Every dependency of a process.
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<Mutex<Vec<Arc<Dependency>>>>);

impl Registry {
    pub fn add(&self, dependency: Arc<Dependency>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(dependency);
    }

    pub fn statuses(&self) -> Vec<DependencyStatus> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|d| d.status())
            .collect()
    }
}
