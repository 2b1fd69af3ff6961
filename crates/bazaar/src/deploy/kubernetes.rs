//! Kubernetes (`deploy/kubernetes`): a kustomize base (namespace, settings, a default
//! deny of ingress) and two overlays. `monolith`: one bazaar Deployment. `split`: the
//! gateway and every module, each with its Deployment, Service, PodDisruptionBudget,
//! HorizontalPodAutoscaler, ServiceAccount and a NetworkPolicy admitting only the
//! gateway, the modules the registry says call it, and the metrics scraper.
//!
//! PostgreSQL and NATS are external; their URLs and bazaar's secrets are Secrets the
//! operator creates (referenced by key, never rendered with values).

use std::fmt::Write as _;

use chassis::module::Registry;

use super::{Component, DATA_DIR, File, IMAGE, PORT, USER_ID, components, header};
use crate::topology::holds_jwt_secret;

const NAMESPACE: &str = "bazaar";
/// Pods in namespaces that carry this label, and carry it themselves, may scrape
/// `/metrics` (Prometheus).
pub(crate) const SCRAPER_LABEL: &str = "bazaar.dev/metrics-scraper";
/// The operator's Secrets (docs/operations.md, Deploying).
const SECRETS: &str = "bazaar-secrets";
const POSTGRES_SECRET: &str = "bazaar-postgres";
const NATS_SECRET: &str = "bazaar-nats";

/// The split's replicas per component: two, so one may be drained or crash.
const MIN_REPLICAS: u32 = 2;
const MAX_REPLICAS: u32 = 10;

pub(super) fn render(registry: &Registry) -> Vec<File> {
    let components = components(registry);
    let mut files = vec![
        File::new("kubernetes/base/kustomization.yaml", base_kustomization()),
        File::new("kubernetes/base/namespace.yaml", namespace()),
        File::new("kubernetes/base/settings.yaml", settings()),
        File::new("kubernetes/base/default-deny.yaml", default_deny()),
        File::new(
            "kubernetes/overlays/monolith/kustomization.yaml",
            overlay(&["bazaar.yaml"]),
        ),
        File::new("kubernetes/overlays/monolith/bazaar.yaml", monolith()),
    ];
    let names: Vec<String> = components
        .iter()
        .map(|c| format!("{}.yaml", c.name))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    files.push(File::new(
        "kubernetes/overlays/split/kustomization.yaml",
        overlay(&names),
    ));
    for component in &components {
        files.push(File::new(
            format!("kubernetes/overlays/split/{}.yaml", component.name),
            split_component(component),
        ));
    }
    files
}

fn base_kustomization() -> String {
    let mut out = header("#", "kubernetes.rs");
    let _ = write!(
        out,
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {NAMESPACE}
resources:
  - namespace.yaml
  - settings.yaml
  - default-deny.yaml
"
    );
    out
}

fn overlay(resources: &[&str]) -> String {
    let (name, tag) = IMAGE.split_once(':').unwrap_or((IMAGE, "latest"));
    let mut out = header("#", "kubernetes.rs");
    let _ = write!(
        out,
        "#
# kubectl apply -k <this directory>, after creating the Secrets {SECRETS},
# {POSTGRES_SECRET} and {NATS_SECRET} (docs/operations.md, Deploying). Pin the image
# you ship: kustomize edit set image {name}=<registry>/{name}@sha256:<digest>
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {NAMESPACE}
resources:
  - ../../base
"
    );
    for resource in resources {
        let _ = writeln!(out, "  - {resource}");
    }
    let _ = write!(
        out,
        "images:
  - name: {name}
    newTag: \"{}\"
",
        if tag == "latest" {
            env!("CARGO_PKG_VERSION")
        } else {
            tag
        }
    );
    out
}

fn namespace() -> String {
    let mut out = header("#", "kubernetes.rs");
    let _ = write!(
        out,
        "apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: bazaar
    pod-security.kubernetes.io/enforce: restricted
"
    );
    out
}

