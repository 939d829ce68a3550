#!/bin/sh
# The docker lab end to end, as CI runs it (`cargo xtask docker-lab`): no image registry is
# reachable, so the base image is debootstrapped and imported (kept as nulab-base:bookworm for
# the next run); dockerd is started if none answers; the lab is generated from docker/lab.toml
# (`nulab lab compose`), built FROM that base, brought up, and each client's outcome is read
# from what its `nulab client --outcome-json` wrote: pc-corp unlocks by Network Unlock,
# pc-branch (a subnet the INI refuses) falls back to the PIN, as docker/lab.toml's [[expect]]
# say. Everything is torn down on every exit. Needs root, docker.io, docker-compose (v1) or the docker compose plugin, and
# debootstrap (Debian packages docker.io, docker-compose, debootstrap).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${NULAB_DOCKER_WORK:-$ROOT/target/docker-lab}
PROJECT=nulablab$$
mkdir -p "$WORK"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "docker/ci.sh: $1 is missing (Debian package $2)" >&2; exit 2; }
}
need docker docker.io
need debootstrap debootstrap
if command -v docker-compose >/dev/null 2>&1; then
    compose() { docker-compose -p "$PROJECT" "$@"; }
elif docker compose version >/dev/null 2>&1; then
    compose() { docker compose -p "$PROJECT" "$@"; }
else
    echo "docker/ci.sh: no docker-compose (Debian package docker-compose)" >&2; exit 2
fi

if ! docker info >/dev/null 2>&1; then
    echo "docker/ci.sh: starting dockerd (log in $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -le 60 ] || { echo "dockerd did not start" >&2; cat "$WORK/dockerd.log" >&2; exit 1; }
        sleep 0.5
    done
fi

if ! docker image inspect nulab-base:bookworm >/dev/null 2>&1; then
    MIRROR=$(grep -hoE 'https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -n 1 || true)
    echo "docker/ci.sh: debootstrap bookworm from ${MIRROR:-http://deb.debian.org/debian}"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "${MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -c . | docker import - nulab-base:bookworm
    rm -rf "$WORK/rootfs"
fi

cargo build --quiet --package nulab --package realnet --bins
rm -rf "$WORK/lab"
"${CARGO_TARGET_DIR:-$ROOT/target}/debug/nulab" lab compose "$ROOT/docker/lab.toml" --out "$WORK/lab"
cd "$WORK/lab"
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
NULAB_BASE_IMAGE=nulab-base:bookworm compose up -d --build

# Each client's outcome as `nulab client --outcome-json` wrote it: "unlocked_by": "PROTECTOR".
outcome() {
    [ -f "logs/outcome-$1.json" ] || return 0
    tr -d ' \n' <"logs/outcome-$1.json" 2>/dev/null | grep -o '"state":"[a-z-]*"\|"unlocked_by":"[a-z-]*"' | tr '\n' ' ' || true
}
for client in pc-corp pc-branch; do
    i=0
    until [ -n "$(outcome "$client")" ]; do
        i=$((i + 1))
        if [ $i -gt 120 ]; then
            compose logs --no-color >&2
            echo "docker/ci.sh: $client reached no outcome" >&2; exit 1
        fi
        sleep 0.5
    done
done
compose logs --no-color
status=0
check() {
    got=$(outcome "$1")
    case "$got" in
        *"\"unlocked_by\":\"$2\""*) echo "docker/ci.sh: $1: $got (expected $2): ok" ;;
        *) echo "docker/ci.sh: $1: $got (expected $2): FAILED" >&2; status=1 ;;
    esac
}
check pc-corp network-unlock
check pc-branch tpm-and-pin
if compose logs --no-color recovery | grep -q 'https=0.0.0.0:443' \
    && compose logs --no-color recovery | grep -q 'http=0.0.0.0:80'; then
    echo "docker/ci.sh: recovery service: HTTPS and HTTP management points listening: ok"
else
    echo "docker/ci.sh: the recovery service is not listening on both faces" >&2; status=1
fi
for pcap in captures/corp.pcap captures/branch.pcap; do
    [ -s "$pcap" ] || { echo "docker/ci.sh: $pcap is empty" >&2; status=1; }
done
exit $status
