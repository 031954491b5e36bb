//! [`HttpConfig`]: the settings a [`CacheLayer`](super::CacheLayer) gives every service it
//! builds, and that the parts of a request's answer read (its own module, so that those
//! parts depend on the settings and not on the layer that builds the services).

use std::time::Duration;

use super::headers::TargetHeaders;
use super::key::KeyMaker;
use super::policy::{PolicyMode, Rules, Targeted};

/// Settings shared by every service a [`CacheLayer`](super::CacheLayer) builds.
pub(crate) struct HttpConfig {
    /// How keys are made (the default key is built on the stack on the hit path).
    pub key: KeyMaker,
    pub mode: PolicyMode,
    pub cache_status: bool,
    pub share_set_cookie: bool,
    pub target_headers: TargetHeaders,
    /// The longest an origin call may take to answer with a response head.
    pub origin_timeout: Duration,
    /// Targeted cache-control fields (RFC 9213) honoured in shared mode.
    pub targeted: Targeted,
}

impl HttpConfig {
    /// The rules every policy decision of this layer follows.
    pub fn rules(&self) -> Rules<'_> {
        Rules::new(&self.mode, &self.targeted)
    }
}
