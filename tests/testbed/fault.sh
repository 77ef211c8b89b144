#!/usr/bin/env bash
# Injects a fault into a running testbed (the fault suite, harness/tests/faults.rs, uses it through
# `testbed::Testbed::fault`). Run as root, with the same HARNESS_TESTBED_INSTANCE as up.sh.
#
#   fault.sh link-down HOST       # the host's link to the bridge goes down: packets to it are dropped,
#                                 # connections time out (h4 goes with h1)
#   fault.sh link-up HOST
#   fault.sh sshd-kill HOST       # SIGKILL the host's sshd and every session it runs (detached
#                                 # processes started there survive, as on a real host)
#   fault.sh sshd-start HOST      # start sshd again (same config, keys and private dirs); waits until
#                                 # it listens
#   fault.sh dockerd-restart ENGINE   # local or h2: restart dockerd as a service manager does (SIGTERM,
#                                 # which stops its containers; SIGKILL after 30 s), start it again (same
#                                 # data root), wait until it answers
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"
tb_check_dir || exit 2
[ "$(id -u)" = 0 ] || {
    echo "testbed: fault.sh must run as root" >&2
    exit 2
}
die() {
    echo "testbed: fault.sh: $*" >&2
    exit 1
}
host() {
    tb_addr "$1" >/dev/null || die "unknown host '$1'"
    [ -d "$TB_DIR/hosts/$1" ] || die "host $1 is not up (no $TB_DIR/hosts/$1)"
}
# wait_for SECONDS CMD...: polls CMD every 50 ms.
wait_for() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 20; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}

case ${1:-} in
link-down | link-up)
    [ $# = 2 ] || die "usage: $0 $1 HOST"
    host "$2"
    [ "$2" != h4 ] || die "h4 hangs off h1: take h1's link down"
    ip link set "$TB_VETH_PREFIX$2" "${1#link-}" || die "ip link set $TB_VETH_PREFIX$2 ${1#link-} failed"
    ;;
sshd-kill)
    [ $# = 2 ] || die "usage: $0 sshd-kill HOST"
    host "$2"
    ns=$(tb_netns "$2")
    pids=()
    for p in $(ip netns pids "$ns" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = sshd ] && pids+=("$p")
    done
    [ ${#pids[@]} -gt 0 ] || die "no sshd runs in $ns"
    kill -KILL "${pids[@]}" 2>/dev/null
    rm -f "$TB_DIR/hosts/$2/sshd.pid"
    echo "killed sshd on $2: ${pids[*]}"
    ;;
sshd-start)
    [ $# = 2 ] || die "usage: $0 sshd-start HOST"
    host "$2"
    ns=$(tb_netns "$2")
    hd=$TB_DIR/hosts/$2
    rm -f "$hd/sshd.pid"
    setsid nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private /bin/sh "$hd/boot.sh" \
        </dev/null >>"$hd/sshd.log" 2>&1 9>&- &
    echo $! >"$hd/boot.pid"
    listening() { nsenter --net="/run/netns/$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/22' 2>/dev/null; }
    wait_for 10 test -s "$hd/sshd.pid" || die "sshd on $2 did not start: $(tail -5 "$hd/sshd.log")"
    wait_for 10 listening || die "sshd on $2 does not listen: $(tail -5 "$hd/sshd.log")"
    ;;
dockerd-restart)
    [ $# = 2 ] || die "usage: $0 dockerd-restart local|h2"
    case $2 in
    local) bridge=$TB_DOCK_LOCAL_BRIDGE prefix=() ;;
    h2)
        bridge=$TB_DOCK_H2_BRIDGE
        sp=$( { tr -dc 0-9 <"$TB_DIR/hosts/h2/sshd.pid"; } 2>/dev/null)
        [ -n "$sp" ] || die "h2's sshd is not running (its engine joins sshd's namespaces)"
        prefix=(nsenter --target "$sp" --net --uts --mount)
        ;;
    *) die "engine must be local or h2, got '$2'" ;;
    esac
    d=$TB_DIR/docker-$2
    pid=$( { tr -dc 0-9 <"$d/dockerd.pid"; } 2>/dev/null)
    gone() { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || [ "$(sed 's/^.*) //; s/ .*//' "/proc/$pid/stat" 2>/dev/null)" = Z ]; }
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        wait_for 30 gone || kill -KILL "$pid" 2>/dev/null
        wait_for 10 gone || die "dockerd $pid did not die"
    fi
    # Its containerd, if it outlived it, and a pidfile a new dockerd would trust.
    cp=$( { tr -dc 0-9 <"$d/exec/containerd/containerd.pid"; } 2>/dev/null)
    if [ -n "$cp" ] && [ "$(cat "/proc/$cp/comm" 2>/dev/null)" = containerd ]; then kill -KILL "$cp"; fi
    rm -f "$d/dockerd.pid" "$d/exec/containerd/containerd.pid"
    # As up.sh starts it.
    setsid "${prefix[@]}" dockerd --ip-forward=true --config-file "$d/daemon.json" --data-root "$d/data" \
        --exec-root "$d/exec" --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" --bridge "$bridge" \
        --iptables=false --ip6tables=false --ip-masq=false --storage-driver=vfs \
        --cgroup-parent "/${TB_CGROUP_PREFIX}$2" --log-level warn \
        </dev/null >>"$d/dockerd.log" 2>&1 9>&- &
    cli=/usr/bin/docker
    [ -x "$cli" ] || cli=$(command -v docker)
    answers() { DOCKER_API_VERSION=1.41 timeout 5 "$cli" -H "unix://$d/docker.sock" version >/dev/null 2>&1; }
    wait_for 30 answers || die "dockerd $2 does not answer after the restart: $(tail -5 "$d/dockerd.log")"
    ;;
*)
    die "usage: $0 link-down|link-up|sshd-kill|sshd-start HOST, or dockerd-restart local|h2"
    ;;
esac
