# shellcheck shell=bash disable=SC2034 # the names are used by up.sh and down.sh
# Names and addresses shared by up.sh and down.sh. Sourced, not run.
#
# Every object the testbed creates carries a fixed prefix (netns "hb-", links "hbveth-", bridges "hbbr0",
# "hbdock0", cgroups "hbtestbed-") so down.sh can find the leftovers of any earlier run, crashed or not.
# Names are fixed per instance (see HARNESS_TESTBED_INSTANCE below).

# HARNESS_TESTBED_INSTANCE=N (0-9, default 0) runs a second, independent testbed beside the first: other names,
# subnets, state dir and sudoers file. Instance 0 uses the names and addresses shown in README.md.
TB_INSTANCE=${HARNESS_TESTBED_INSTANCE:-0}
case $TB_INSTANCE in
[0-9]) ;;
*)
    echo "testbed: HARNESS_TESTBED_INSTANCE must be 0-9, got '$TB_INSTANCE'" >&2
    exit 2
    ;;
esac
if [ "$TB_INSTANCE" = 0 ]; then TB_L=hb TB_SUFFIX=; else TB_L=hb$TB_INSTANCE TB_SUFFIX=-$TB_INSTANCE; fi

TB_DIR=${HARNESS_TESTBED_DIR:-/var/lib/harness-testbed$TB_SUFFIX}
TB_DIR=${TB_DIR%/}

TB_NETNS_PREFIX=$TB_L-
TB_VETH_PREFIX=${TB_L}veth-
TB_BRIDGE=${TB_L}br0
TB_NET=198.18.$TB_INSTANCE
TB_BRIDGE_ADDR=$TB_NET.1
TB_ALL_HOSTS="h1 h2 h3 h4"
TB_BRIDGED_HOSTS="h1 h2 h3"
# HARNESS_TESTBED_HOSTS=N (0-100, default 0) adds N scale hosts s1..sN on the bridge, each built like h1
# (netns, sshd, private /home /opt /tmp), for benchmarks across many hosts (bench/scale.sh).
TB_SCALE=${HARNESS_TESTBED_HOSTS:-0}
case $TB_SCALE in
'' | *[!0-9]*)
    echo "testbed: HARNESS_TESTBED_HOSTS must be a number 0-100, got '$TB_SCALE'" >&2
    exit 2
    ;;
esac
[ "$TB_SCALE" -le 100 ] || {
    echo "testbed: HARNESS_TESTBED_HOSTS must be at most 100, got '$TB_SCALE'" >&2
    exit 2
}
TB_SCALE_HOSTS=
for ((tb_i = 1; tb_i <= TB_SCALE; tb_i++)); do TB_SCALE_HOSTS="$TB_SCALE_HOSTS s$tb_i"; done
TB_SCALE_HOSTS=${TB_SCALE_HOSTS# }
# h4 sits behind h1 on its own link; the root namespace has no route to it.
TB_H4_NET=198.19.$TB_INSTANCE.0/24
TB_H4_LINK_H1_ADDR=198.19.$TB_INSTANCE.1
# Nobody owns this address: a static neighbour entry sends its frames to a MAC that no port has, so
# connections to it time out instead of failing fast (for timeout tests).
TB_UNREACHABLE=$TB_NET.250
TB_UNREACHABLE_MAC=02:00:5e:10:00:fa
# Container bridges: one per engine, so the two dockerd never fight over docker0.
TB_DOCK_LOCAL_BRIDGE=${TB_L}dock0
TB_DOCK_LOCAL_CIDR=198.18.$((100 + 4 * TB_INSTANCE)).1/24
TB_DOCK_H2_BRIDGE=${TB_L}dock2
TB_DOCK_H2_NET=198.18.$((102 + 4 * TB_INSTANCE)).0/24
TB_DOCK_H2_CIDR=198.18.$((102 + 4 * TB_INSTANCE)).1/24
TB_CGROUP_PREFIX=${TB_L}testbed-
TB_USERS="hbuser hbsvc hbpw"
TB_SUDOERS=/etc/sudoers.d/harness-testbed$TB_SUFFIX

tb_addr() {
    case $1 in
    h1) echo "$TB_NET.11" ;;
    h2) echo "$TB_NET.12" ;;
    h3) echo "$TB_NET.13" ;;
    h4) echo "198.19.$TB_INSTANCE.14" ;;
    s[0-9]*) echo "$TB_NET.$((20 + ${1#s}))" ;;
    *) return 1 ;;
    esac
}

tb_netns() { echo "${TB_NETNS_PREFIX}$1"; }

tb_check_dir() {
    case "$TB_DIR/" in
    /tmp/* | /home/* | /opt/* | /)
        echo "testbed: HARNESS_TESTBED_DIR=$TB_DIR must not be under /tmp, /home or /opt (private per host)" >&2
        return 1
        ;;
    /*) ;;
    *)
        echo "testbed: HARNESS_TESTBED_DIR=$TB_DIR must be an absolute path" >&2
        return 1
        ;;
    esac
}

# tb_lock: one up.sh or down.sh per instance at a time (down.sh run by up.sh inherits the lock). Daemons must
# be started with `9>&-` so they do not hold it forever.
tb_lock() {
    [ -z "${TB_LOCK_HELD:-}" ] || return 0
    mkdir -p /run/lock
    exec 9>"/run/lock/harness-testbed$TB_SUFFIX.lock"
    flock -w 120 9 || {
        echo "testbed: another up.sh/down.sh of this instance holds /run/lock/harness-testbed$TB_SUFFIX.lock" >&2
        exit 1
    }
    export TB_LOCK_HELD=1
}

tb_now() { date +%s.%N; }
tb_since() { awk -v a="$1" -v b="$(tb_now)" 'BEGIN { printf "%.2f", b - a }'; }