/// Settings every process shares; per-process ones are in its Deployment.
fn settings() -> String {
    let mut out = header("#", "kubernetes.rs");
    let _ = write!(
        out,
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: bazaar-settings
  labels:
    app.kubernetes.io/part-of: bazaar
data:
  BAZAAR_HTTP_ADDR: \"0.0.0.0:{PORT}\"
  BAZAAR_DATA_DIR: {DATA_DIR}
  BAZAAR_LOG_FORMAT: json
  BAZAAR_NATS_PREFIX: bazaar
  # R3 streams on the NATS cluster of three (docs/operations.md, Deploying)
  BAZAAR_NATS_STREAM_REPLICAS: \"3\"
"
    );
    out
}

fn default_deny() -> String {
    let mut out = header("#", "kubernetes.rs");
    out.push_str(
        "# Nothing reaches a pod of this namespace unless a NetworkPolicy of its own admits it.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  labels:
    app.kubernetes.io/part-of: bazaar
spec:
  podSelector: {}
  policyTypes: [Ingress]
",
    );
    out
}

fn labels(component: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{pad}app.kubernetes.io/name: bazaar\n{pad}app.kubernetes.io/component: {component}\n{pad}app.kubernetes.io/part-of: bazaar\n"
    )
}

fn selector(component: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!("{pad}app.kubernetes.io/name: bazaar\n{pad}app.kubernetes.io/component: {component}\n")
}

fn metadata(kind_line: &str, name: &str, annotations: &[(&str, String)]) -> String {
    let mut out = format!(
        "{kind_line}metadata:\n  name: {name}\n  labels:\n{}",
        labels(name, 4)
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (key, value) in annotations {
            let _ = writeln!(out, "    {key}: \"{value}\"");
        }
    }
    out
}

/// What a process of `name` runs with: its modules, peers and the Secrets it needs.
// One flag per Secret it reads: an enum per combination would say less.
#[allow(clippy::struct_excessive_bools)]
struct Process<'a> {
    name: &'a str,
    only: Option<&'a str>,
    peers: Vec<(String, String)>,
    database: bool,
    nats: bool,
    service_secret: bool,
    jwt_secret: bool,
    /// Runs `bazaar migrate` before it starts (a process with stores).
    migrates: bool,
    /// Connects to PostgreSQL as a role of its own (a module of the split, ADR 0008):
    /// its URL is the Secret's key `database-url-<name>`; its migration step alone also
    /// gets the administrator's `database-url`, to create that role and hand it the
    /// module's schema.
    own_role: bool,
    replicas: u32,
}

fn secret_env(out: &mut String, var: &str, secret: &str, key: &str) {
    let _ = write!(
        out,
        "            - name: {var}
              valueFrom:
                secretKeyRef:
                  name: {secret}
                  key: {key}
"
    );
}

/// The environment of the server container, or with `migrate` of its migration step.
fn env(process: &Process<'_>, migrate: bool) -> String {
    let mut out = String::from(
        "          envFrom:
            - configMapRef:
                name: bazaar-settings
          env:
",
    );
    if let Some(only) = process.only {
        let _ = write!(
            out,
            "            - name: BAZAAR_ONLY\n              value: {only}\n"
        );
    }
    for (var, url) in &process.peers {
        let _ = write!(
            out,
            "            - name: {var}\n              value: {url}\n"
        );
    }
    if process.database && process.own_role {
        let own = format!("database-url-{}", process.name);
        secret_env(&mut out, "BAZAAR_DATABASE_URL", POSTGRES_SECRET, &own);
        if migrate {
            secret_env(
                &mut out,
                "BAZAAR_DATABASE_ADMIN_URL",
                POSTGRES_SECRET,
                "database-url",
            );
        }
    } else if process.database {
        secret_env(
            &mut out,
            "BAZAAR_DATABASE_URL",
            POSTGRES_SECRET,
            "database-url",
        );
    }
    if process.nats {
        secret_env(&mut out, "BAZAAR_NATS_URL", NATS_SECRET, "url");
    }
    if process.jwt_secret {
        secret_env(&mut out, "BAZAAR_JWT_SECRET", SECRETS, "jwt-secret");
    }
    if process.service_secret {
        secret_env(&mut out, "BAZAAR_SERVICE_SECRET", SECRETS, "service-secret");
    }
    secret_env(&mut out, "BAZAAR_METRICS_TOKEN", SECRETS, "metrics-token");
    out
}

