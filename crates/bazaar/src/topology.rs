//! Which modules this process runs and where the others are: configuration, never
//! code. No `only`: every module here, in process (the monolith). `only =
//! "orders,payments"`: those here, every other module a peer reached over HTTP at
//! `peer_<module>`, events over NATS. `only = "gateway"`: the edge alone, proxying
//! each public route to the module that owns it.

use std::collections::BTreeSet;

use chassis::config::Config;
use chassis::module::Registry;

/// The edge's name in `only`.
pub const GATEWAY: &str = "gateway";

/// Whether a split process running `component` needs `jwt_secret`: the gateway checks
/// user tokens and identity issues them; the others trust what the gateway forwards.
pub fn holds_jwt_secret(component: &str) -> bool {
    component == GATEWAY || component == identity::MODULE
}

#[derive(Debug, thiserror::Error)]
#[error("invalid topology: {0}")]
pub struct TopologyError(String);

impl TopologyError {
    pub(crate) fn missing_peer(module: &str) -> Self {
        Self(format!(
            "no address for {module}: set peer_{module} (BAZAAR_PEER_{})",
            module.to_uppercase()
        ))
    }

    pub(crate) fn missing_secret() -> Self {
        Self("split processes need service_keys_dir (BAZAAR_SERVICE_KEYS_DIR) or service_secret (BAZAAR_SERVICE_SECRET)".into())
    }
}

/// This process's part of the deployment.
#[derive(Debug, Clone)]
pub struct Topology {
    registry: Registry,
    local: BTreeSet<&'static str>,
    split: bool,
}

impl Topology {
    /// Every module here, in process.
    pub fn monolith(registry: &Registry) -> Self {
        Self {
            registry: registry.clone(),
            local: registry.names().into_iter().collect(),
            split: false,
        }
    }

