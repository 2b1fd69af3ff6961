//! Prometheus: the scrape configs, their targets from the registry (the monolith,
//! `bazaar dev --split`'s local ports, Kubernetes service discovery). The alert rules,
//! their unit tests and the Grafana dashboard are written by hand and copied verbatim,
//! so every file under `deploy/` is this command's output.

use std::fmt::Write as _;

use chassis::module::Registry;

use super::{File, components, header};

const RULES: &str = include_str!("../../../../deploy/prometheus/rules/bazaar.yml");
const RULES_TEST: &str = include_str!("../../../../deploy/prometheus/rules/bazaar_test.yml");
const DASHBOARD: &str = include_str!("../../../../deploy/grafana/bazaar.json");

/// `bazaar dev --split`'s default ports: the gateway on 8080, the modules on the ports
/// after it in registry order.
const DEV_GATEWAY_PORT: u16 = 8080;

const SCRAPE_GLOBAL: &str = "global:
  scrape_interval: 15s
  scrape_timeout: 10s
  evaluation_interval: 15s

rule_files:
  - rules/bazaar.yml
";

pub(super) fn render(registry: &Registry) -> Vec<File> {
    vec![
        File::new("prometheus/prometheus.yml", local(registry)),
        File::new("prometheus/prometheus-kubernetes.yml", kubernetes(registry)),
        File::new("prometheus/rules/bazaar.yml", RULES),
        File::new("prometheus/rules/bazaar_test.yml", RULES_TEST),
        File::new("grafana/bazaar.json", DASHBOARD),
    ]
}

fn local(registry: &Registry) -> String {
    let mut out = header("#", "prometheus.rs");
    out.push_str(
        "#
# Prometheus scraping bazaar: the monolith (`bazaar serve`) and the split topology
# as `bazaar dev --split` starts it (gateway on 8080, modules on the ports after it).
# Keep the job for the topology you run and delete the other, or every module target
# of the split job is reported down next to a monolith. On Kubernetes, use
# prometheus-kubernetes.yml instead.
#
#   prometheus --config.file=deploy/prometheus/prometheus.yml
#   promtool check config deploy/prometheus/prometheus.yml
#
# Metrics are served at /metrics on the HTTP port of every process, never rate
# limited nor shed, to the scrape credential only: bazaar-metrics-token, next to this
# file (git-ignored), holds the deployment's metrics_token (BAZAAR_METRICS_TOKEN, or
# <data_dir>/metrics-token):  cp data/metrics-token deploy/prometheus/bazaar-metrics-token
# Target labels: `component` (gateway or the module); `service`, `module` and
# `consumer` are already metric labels, so they are not used here.
",
    );
    out.push_str(SCRAPE_GLOBAL);
    let _ = write!(
        out,
        "
scrape_configs:
  # The monolith: one process, every module.
  - job_name: bazaar
    authorization:
      credentials_file: bazaar-metrics-token
    static_configs:
      - targets: [\"127.0.0.1:{DEV_GATEWAY_PORT}\"]
        labels:
          topology: monolith
          component: bazaar

  # The split topology: the gateway and one process per module (bazaar dev --split's
  # ports; on other hosts, list their addresses).
  - job_name: bazaar-split
    authorization:
      credentials_file: bazaar-metrics-token
    static_configs:
"
    );
    for (component, port) in components(registry).iter().zip(DEV_GATEWAY_PORT..) {
        let _ = write!(
            out,
            "      - targets: [\"127.0.0.1:{port}\"]\n        labels: {{topology: split, component: {}}}\n",
            component.name
        );
    }
    out
}

fn kubernetes(registry: &Registry) -> String {
    let names: Vec<&str> = components(registry).iter().map(|c| c.name).collect();
    let mut out = header("#", "prometheus.rs");
    out.push_str(
        "#
# Prometheus scraping bazaar on Kubernetes (deploy/kubernetes): every endpoint of the
# Services named after the gateway and the modules, in the namespaces listed, on the
# Service port named `http` (peers are reached as http://<module>:8080). The monolith
# overlay's Service `bazaar` is picked up the same way.
#
#   promtool check config deploy/prometheus/prometheus-kubernetes.yml
#
# Prometheus needs RBAC to list/watch endpoints, services and pods in those
# namespaces, and the deployment's scrape credential (metrics_token) mounted from its
# Secret at the credentials_file path below. The NetworkPolicies admit the scraper
# from pods labelled `bazaar.dev/metrics-scraper: \"true\"` in any namespace.
",
    );
    out.push_str(SCRAPE_GLOBAL);
    let _ = write!(
        out,
        "
scrape_configs:
  - job_name: bazaar
    authorization:
      credentials_file: /etc/prometheus/secrets/bazaar-metrics-token/token
    kubernetes_sd_configs:
      - role: endpoints
        namespaces:
          names: [bazaar]
    relabel_configs:
      - source_labels: [__meta_kubernetes_service_name]
        regex: bazaar|{}
        action: keep
      - source_labels: [__meta_kubernetes_endpoint_port_name]
        regex: http
        action: keep
      - source_labels: [__meta_kubernetes_service_name]
        target_label: component
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      # One instance per pod, stable across container restarts, so a crash loop shows
      # up as changes of process_start_time_seconds on one series.
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: instance
",
        names.join("|")
    );
    out
}
