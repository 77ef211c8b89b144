# Names and addresses shared by up.sh and down.sh. Sourced, not run.
#
# Every object the testbed creates carries a fixed prefix (netns "hb-", links "hbveth-", bridges "hbbr0",
# "hbdock0", cgroups "hbtestbed-") so down.sh can find the leftovers of any earlier run, crashed or not.
# Only one testbed runs per machine: the names are fixed.

TB_DIR=${HARNESS_TESTBED_DIR:-/var/lib/harness-testbed}
TB_DIR=${TB_DIR%/}

TB_NETNS_PREFIX=hb-
TB_BRIDGE=hbbr0
TB_BRIDGE_ADDR=198.18.0.1
TB_ALL_HOSTS="h1 h2 h3 h4"
TB_BRIDGED_HOSTS="h1 h2 h3"
# h4 sits behind h1 on its own link; the root namespace has no route to it.
TB_H4_LINK_H1_ADDR=198.19.0.1
TB_H4_NET=198.19.0.0/24
# Nobody owns this address: a static neighbour entry sends its frames to a MAC that no port has, so
# connections to it time out instead of failing fast (for timeout tests).
TB_UNREACHABLE=198.18.0.250
TB_UNREACHABLE_MAC=02:00:5e:10:00:fa
# Container bridges: one per engine, so the two dockerd never fight over docker0.
TB_DOCK_LOCAL_BRIDGE=hbdock0
TB_DOCK_LOCAL_CIDR=198.18.100.1/24
TB_DOCK_H2_BRIDGE=hbdock2
TB_DOCK_H2_NET=198.18.102.0/24
TB_DOCK_H2_CIDR=198.18.102.1/24
TB_CGROUP_PREFIX=hbtestbed-
TB_USERS="hbuser hbsvc hbpw"
TB_SUDOERS=/etc/sudoers.d/harness-testbed

tb_addr() {
    case $1 in
    h1) echo 198.18.0.11 ;;
    h2) echo 198.18.0.12 ;;
    h3) echo 198.18.0.13 ;;
    h4) echo 198.19.0.14 ;;
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

tb_now() { date +%s.%N; }
tb_since() { awk -v a="$1" -v b="$(tb_now)" 'BEGIN { printf "%.2f", b - a }'; }