    /// The registry this topology places.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The modules `module` calls; the gateway calls every module.
    pub fn calls(&self, module: &str) -> Vec<&'static str> {
        if module == GATEWAY {
            self.registry.names()
        } else {
            self.registry.calls(module).to_vec()
        }
    }

    /// Reads `only` and checks the split settings it needs: a peer for every module
    /// called from here, the shared secrets, and NATS for modules with events.
    pub fn from_config(config: &Config, registry: &Registry) -> Result<Self, TopologyError> {
        // An empty value (`BAZAAR_ONLY=`) is as good as unset.
        let Some(only) = config.only.as_deref().filter(|o| !o.trim().is_empty()) else {
            return Ok(Self::monolith(registry));
        };
        let names = registry.names();
        let mut local = BTreeSet::new();
        for name in only.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let known = names
                .iter()
                .copied()
                .chain([GATEWAY])
                .find(|m| *m == name)
                .ok_or_else(|| {
                    TopologyError(format!(
                        "`only`: unknown module `{name}` (known: gateway, {})",
                        names.join(", ")
                    ))
                })?;
            local.insert(known);
        }
        if local.is_empty() {
            return Err(TopologyError("`only` names no module".into()));
        }
        if local.contains(GATEWAY) && local.len() > 1 {
            return Err(TopologyError(
                "`only`: the gateway runs alone in the split topology (no `only` runs everything in one process)"
                    .into(),
            ));
        }
        let topology = Self {
            registry: registry.clone(),
            local,
            split: true,
        };
        for module in &topology.local {
            for peer in topology.calls(module) {
                if !topology.runs(peer) {
                    match config.peer(peer) {
                        None => {
                            return Err(TopologyError(format!(
                                "{module} calls {peer}: set peer_{peer} (BAZAAR_PEER_{})",
                                peer.to_uppercase()
                            )));
                        }
                        Some(url)
                            if !(url.starts_with("http://") || url.starts_with("https://")) =>
                        {
                            return Err(TopologyError(format!(
                                "peer_{peer} must be an http:// or https:// URL"
                            )));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if config.service_secret.is_none() && config.service_keys_dir.is_none() {
            return Err(TopologyError(
                "split processes need service_keys_dir (BAZAAR_SERVICE_KEYS_DIR, a key pair per \
                 service) or service_secret (BAZAAR_SERVICE_SECRET, shared by the deployment)"
                    .into(),
            ));
        }
        if topology.local.iter().any(|m| holds_jwt_secret(m)) && config.jwt_secret.is_none() {
            return Err(TopologyError(
                "the gateway and identity need jwt_secret (BAZAAR_JWT_SECRET), shared by the deployment"
                    .into(),
            ));
        }
        if !topology.runs(GATEWAY) && config.nats_url.is_none() {
            return Err(TopologyError(
                "split modules need nats_url (BAZAAR_NATS_URL) for their events".into(),
            ));
        }
        Ok(topology)
    }

    pub fn runs(&self, module: &str) -> bool {
        self.local.contains(module)
    }

    pub fn is_split(&self) -> bool {
        self.split
    }

    /// The edge alone.
    pub fn is_gateway(&self) -> bool {
        self.split && self.runs(GATEWAY)
    }

    /// The `service` of this process's logs and metrics: `bazaar` for the monolith,
    /// else the modules it runs (`orders`, `orders+payments`).
    pub fn service_name(&self) -> &'static str {
        if !self.split {
            return "bazaar";
        }
        let mut names = self.local.iter();
        match (names.next(), names.next()) {
            (Some(one), None) => one,
            // Built once per process at start: leaking it is the simplest 'static.
            _ => Box::leak(
                self.local
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
                    .join("+")
                    .into_boxed_str(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(only: &str) -> Config {
        Config {
            only: Some(only.into()),
            service_secret: Some("s".repeat(32)),
            jwt_secret: Some("j".repeat(32)),
            nats_url: Some("nats://127.0.0.1:4222".into()),
            ..Config::default()
        }
    }

    fn from_config(config: &Config) -> Result<Topology, TopologyError> {
        Topology::from_config(config, &crate::registry())
    }

    fn peer(config: &mut Config, module: &str, url: &str) {
        config.peers.insert(module.into(), url.into());
    }

    #[test]
    fn no_only_is_the_monolith() {
        let t = from_config(&Config::default()).unwrap();
        assert!(!t.is_split());
        assert!(crate::registry().names().iter().all(|m| t.runs(m)));
        assert_eq!(t.service_name(), "bazaar");
    }

    #[test]
    fn a_split_process_needs_its_peers_and_secrets() {
        let t = from_config(&split("payments")).unwrap();
        assert!(t.is_split() && t.runs("payments") && !t.runs("orders"));
        assert_eq!(t.service_name(), "payments");

        let err = from_config(&split("orders")).unwrap_err().to_string();
        assert!(err.contains("peer_catalog"), "{err}");
        let mut config = split("orders");
        peer(&mut config, "catalog", "http://catalog:8080");
        peer(&mut config, "cart", "http://cart:8080");
        peer(&mut config, "payments", "payments:8080");
        let err = from_config(&config).unwrap_err().to_string();
        assert!(err.contains("peer_payments"), "{err}");
        peer(&mut config, "payments", "http://payments:8080");
        from_config(&config).unwrap();

        let mut config = split("orders,payments,cart,catalog");
        config.service_secret = None;
        let err = from_config(&config).unwrap_err().to_string();
        assert!(err.contains("service_secret"), "{err}");
        config.service_keys_dir = Some("/run/secrets/bazaar-keys".into());
        from_config(&config).unwrap();
    }

    #[test]
    fn event_consumers_name_their_sources() {
        let registry = crate::registry();
        assert_eq!(registry.consumes("cart"), ["orders"]);
        assert_eq!(registry.consumes("notifications"), ["identity", "orders"]);
        assert_eq!(registry.consumes("analytics"), ["payments", "orders"]);
        assert!(registry.consumes("orders").is_empty());
    }

    #[test]
    fn bad_names_and_mixed_gateway_are_refused() {
        let err = from_config(&split("payment")).unwrap_err().to_string();
        assert!(err.contains("unknown module `payment`"), "{err}");
        assert!(from_config(&split("gateway,payments")).is_err());
        assert!(from_config(&split(" , ")).is_err());
        assert!(!from_config(&split("")).unwrap().is_split());
    }
}

#[cfg(test)]
mod routes_tests {

    /// Every public path of the OpenAPI document is owned by exactly one module in the
    /// gateway's table (or answered by the gateway itself), so a route added to a
    /// module cannot be missing from the split topology.
    #[test]
    fn public_routes_cover_the_api() {
        let doc = crate::openapi();
        assert!(doc.paths.paths.len() > 10, "the document lists the API");
        for path in doc.paths.paths.keys() {
            if path.starts_with("/health/") || path == "/metrics" {
                continue; // every process answers these itself
            }
            if path == gateway::DEAD_LETTERS
                || path == crate::RESILIENCE
                || path == chassis::admin::bus::BUS
            {
                continue; // fanned out to every module
            }
            if path == gateway::SERVICES {
                continue; // the gateway's own
            }
            if path
                .strip_prefix(chassis::admin::traces::TRACES)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            {
                continue; // gathered by the gateway from every module
            }
            let owners: Vec<&str> = crate::registry()
                .public_routes()
                .into_iter()
                .filter(|(prefix, _)| {
                    path.strip_prefix(prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
                .map(|(_, module)| module)
                .collect();
            assert_eq!(owners.len(), 1, "{path} is owned by {owners:?}");
        }
    }
}
