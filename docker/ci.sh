#!/bin/sh
# The docker lab end to end, as CI runs it (`cargo xtask docker-lab`): no image registry is
# reachable, so the base image is debootstrapped and imported (kept as nulab-base:bookworm for
# the next run); dockerd is started if none answers; the lab is generated from docker/lab.toml
# (`nulab lab compose`), built FROM that base, brought up, and each client's outcome is read
# from what its `nulab client --outcome-json` wrote: pc-corp unlocks by Network Unlock,
# pc-branch (a subnet the INI refuses) falls back to the PIN, as docker/lab.toml's [[expect]]
# say; each client that unlocked then escrows its recovery password to the lab's recovery
# service over HTTPS, checked from what `nulab recovery escrow --json` wrote.
#
# Each run has a run id (NULAB_LAB_ID, random by default): its compose project (nulab-ID), host
# bridges (nlID-*), image (nulab-lab:ID) and folder ($WORK/lab-ID) carry it, so two runs never
# share them. Everything the run made is torn down on every way out (success, failure, Ctrl-C,
# TERM): the containers, networks, volumes and the image, and dockerd if this run started it;
# the logs and captures are kept in $WORK/last-run. Needs root, docker.io, docker-compose (v1)
# or the docker compose plugin, and debootstrap (Debian packages docker.io, docker-compose,
# debootstrap).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${NULAB_DOCKER_WORK:-$ROOT/target/docker-lab}
RUN=${NULAB_LAB_ID:-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-5)}
PROJECT=nulab-$RUN
LAB=$WORK/lab-$RUN
DOCKERD_PID=
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

cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ -f "$LAB/docker-compose.yml" ]; then
        (cd "$LAB" && compose down -v --remove-orphans --rmi all >/dev/null 2>&1) || true
        rm -rf "$WORK/last-run"
        mkdir -p "$WORK/last-run"
        cp -r "$LAB/logs" "$LAB/captures" "$WORK/last-run/" 2>/dev/null || true
    fi
    rm -rf "$LAB"
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! docker info >/dev/null 2>&1; then
    echo "docker/ci.sh: starting dockerd (log in $WORK/dockerd.log); stopped when the run ends"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
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
rm -rf "$LAB"
"${CARGO_TARGET_DIR:-$ROOT/target}/debug/nulab" lab compose "$ROOT/docker/lab.toml" --out "$LAB" --lab-id "$RUN"
cd "$LAB"
echo "docker/ci.sh: lab $RUN (project $PROJECT, bridges nl$RUN-*, image nulab-lab:$RUN)"
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
# Each client that unlocked escrows once Windows runs: wait (bounded) for its report.
escrowed() {
    [ -s "logs/escrow-$1.json" ] || return 0
    report=$(tr -d ' \n' <"logs/escrow-$1.json")
    echo "$(echo "$report" | grep -o '"escrowed":[a-z]*' || true) $(echo "$report" | grep -o '"url":"[^"]*"' || true)"
}
for client in pc-corp pc-branch; do
    i=0
    until [ -n "$(escrowed "$client")" ]; do
        i=$((i + 1))
        if [ $i -gt 120 ]; then
            echo "docker/ci.sh: $client wrote no escrow report" >&2; status=1; break
        fi
        sleep 0.5
    done
    got=$(escrowed "$client")
    case "$got" in
        *'"escrowed":true "url":"https://'*) echo "docker/ci.sh: $client escrowed to the recovery service: $got: ok" ;;
        *) echo "docker/ci.sh: $client escrow: ${got:-nothing} (expected escrowed over HTTPS): FAILED" >&2
           cat "logs/escrow-$client.json" "logs/escrow-$client.log" >&2 2>/dev/null || true
           status=1 ;;
    esac
done
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
