//! The HTTP client's name resolution, through the destination guard: the addresses a
//! connection may use are the ones that were checked, in the same lookup. A check made before
//! the request and a second lookup by the client could disagree (DNS rebinding); this way
//! there is one lookup.

use crate::destination::DestinationPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::sync::Arc;

/// Resolves names for the webhook client, refusing any that lead off the public internet.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<DestinationPolicy>,
}

impl GuardedResolver {
    /// A resolver that applies `policy`.
    pub fn new(policy: Arc<DestinationPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            // The port is the client's to add; 0 stands in for it here.
            let addresses = policy.resolve_name(name.as_str(), 0).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}