const CONTAINER_SECURITY: &str = "          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities:
              drop: [ALL]
";

const RESOURCES: &str = "          resources:
            requests:
              cpu: 100m
              memory: 128Mi
            limits:
              cpu: \"1\"
              memory: 512Mi
";

fn deployment(process: &Process<'_>) -> String {
    let name = process.name;
    let skips = [
        (
            "checkov.io/skip1",
            "CKV_K8S_43=the digest is known once the image is built: pin it in the overlay with kustomize edit set image".to_owned(),
        ),
        (
            "checkov.io/skip2",
            "CKV_K8S_35=bazaar reads its settings from BAZAAR_* variables; each secret is a secretKeyRef to its own key, never a value".to_owned(),
        ),
    ];
    let strategy = if process.replicas > 1 {
        // A new pod is ready before an old one goes: capacity never drops.
        "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n"
    } else {
        // One monolith at a time: its in-process bus and workers assume it is alone.
        "  strategy:\n    type: Recreate\n"
    };
    let mut out = metadata("apiVersion: apps/v1\nkind: Deployment\n", name, &skips);
    let _ = write!(
        out,
        "spec:
  replicas: {replicas}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
{selector}{strategy}  template:
    metadata:
      labels:
{labels}    spec:
      serviceAccountName: {name}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 45
      securityContext:
        runAsNonRoot: true
        runAsUser: {USER_ID}
        runAsGroup: {USER_ID}
        fsGroup: {USER_ID}
        seccompProfile:
          type: RuntimeDefault
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
{spread}        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
{spread}",
        replicas = process.replicas,
        selector = selector(name, 6),
        labels = labels(name, 8),
        spread = selector(name, 14),
    );
    let server_env = env(process, false);
    if process.migrates {
        // The server's, plus the administrator's URL to provision the module's role.
        let migrate_env = env(process, true);
        let _ = write!(
            out,
            "      initContainers:
        # Schema migrations before the server starts (serve would apply them too;
        # PostgreSQL's migration lock lets replicas run this at once).
        - name: migrate
          image: {IMAGE}
          imagePullPolicy: Always
          args: [\"migrate\"]
{migrate_env}{CONTAINER_SECURITY}{RESOURCES}          volumeMounts:
            - name: data
              mountPath: {DATA_DIR}
            - name: tmp
              mountPath: /tmp
"
        );
    }
    let _ = write!(
        out,
        "      containers:
        - name: bazaar
          image: {IMAGE}
          imagePullPolicy: Always
          args: [\"serve\"]
          ports:
            - name: http
              containerPort: {PORT}
              protocol: TCP
{server_env}{CONTAINER_SECURITY}{RESOURCES}          startupProbe:
            httpGet:
              path: /health/live
              port: http
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /health/live
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /health/ready
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          volumeMounts:
            - name: data
              mountPath: {DATA_DIR}
            - name: tmp
              mountPath: /tmp
      volumes:
        # The stores are in PostgreSQL: the data dir holds only local files (mail).
        - name: data
          emptyDir:
            sizeLimit: 1Gi
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
"
    );
    out
}

fn service_account(name: &str) -> String {
    let mut out = metadata("apiVersion: v1\nkind: ServiceAccount\n", name, &[]);
    out.push_str("automountServiceAccountToken: false\n");
    out
}

fn service(name: &str) -> String {
    let mut out = metadata("apiVersion: v1\nkind: Service\n", name, &[]);
    let _ = write!(
        out,
        "spec:
  selector:
{}  ports:
    - name: http
      port: {PORT}
      targetPort: http
      protocol: TCP
",
        selector(name, 4)
    );
    out
}

fn disruption_budget(name: &str) -> String {
    let mut out = metadata(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\n",
        name,
        &[],
    );
    let _ = write!(
        out,
        "spec:
  maxUnavailable: 1
  selector:
    matchLabels:
{}",
        selector(name, 6)
    );
    out
}

fn autoscaler(name: &str) -> String {
    let mut out = metadata(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n",
        name,
        &[],
    );
    let _ = write!(
        out,
        "spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {name}
  minReplicas: {MIN_REPLICAS}
  maxReplicas: {MAX_REPLICAS}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: 70
"
    );
    out
}

/// Ingress to `name` on its HTTP port: from `callers` (components of this
/// deployment), or from anywhere when `callers` is `None` (the edge), and from the
/// metrics scraper.
fn network_policy(name: &str, callers: Option<&[&str]>) -> String {
    let mut out = metadata(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n",
        name,
        &[],
    );
    let _ = write!(
        out,
        "spec:
  podSelector:
    matchLabels:
{}  policyTypes: [Ingress]
  ingress:
",
        selector(name, 6)
    );
    match callers {
        None => out.push_str(
            "    # The edge: clients, through the ingress or load balancer.
    - ports:
        - port: http
          protocol: TCP
",
        ),
        Some(callers) => {
            let _ = write!(
                out,
                "    # Who calls {name}: the gateway and the modules whose contracts call it
    # (the module registry), plus the metrics scraper.
    - from:
"
            );
            for caller in callers {
                let _ = write!(
                    out,
                    "        - podSelector:\n            matchLabels:\n{}",
                    selector(caller, 14)
                );
            }
            let _ = write!(
                out,
                "        - namespaceSelector:
            matchLabels:
              {SCRAPER_LABEL}: \"true\"
          podSelector:
            matchLabels:
              {SCRAPER_LABEL}: \"true\"
      ports:
        - port: http
          protocol: TCP
"
            );
        }
    }
    out
}

fn split_component(component: &Component) -> String {
    let name = component.name;
    let gateway = component.is_gateway();
    let process = Process {
        name,
        only: Some(name),
        peers: component.peers(),
        database: !gateway,
        nats: !gateway,
        service_secret: true,
        jwt_secret: holds_jwt_secret(name),
        migrates: !gateway,
        own_role: !gateway,
        replicas: MIN_REPLICAS,
    };
    let mut out = header("#", "kubernetes.rs");
    let _ = writeln!(
        out,
        "# {name}: {}",
        if gateway {
            "the edge, in front of every module (put your ingress or load balancer in front of its Service)".to_owned()
        } else {
            format!("called by {}", component.callers.join(", "))
        }
    );
    let callers = (!gateway).then_some(component.callers.as_slice());
    let documents = [
        service_account(name),
        service(name),
        deployment(&process),
        disruption_budget(name),
        autoscaler(name),
        network_policy(name, callers),
    ];
    out.push_str(&documents.join("---\n"));
    out
}

fn monolith() -> String {
    let process = Process {
        name: "bazaar",
        only: None,
        peers: Vec::new(),
        database: true,
        nats: false,
        service_secret: false,
        jwt_secret: true,
        migrates: true,
        own_role: false,
        replicas: 1,
    };
    let mut out = header("#", "kubernetes.rs");
    out.push_str(
        "# The monolith: every module in one process, on PostgreSQL. One replica (Recreate):
# scale out with the split overlay.
",
    );
    let documents = [
        service_account("bazaar"),
        service("bazaar"),
        deployment(&process),
        network_policy("bazaar", None),
    ];
    out.push_str(&documents.join("---\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The components a rendered NetworkPolicy admits (its `from` pod selectors).
    fn admitted(policy: &str) -> Vec<&str> {
        policy
            .lines()
            .filter_map(|l| l.trim().strip_prefix("app.kubernetes.io/component: "))
            .skip(2) // the policy's own labels and pod selector
            .collect()
    }

    #[test]
    fn a_module_admits_the_gateway_and_its_callers_only() {
        let registry = crate::registry();
        let files = render(&registry);
        for component in components(&registry) {
            let file = files
                .iter()
                .find(|f| f.path == format!("kubernetes/overlays/split/{}.yaml", component.name))
                .unwrap();
            let policy = file.contents.split("---\n").last().unwrap();
            assert!(policy.contains("kind: NetworkPolicy"));
            if component.is_gateway() {
                assert!(admitted(policy).is_empty(), "the edge: from anywhere");
                assert!(!policy.contains("from:"));
            } else {
                let mut expected = vec!["gateway"];
                expected.extend(registry.callers(component.name));
                assert_eq!(admitted(policy), expected, "{}", component.name);
            }
        }
        assert_eq!(registry.callers("payments"), ["orders"]);
    }
}
