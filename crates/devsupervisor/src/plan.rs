//! The plan: the port, environment and command line of every child (pure, apart from
//! the check that its ports are free).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::DevError;

/// One service of the plan: where it listens and where the others reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// The module (or the edge) it runs: its `serve --only`.
    pub(crate) name: &'static str,
    /// Its name in the output and its data directory: the module's name, with the
    /// replica's number when there are several (`catalog-2`).
    pub(crate) label: String,
    pub(crate) listen: SocketAddr,
    /// `http://<ip>:<port>`, with an unspecified listen IP replaced by loopback.
    pub(crate) url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) gateway: Planned,
    /// In the order the modules were given, each module's replicas together.
    pub(crate) modules: Vec<Planned>,
}

/// Where a client on this machine connects to reach a listener on `listen`.
pub(crate) fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    }
}

fn planned(name: &'static str, label: String, listen: SocketAddr) -> Planned {
    Planned {
        name,
        label,
        listen,
        url: format!("http://{}", reachable(listen)),
    }
}

impl Plan {
    /// The gateway (named `edge`) on `gateway`; `replicas` of each of the `modules` on
    /// its IP at `base_port` (default: the gateway's port + 1) and the ports after it,
    /// one each, a module's replicas one after the other.
    ///
    /// One gateway whatever `replicas` is: nothing balances in front of it here (a
    /// deployment puts its load balancer there), and its per-IP rate limits are kept
    /// per process, so two gateways would each allow the limit.
    pub(crate) fn new(
        edge: &'static str,
        modules: &[&'static str],
        replicas: u16,
        gateway: SocketAddr,
        base_port: Option<u16>,
    ) -> Result<Self, DevError> {
        if gateway.port() == 0 {
            return Err(DevError::GatewayPortZero);
        }
        if modules.is_empty() || replicas == 0 {
            return Err(DevError::NoModules);
        }
        let count = u16::try_from(modules.len())
            .ok()
            .and_then(|n| n.checked_mul(replicas))
            .ok_or(DevError::TooManyModules(modules.len()))?;
        let base = match base_port {
            Some(0) => return Err(DevError::BasePortZero),
            Some(port) => port,
            None => gateway
                .port()
                .checked_add(1)
                .ok_or(DevError::NoPortAfterGateway)?,
        };
        let last = base.checked_add(count - 1).ok_or(DevError::PortsPastMax {
            base,
            last: u32::from(base) + u32::from(count) - 1,
        })?;
        if (base..=last).contains(&gateway.port()) {
            return Err(DevError::GatewayAmongModules {
                gateway: gateway.port(),
                base,
                last,
            });
        }
        let instances = modules
            .iter()
            .flat_map(|&name| (1..=replicas).map(move |replica| (name, replica)));
        let modules = instances
            .zip(base..=last)
            .map(|((name, replica), port)| {
                let label = if replicas == 1 {
                    name.to_owned()
                } else {
                    format!("{name}-{replica}")
                };
                planned(name, label, SocketAddr::new(gateway.ip(), port))
            })
            .collect();
        Ok(Self {
            gateway: planned(edge, edge.to_owned(), gateway),
            modules,
        })
    }

    /// Modules first, then the gateway.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Planned> {
        self.modules.iter().chain(std::iter::once(&self.gateway))
    }

