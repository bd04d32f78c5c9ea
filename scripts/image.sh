#!/usr/bin/env bash
# Builds the stepper-local container image FROM scratch with buildah (Debian's package): no base image is
# pulled. The image holds the binary, the shared libraries it links (none for a static musl build; the
# C library and its loader for a glibc build, found with ldd), the CA bundle, an /etc/passwd with the
# non-root user it runs as, and STEPPER_LISTEN=0.0.0.0:3005.
#
#   scripts/image.sh [BINARY] [TAG]
#     BINARY  the stepper-local to put in the image (default: the static musl release build,
#             target/x86_64-unknown-linux-musl/release/stepper-local, then target/release/stepper-local)
#     TAG     the image's name (default: localhost/stepper-local:latest)
#
# The static build (see docs/deploy.md, "Without AWS"):
#   rustup target add x86_64-unknown-linux-musl && apt-get install musl-tools
#   cargo build --release -p stepper-local --target x86_64-unknown-linux-musl
# `docker build -f Containerfile .` builds the same image from that binary without buildah.
#
# Prints the image's name and its size on the last line: `image <tag> <bytes> bytes (<buildah's size>)`.
set -euo pipefail
cd "$(dirname "$0")/.."

BINARY="${1:-}"
TAG="${2:-localhost/stepper-local:latest}"
if [ -z "$BINARY" ]; then
  for candidate in target/x86_64-unknown-linux-musl/release/stepper-local target/release/stepper-local; do
    if [ -x "$candidate" ]; then BINARY="$candidate"; break; fi
  done
fi
if [ -z "$BINARY" ] || [ ! -x "$BINARY" ]; then
  echo "image.sh: no stepper-local binary (build it first, see the header of this script)" >&2
  exit 2
fi
command -v buildah >/dev/null || { echo "image.sh: buildah is not installed (apt-get install buildah)" >&2; exit 2; }

# The user the server runs as (no shell, no home): the same numbers as the Containerfile's.
UID_GID=10001
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

ctr=$(buildah from scratch)
cleanup() { buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
root=$(buildah mount "$ctr")

install -D -m 0755 "$BINARY" "$root/stepper-local"
# A debug build carries its symbols: the image does not need them (a stripped release build is unchanged).
if command -v strip >/dev/null; then
  strip "$root/stepper-local"
fi
# A dynamically linked binary brings its libraries and loader, at the paths it looks for them.
if ldd "$BINARY" >/dev/null 2>&1; then
  ldd "$BINARY" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
fi
install -D -m 0644 "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$root/etc"
echo "stepper:x:$UID_GID:$UID_GID:stepper:/:/stepper-local" > "$root/etc/passwd"
echo "stepper:x:$UID_GID:" > "$root/etc/group"
# What the image holds, in bytes (its one layer, uncompressed).
size=$(du -sb "$root" | cut -f1)
buildah umount "$ctr" >/dev/null

buildah config \
  --user "$UID_GID:$UID_GID" \
  --env STEPPER_LISTEN=0.0.0.0:3005 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --env LOG_FORMAT=json \
  --port 3005 \
  --entrypoint '["/stepper-local"]' \
  --cmd '[]' \
  --label org.opencontainers.image.title=stepper-local \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$TAG" >/dev/null
trap - EXIT
echo "image $TAG $size bytes ($(buildah images --noheading --format '{{.Size}}' "$TAG"))"
