#!/usr/bin/env bash
# Assemble the container image's root filesystem: the bazaar binary and exactly what it
# needs at run time, nothing else (no shell, no package manager).
#
#   scripts/container-rootfs.sh BINARY DIR
#
# Used in two places, so the image has one definition of its contents:
#   - the Dockerfile's build stage (deploy/container/Dockerfile), on the binary it has
#     just built with the dist profile;
#   - scripts/image-check.sh, on the binary CI already built, then passed to buildah as
#     the `rootfs` stage (`--build-context rootfs=DIR`), so CI builds no second profile
#     and pulls no base image.
#
# DIR gets:
#   /bazaar                              the binary, debug info stripped
#   the shared libraries `ldd` lists, and the dynamic loader, at their paths
#   /etc/ssl/certs/ca-certificates.crt   for TLS to NATS (async-nats reads the system
#                                        roots through rustls-native-certs)
#   /etc/passwd, /etc/group              one numeric non-root user, 65532 (nonroot)
#   /etc/nsswitch.conf                   /etc/hosts before DNS, as glibc expects
#   /data                                the data dir, owned by 65532, mode 0700
# Run it as root (the chown of /data); the binary must be a glibc-linked ELF built on
# the same distribution whose libraries are copied (Debian bookworm here and in the
# Dockerfile's build stage).
set -euo pipefail

die() {
    printf '[container-rootfs] ERROR: %s\n' "$*" >&2
    exit 1
}

[[ $# -eq 2 ]] || die "usage: $0 BINARY DIR"
bin=$1
dir=$2
uid=65532

[[ -x $bin ]] || die "$bin is not an executable"
ca=/etc/ssl/certs/ca-certificates.crt
[[ -s $ca ]] || die "$ca is missing (install Debian's ca-certificates)"

rm -rf "$dir"
mkdir -p "$dir/etc/ssl/certs" "$dir/data"

# --strip-debug keeps the symbol table (function names in backtraces) and is a no-op on
# a binary the dist profile already stripped.
objcopy --strip-debug "$bin" "$dir/bazaar"
chmod 0755 "$dir/bazaar"

# Every library with a path in ldd's answer (the vDSO has none), the loader among them,
# copied as files (-L) under the same paths: the loader finds them in its built-in
# multiarch directories, no ld.so.cache needed.
libs=$(ldd "$dir/bazaar" | grep -o '/[^ ]*') || die "ldd found no libraries: is $bin dynamically linked?"
for lib in $libs; do
    cp --parents -L "$lib" "$dir/"
done

cp "$ca" "$dir/etc/ssl/certs/ca-certificates.crt"
printf 'nonroot:x:%d:%d:nonroot:/nonexistent:/sbin/nologin\n' "$uid" "$uid" >"$dir/etc/passwd"
printf 'nonroot:x:%d:\n' "$uid" >"$dir/etc/group"
printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"

chown "$uid:$uid" "$dir/data"
chmod 0700 "$dir/data"

printf '[container-rootfs] %s: %s\n' "$dir" "$(cd "$dir" && find . -type f | sort | tr '\n' ' ')"
