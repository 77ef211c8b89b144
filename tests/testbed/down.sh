#!/usr/bin/env bash
# Tears the harness testbed down: containers, dockerd, sshd, every process left in a host namespace or a
# testbed cgroup, links, bridges, namespaces, mounts, files. Safe to run at any time, also after a partial or
# crashed up.sh, and when nothing is up. Run as root.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"
tb_check_dir || exit 2
[ "$(id -u)" = 0 ] || {
    echo "testbed: down.sh must run as root" >&2
    exit 2
}

tb_lock
QUIET=${1:-}
say() { [ "$QUIET" = --quiet ] || echo "testbed: $*"; }
t0=$(tb_now)

# A zombie counts as dead: PID 1 on this kind of machine reaps orphans only every second or so.
alive() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# kill_wait SECONDS PID...: TERM, wait up to SECONDS, then KILL.
kill_wait() {
    local secs=$1 p left deadline
    shift
    [ $# -gt 0 ] && [ -n "$1" ] || return 0
    kill -TERM "$@" 2>/dev/null
    deadline=$(($(date +%s%N) + secs * 1000000000))
    while :; do
        left=()
        for p in "$@"; do alive "$p" && left+=("$p"); done
        [ ${#left[@]} -gt 0 ] || return 0
        [ "$(date +%s%N)" -lt "$deadline" ] || break
        sleep 0.05
    done
    kill -KILL "${left[@]}" 2>/dev/null
    sleep 0.05
}

pidfile_pid() { [ -s "$1" ] && tr -dc 0-9 <"$1"; }

# Processes that must survive the sweep: this script and its ancestors.
declare -A KEEP=()
p=$$
while [ -n "$p" ] && [ "$p" != 0 ]; do
    KEEP[$p]=1
    p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
done

# 1. Containers, while the engines still answer; then the engines themselves, all at once.
cli=/usr/bin/docker
[ -x "$cli" ] || cli=$(command -v docker || true)
engines=()
for d in "$TB_DIR"/docker-*/; do
    [ -d "$d" ] || continue
    pid=$(pidfile_pid "${d}dockerd.pid")
    if [ -z "$pid" ] || ! alive "$pid"; then continue; fi
    engines+=("$pid")
    sock="${d}docker.sock"
    if [ -z "$cli" ] || [ ! -S "$sock" ]; then continue; fi
    (
        ids=$(DOCKER_API_VERSION=1.41 timeout 5 "$cli" -H "unix://$sock" ps -aq 2>/dev/null || true)
        if [ -n "$ids" ]; then
            say "removing containers in ${d%/}"
            # shellcheck disable=SC2086
            DOCKER_API_VERSION=1.41 timeout 20 "$cli" -H "unix://$sock" rm -f $ids >/dev/null 2>&1 || true
        fi
    ) &
done
wait
kill_wait 10 "${engines[@]}"

# 2. sshd of every host, by pid file.
sshds=()
# Every host that has a folder, so scale hosts (s1..sN) go too whatever HARNESS_TESTBED_HOSTS says now.
for hd in "$TB_DIR"/hosts/*/; do
    pid=$(pidfile_pid "${hd}sshd.pid")
    [ -n "$pid" ] && alive "$pid" && sshds+=("$pid")
done
kill_wait 3 "${sshds[@]}"

# 3. Anything still running in a host's network namespace (sessions, detached services, docker-proxy, shims).
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^${TB_NETNS_PREFIX}[hs][0-9]+$"); do
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    # shellcheck disable=SC2086
    [ -n "$pids" ] && say "killing leftover processes in $ns: $pids" && kill_wait 2 $pids
done

# 4. Container processes (own netns, but in a testbed cgroup) and anything naming the testbed dir.
sweep=()
for procs in /sys/fs/cgroup/*/"${TB_CGROUP_PREFIX}"*/ /sys/fs/cgroup/"${TB_CGROUP_PREFIX}"*/; do
    [ -d "$procs" ] || continue
    while read -r p; do sweep+=("$p"); done < <(find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null)
done
# The pattern comes from a file so that grep's own command line does not match.
while read -r c; do
    p=${c#/proc/}
    p=${p%/cmdline}
    [ -n "${KEEP[$p]:-}" ] || sweep+=("$p")
done < <(grep -lsF -f <(printf '%s/\n' "$TB_DIR") /proc/[0-9]*/cmdline)
if [ ${#sweep[@]} -gt 0 ]; then
    mapfile -t sweep < <(printf '%s\n' "${sweep[@]}" | sort -un)
    say "killing leftover testbed processes: ${sweep[*]}"
    kill_wait 2 "${sweep[@]}"
fi
for cg in /sys/fs/cgroup/*/"${TB_CGROUP_PREFIX}"* /sys/fs/cgroup/"${TB_CGROUP_PREFIX}"*; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
done

# 5. Network: namespaces (their veth ends and h2's container bridge go with them), root-side links, bridges.
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^${TB_NETNS_PREFIX}[hs][0-9]+$"); do
    ip netns del "$ns" 2>/dev/null || say "could not delete netns $ns"
done
for l in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep -E "^${TB_L}(veth-|br0\$|dock[02]\$)"); do
    ip link del "$l" 2>/dev/null
done
ip route del unreachable "$TB_H4_NET" 2>/dev/null
rm -rf /etc/netns/"${TB_NETNS_PREFIX}"h* /etc/netns/"${TB_NETNS_PREFIX}"s*

# 6. Mounts under the testbed dir (docker's netns files, anything a crashed run left), deepest first.
if [ -r /proc/self/mountinfo ]; then
    awk -v d="$TB_DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
fi

# 7. Files and the forwarding switch the local engine turned on.
# Another instance still up keeps it on; the last one down restores it.
others=
for f in /var/lib/harness-testbed*/ip_forward.orig; do
    [ -e "$f" ] && [ "$f" != "$TB_DIR/ip_forward.orig" ] && others=1
done
if [ -s "$TB_DIR/ip_forward.orig" ] && [ -z "$others" ]; then
    tr -dc 01 <"$TB_DIR/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward 2>/dev/null
fi
rm -f "$TB_DIR/ip_forward.orig"
# Only what up.sh creates, so a custom HARNESS_TESTBED_DIR never loses anything else.
rm -f "$TB_SUDOERS"
if [ -d "$TB_DIR" ]; then
    rm -rf "$TB_DIR/testbed.env" "$TB_DIR/hosts" "$TB_DIR/keys" "$TB_DIR/ssh" "$TB_DIR/image" \
        "$TB_DIR"/docker-* "$TB_DIR/.harness-testbed"
    rmdir "$TB_DIR" 2>/dev/null
fi
say "down in $(tb_since "$t0") s"
exit 0