    /// Fails early, naming the service, when one of the ports is taken.
    pub(crate) fn check_free(&self) -> Result<(), DevError> {
        for service in self.all() {
            std::net::TcpListener::bind(service.listen).map_err(|source| DevError::PortTaken {
                listen: service.listen,
                service: service.label.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// What every child shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// Each child gets `<data_dir>/<its name>`.
    pub(crate) data_dir: PathBuf,
    /// Each module's own database URL, by module: its own role (ADR 0008), made by its
    /// migration step. The gateway has none.
    pub(crate) database_urls: BTreeMap<&'static str, String>,
    pub(crate) nats_url: String,
    pub(crate) nats_prefix: String,
    pub(crate) jwt_secret: String,
    /// Per-service Ed25519 keys: each child gets `<service_keys>/<its name>`, its own
    /// private key and every public key, never another's private key.
    pub(crate) service_keys: PathBuf,
    /// `--tls`: the throwaway CA and each module's certificate (`ca.pem`,
    /// `<module>.crt`, `<module>.key`); the modules serve HTTPS, the gateway trusts the
    /// CA and keeps plain HTTP towards the developer.
    pub(crate) tls: Option<PathBuf>,
    pub(crate) metrics_token: String,
}

/// The environment one child runs with: these set on top of the parent's, those
/// removed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildEnv {
    pub(crate) set: Vec<(String, OsString)>,
    pub(crate) remove: Vec<String>,
}

fn peer_var(module: &str) -> String {
    format!("BAZAAR_PEER_{}", module.to_ascii_uppercase())
}

/// `who`'s environment: its address and data dir, the shared stores and secrets, and
/// every other module as a peer, the comma-separated list of its replicas (the
/// gateway gets them all).
pub(crate) fn child_env(plan: &Plan, who: &Planned, shared: &Shared) -> ChildEnv {
    let mut set: Vec<(String, OsString)> = vec![
        ("BAZAAR_HTTP_ADDR".into(), who.listen.to_string().into()),
        (
            "BAZAAR_DATA_DIR".into(),
            shared.data_dir.join(&who.label).into(),
        ),
        ("BAZAAR_NATS_URL".into(), shared.nats_url.clone().into()),
        (
            "BAZAAR_NATS_PREFIX".into(),
            shared.nats_prefix.clone().into(),
        ),
        ("BAZAAR_JWT_SECRET".into(), shared.jwt_secret.clone().into()),
        (
            "BAZAAR_SERVICE_KEYS_DIR".into(),
            shared.service_keys.join(who.name).into(),
        ),
        (
            "BAZAAR_METRICS_TOKEN".into(),
            shared.metrics_token.clone().into(),
        ),
    ];
    // A shared service secret from the user's shell would be a second, weaker way to
    // sign as any service.
    // The same for the administrator's database URL: only the migration step has it.
    let mut remove = vec![
        "BAZAAR_ONLY".to_owned(),
        "BAZAAR_SERVICE_SECRET".to_owned(),
        "BAZAAR_DATABASE_ADMIN_URL".to_owned(),
    ];
    match shared.database_urls.get(who.name) {
        Some(url) => set.push(("BAZAAR_DATABASE_URL".into(), url.clone().into())),
        // The gateway keeps no store.
        None => remove.push("BAZAAR_DATABASE_URL".to_owned()),
    }
    let scheme = if let Some(pki) = &shared.tls {
        set.push(("BAZAAR_TLS_CA_FILE".into(), pki.join("ca.pem").into()));
        if who.name != plan.gateway.name {
            for (var, ext) in [
                ("BAZAAR_TLS_CERT_FILE", "crt"),
                ("BAZAAR_TLS_KEY_FILE", "key"),
            ] {
                set.push((var.into(), pki.join(format!("{}.{ext}", who.name)).into()));
            }
        }
        "https://"
    } else {
        "http://"
    };
    let mut names: Vec<&'static str> = plan.modules.iter().map(|m| m.name).collect();
    names.dedup();
    for name in names {
        if name == who.name {
            // A peer variable for itself, inherited from the user's shell, would only
            // confuse it.
            remove.push(peer_var(name));
        } else {
            let urls: Vec<String> = plan
                .modules
                .iter()
                .filter(|m| m.name == name)
                .map(|m| m.url.replacen("http://", scheme, 1))
                .collect();
            set.push((peer_var(name), urls.join(",").into()));
        }
    }
    ChildEnv { set, remove }
}

/// The PostgreSQL role a module connects as (ADR 0008).
pub(crate) fn database_role(module: &str) -> String {
    format!("bazaar_{module}")
}

/// `url` (the administrator's) with `module`'s role and `password` as its user: the
/// URL the module connects with.
pub(crate) fn module_database_url(
    url: &str,
    module: &str,
    password: &str,
) -> Result<String, DevError> {
    let bad = |what: &str| DevError::DatabaseUrl(what.to_owned());
    // The error never echoes the URL: it may carry a password.
    let mut url = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    url.set_username(&database_role(module))
        .map_err(|()| bad("it has no host"))?;
    url.set_password(Some(password))
        .map_err(|()| bad("it has no host"))?;
    Ok(url.into())
}

/// The environment of the migration step of `who`'s module: `who`'s (a replica of
/// it), with the module named (`migrate` has no `--only`) and the administrator's URL,
/// which provisions the module's role before its store opens.
pub(crate) fn migrate_env(
    plan: &Plan,
    who: &Planned,
    shared: &Shared,
    admin_url: &str,
) -> ChildEnv {
    let mut env = child_env(plan, who, shared);
    env.remove
        .retain(|var| var != "BAZAAR_ONLY" && var != "BAZAAR_DATABASE_ADMIN_URL");
    env.set.push(("BAZAAR_ONLY".into(), who.name.into()));
    env.set
        .push(("BAZAAR_DATABASE_ADMIN_URL".into(), admin_url.into()));
    env
}

/// `<exe> [global flags] <args>` with `env`, stdin closed.
fn bazaar_command(exe: &Path, global_args: &[OsString], args: &[&str], env: &ChildEnv) -> Command {
    let mut command = Command::new(exe);
    command.args(global_args).args(args).stdin(Stdio::null());
    for key in &env.remove {
        command.env_remove(key);
    }
    command.envs(env.set.iter().map(|(k, v)| (k, v)));
    command
}

/// `<exe> [global flags] migrate` with `env` (from [`migrate_env`]).
pub(crate) fn migrate_command(exe: &Path, global_args: &[OsString], env: &ChildEnv) -> Command {
    bazaar_command(exe, global_args, &["migrate"], env)
}

/// `<exe> [global flags] serve --only <name>` with `env`, output piped, killed if
/// dropped.
pub(crate) fn child_command(
    exe: &Path,
    global_args: &[OsString],
    name: &str,
    env: &ChildEnv,
) -> Command {
    bazaar_command(exe, global_args, &["serve", "--only", name], env)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bazaar's modules, in its start order.
    const MODULES: [&str; 7] = [
        "identity",
        "catalog",
        "cart",
        "payments",
        "orders",
        "notifications",
        "analytics",
    ];

    const ADMIN_URL: &str = "postgres://pg:secret@db:5432/bazaar";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn plan_for(gateway: &str, base_port: Option<u16>) -> Result<Plan, DevError> {
        Plan::new("gateway", &MODULES, 1, addr(gateway), base_port)
    }

    fn shared() -> Shared {
        Shared {
            data_dir: PathBuf::from("/tmp/bz"),
            database_urls: MODULES
                .iter()
                .map(|&m| (m, module_database_url(ADMIN_URL, m, "pw").unwrap()))
                .collect(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_prefix: "bazaar".into(),
            jwt_secret: "j".repeat(32),
            service_keys: PathBuf::from("/tmp/bz/service-keys"),
            tls: None,
            metrics_token: "m".repeat(32),
        }
    }

    #[test]
    fn ports_follow_the_gateway_in_module_order() {
        let plan = plan_for("127.0.0.1:8080", None).unwrap();
        assert_eq!(plan.gateway.listen, addr("127.0.0.1:8080"));
        assert_eq!(plan.gateway.url, "http://127.0.0.1:8080");
        let ports: Vec<_> = plan
            .modules
            .iter()
            .map(|m| (m.name, m.listen.port()))
            .collect();
        assert_eq!(
            ports,
            [
                ("identity", 8081),
                ("catalog", 8082),
                ("cart", 8083),
                ("payments", 8084),
                ("orders", 8085),
                ("notifications", 8086),
                ("analytics", 8087)
            ]
        );
        let names: Vec<_> = plan.all().map(|s| s.name).collect();
        assert_eq!(names.last(), Some(&"gateway"));
    }

    #[test]
    fn base_port_moves_the_modules() {
        let plan = plan_for("0.0.0.0:9000", Some(7001)).unwrap();
        assert_eq!(plan.modules[0].listen, addr("0.0.0.0:7001"));
        assert_eq!(plan.modules[6].listen, addr("0.0.0.0:7007"));
        // Peers reach an unspecified address on loopback.
        assert_eq!(plan.modules[1].url, "http://127.0.0.1:7002");
        assert_eq!(plan.gateway.url, "http://127.0.0.1:9000");
        let v6 = plan_for("[::1]:8080", None).unwrap();
        assert_eq!(v6.modules[0].url, "http://[::1]:8081");
    }

    #[test]
    fn impossible_port_plans_are_refused() {
        let err = |gateway: &str, base| plan_for(gateway, base).unwrap_err().to_string();
        assert!(err("127.0.0.1:0", None).contains("port 0"));
        assert!(err("127.0.0.1:65535", None).contains("--base-port"));
        assert!(err("127.0.0.1:65530", None).contains("65535"));
        assert!(err("127.0.0.1:8080", Some(8077)).contains("8080"));
        assert!(err("127.0.0.1:8080", Some(0)).contains('0'));
        assert!(plan_for("127.0.0.1:8080", Some(8073)).is_ok());
        assert!(plan_for("127.0.0.1:65528", None).is_ok());
        let none = Plan::new("gateway", &[], 1, addr("127.0.0.1:8080"), None).unwrap_err();
        assert!(none.to_string().contains("no modules"), "{none}");
    }

    fn env_map(env: &ChildEnv) -> std::collections::BTreeMap<String, String> {
        env.set
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn with_tls_modules_get_their_certificate_and_everyone_reaches_them_over_https() {
        let plan = plan_for("127.0.0.1:8080", None).unwrap();
        let shared = Shared {
            tls: Some(PathBuf::from("/tmp/bz/tls")),
            ..shared()
        };
        let catalog = env_map(&child_env(&plan, &plan.modules[1], &shared));
        assert_eq!(catalog["BAZAAR_TLS_CERT_FILE"], "/tmp/bz/tls/catalog.crt");
        assert_eq!(catalog["BAZAAR_TLS_KEY_FILE"], "/tmp/bz/tls/catalog.key");
        assert_eq!(catalog["BAZAAR_TLS_CA_FILE"], "/tmp/bz/tls/ca.pem");
        assert_eq!(catalog["BAZAAR_PEER_IDENTITY"], "https://127.0.0.1:8081");
        let gateway = env_map(&child_env(&plan, &plan.gateway, &shared));
        assert!(
            !gateway.contains_key("BAZAAR_TLS_CERT_FILE"),
            "the gateway stays plain"
        );
        assert_eq!(gateway["BAZAAR_TLS_CA_FILE"], "/tmp/bz/tls/ca.pem");
        assert_eq!(gateway["BAZAAR_PEER_CATALOG"], "https://127.0.0.1:8082");
    }

    #[test]
    fn a_module_gets_its_address_dir_shared_settings_and_the_other_six_peers() {
        let plan = plan_for("127.0.0.1:8080", None).unwrap();
        let catalog = &plan.modules[1];
        let env = child_env(&plan, catalog, &shared());
        let vars = env_map(&env);
        assert_eq!(vars["BAZAAR_HTTP_ADDR"], "127.0.0.1:8082");
        assert_eq!(vars["BAZAAR_DATA_DIR"], "/tmp/bz/catalog");
        assert_eq!(
            vars["BAZAAR_DATABASE_URL"],
            "postgres://bazaar_catalog:pw@db:5432/bazaar"
        );
        assert!(env.remove.contains(&"BAZAAR_DATABASE_ADMIN_URL".to_owned()));
        assert_eq!(vars["BAZAAR_NATS_URL"], "nats://127.0.0.1:4222");
        assert_eq!(vars["BAZAAR_NATS_PREFIX"], "bazaar");
        assert_eq!(vars["BAZAAR_JWT_SECRET"], "j".repeat(32));
        assert_eq!(
            vars["BAZAAR_SERVICE_KEYS_DIR"],
            "/tmp/bz/service-keys/catalog"
        );
        assert!(env.remove.contains(&"BAZAAR_SERVICE_SECRET".to_owned()));
        let peers: Vec<_> = vars
            .keys()
            .filter(|k| k.starts_with("BAZAAR_PEER_"))
            .collect();
        assert_eq!(peers.len(), 6, "{peers:?}");
        assert!(!vars.contains_key("BAZAAR_PEER_CATALOG"));
        assert_eq!(vars["BAZAAR_PEER_IDENTITY"], "http://127.0.0.1:8081");
        assert_eq!(vars["BAZAAR_PEER_ANALYTICS"], "http://127.0.0.1:8087");
        assert!(env.remove.contains(&"BAZAAR_PEER_CATALOG".to_owned()));
        assert!(env.remove.contains(&"BAZAAR_ONLY".to_owned()));
    }

    #[test]
    fn the_gateway_gets_all_seven_peers() {
        let plan = plan_for("127.0.0.1:8080", None).unwrap();
        let vars = env_map(&child_env(&plan, &plan.gateway, &shared()));
        assert_eq!(vars["BAZAAR_HTTP_ADDR"], "127.0.0.1:8080");
        assert_eq!(vars["BAZAAR_DATA_DIR"], "/tmp/bz/gateway");
        for (module, port) in MODULES.iter().zip(8081..) {
            assert_eq!(vars[&peer_var(module)], format!("http://127.0.0.1:{port}"));
        }
    }

    #[test]
    fn replicas_get_ports_of_their_own_and_peers_list_them_all() {
        let plan = Plan::new("gateway", &MODULES, 2, addr("127.0.0.1:8080"), None).unwrap();
        assert_eq!(plan.modules.len(), 14);
        let labels: Vec<_> = plan
            .modules
            .iter()
            .take(4)
            .map(|m| (m.name, m.label.as_str(), m.listen.port()))
            .collect();
        assert_eq!(
            labels,
            [
                ("identity", "identity-1", 8081),
                ("identity", "identity-2", 8082),
                ("catalog", "catalog-1", 8083),
                ("catalog", "catalog-2", 8084)
            ]
        );
        assert_eq!(plan.modules[13].listen.port(), 8094);
        let second_catalog = &plan.modules[3];
        let env = child_env(&plan, second_catalog, &shared());
        let vars = env_map(&env);
        assert_eq!(vars["BAZAAR_DATA_DIR"], "/tmp/bz/catalog-2");
        assert_eq!(
            vars["BAZAAR_PEER_IDENTITY"],
            "http://127.0.0.1:8081,http://127.0.0.1:8082"
        );
        assert!(!vars.contains_key("BAZAAR_PEER_CATALOG"));
        let gateway = env_map(&child_env(&plan, &plan.gateway, &shared()));
        assert_eq!(
            gateway["BAZAAR_PEER_ANALYTICS"],
            "http://127.0.0.1:8093,http://127.0.0.1:8094"
        );
        // The ports must fit.
        assert!(Plan::new("gateway", &MODULES, 2, addr("127.0.0.1:65525"), None).is_err());
        assert!(Plan::new("gateway", &MODULES, 0, addr("127.0.0.1:8080"), None).is_err());
    }

    #[test]
    fn the_command_is_serve_only_with_the_global_flags_first() {
        let plan = plan_for("127.0.0.1:8080", None).unwrap();
        let env = child_env(&plan, &plan.modules[3], &shared());
        let command = child_command(
            Path::new("/bin/bazaar"),
            &["--config".into(), "b.toml".into()],
            "payments",
            &env,
        );
        let std = command.as_std();
        assert_eq!(std.get_program(), "/bin/bazaar");
        let args: Vec<_> = std.get_args().collect();
        assert_eq!(args, ["--config", "b.toml", "serve", "--only", "payments"]);
        let envs: Vec<_> = std.get_envs().collect();
        assert!(envs.contains(&(std::ffi::OsStr::new("BAZAAR_PEER_PAYMENTS"), None)));
        assert!(envs.contains(&(
            std::ffi::OsStr::new("BAZAAR_HTTP_ADDR"),
            Some(std::ffi::OsStr::new("127.0.0.1:8084"))
        )));
    }

    #[test]
    fn each_module_connects_as_its_own_role_and_only_its_migration_step_administers() {
        let plan = Plan::new("gateway", &MODULES, 2, addr("127.0.0.1:8080"), None).unwrap();
        let shared = shared();
        for who in &plan.modules {
            let vars = env_map(&child_env(&plan, who, &shared));
            assert_eq!(
                vars["BAZAAR_DATABASE_URL"],
                format!("postgres://bazaar_{}:pw@db:5432/bazaar", who.name),
                "{}",
                who.label
            );
            assert!(!vars.contains_key("BAZAAR_DATABASE_ADMIN_URL"));
            let migrate = migrate_env(&plan, who, &shared, ADMIN_URL);
            let migrate_vars = env_map(&migrate);
            assert_eq!(migrate_vars["BAZAAR_DATABASE_ADMIN_URL"], ADMIN_URL);
            assert_eq!(
                migrate_vars["BAZAAR_DATABASE_URL"],
                vars["BAZAAR_DATABASE_URL"]
            );
            assert_eq!(migrate_vars["BAZAAR_ONLY"], who.name);
            assert!(!migrate.remove.contains(&"BAZAAR_ONLY".to_owned()));
            assert!(
                !migrate
                    .remove
                    .contains(&"BAZAAR_DATABASE_ADMIN_URL".to_owned())
            );
        }
        // The gateway keeps no store: no database URL at all, not even the user's.
        let gateway = child_env(&plan, &plan.gateway, &shared);
        assert!(!env_map(&gateway).contains_key("BAZAAR_DATABASE_URL"));
        assert!(gateway.remove.contains(&"BAZAAR_DATABASE_URL".to_owned()));
        assert!(
            gateway
                .remove
                .contains(&"BAZAAR_DATABASE_ADMIN_URL".to_owned())
        );
        let command = migrate_command(
            Path::new("/bin/bazaar"),
            &["--config".into(), "b.toml".into()],
            &migrate_env(&plan, &plan.modules[0], &shared, ADMIN_URL),
        );
        let args: Vec<_> = command.as_std().get_args().collect();
        assert_eq!(args, ["--config", "b.toml", "migrate"]);
    }

    #[test]
    fn a_module_url_is_the_given_one_with_the_modules_role_and_password() {
        assert_eq!(
            module_database_url("postgres://postgres@127.0.0.1:5432/test", "orders", "p-w_1")
                .unwrap(),
            "postgres://bazaar_orders:p-w_1@127.0.0.1:5432/test"
        );
        assert_eq!(
            module_database_url("postgresql://a:b@db/x?sslmode=disable", "cart", "c").unwrap(),
            "postgresql://bazaar_cart:c@db/x?sslmode=disable"
        );
        let err = module_database_url("postgres:nohost", "cart", "c").unwrap_err();
        assert!(err.to_string().contains("no host"), "{err}");
        assert!(module_database_url("not a url", "cart", "c").is_err());
    }
}
