#!/usr/bin/env bash
# Brings up the harness testbed: network-namespace hosts h1..h3 on a bridge and h4 behind h1, each with its own
# sshd, hostname and private /home, /opt and /tmp; users hbuser (NOPASSWD sudo), hbsvc and hbpw (sudo needs a
# password); a dockerd in the root namespace and one on h2; image harness-busybox:local in both.
# Writes $TB_DIR/testbed.env (see README.md) as its last step. Idempotent: tears down any earlier testbed first.
# Run as root. Needs openssh-server, openssh-client, sudo, docker.io, busybox-static, iproute2.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"
tb_check_dir
[ "$(id -u)" = 0 ] || {
    echo "testbed: up.sh must run as root" >&2
    exit 2
}

tb_lock
t0=$(tb_now)
step() { echo "testbed: $* (+$(tb_since "$t0") s)"; }
die() {
    echo "testbed: ERROR: $*" >&2
    exit 1
}
trap 'echo "testbed: up.sh failed at line $LINENO; run tests/testbed/down.sh to clean up (logs in $TB_DIR)" >&2' ERR

for c in ip nsenter unshare /usr/sbin/sshd ssh ssh-keygen sudo visudo dockerd busybox useradd usermod setsid; do
    command -v "$c" >/dev/null || die "missing command $c (bash tests/run.sh installs the packages)"
done
BUSYBOX=$(command -v busybox)

bash "$HERE/down.sh" --quiet
step "cleaned earlier testbed"

mkdir -p /run/sshd
chmod 0755 /run/sshd
mkdir -p "$TB_DIR"
chmod 0755 "$TB_DIR"
touch "$TB_DIR/.harness-testbed"
KEYS=$TB_DIR/keys
SSHDIR=$TB_DIR/ssh
mkdir -p "$KEYS" "$SSHDIR"
chmod 0755 "$KEYS" "$SSHDIR"

# --- keys -------------------------------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C harness-testbed-client -f "$KEYS/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C harness-testbed-wrong -f "$KEYS/wrong_ed25519"
chmod 0600 "$KEYS/id_ed25519" "$KEYS/wrong_ed25519"
keygens=()
for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
    mkdir -p "$TB_DIR/hosts/$h"
    ssh-keygen -q -t ed25519 -N '' -C "harness-testbed-$h" -f "$TB_DIR/hosts/$h/ssh_host_ed25519_key" &
    keygens+=($!)
done
for p in "${keygens[@]}"; do wait "$p" || die "ssh-keygen failed"; done

# --- users and sudo ---------------------------------------------------------------------------------------
# retry CMD...: /etc/passwd and /etc/shadow are locked briefly by any concurrent user tool (or a killed one).
retry() {
    local i
    for ((i = 0; i < 20; i++)); do
        "$@" && return 0
        sleep 0.25
    done
    return 1
}
for u in $TB_USERS; do
    if ! id -u "$u" >/dev/null 2>&1; then
        group=(--user-group)
        getent group "$u" >/dev/null && group=(--gid "$u")
        retry useradd --no-create-home --home-dir "/home/$u" --shell /bin/bash "${group[@]}" "$u" ||
            die "cannot create user $u"
    fi
    # useradd leaves the password locked ("!"), and sshd without PAM refuses locked accounts even for keys.
    [ "$(getent shadow "$u" | cut -d: -f2)" = '*' ] || retry usermod -p '*' "$u" || die "cannot unlock user $u"
done
cat >"$TB_SUDOERS.tmp" <<'EOF'
# harness testbed (tests/testbed/up.sh); removed by down.sh
hbuser ALL=(ALL:ALL) NOPASSWD: ALL
hbpw ALL=(ALL:ALL) ALL
EOF
chmod 0440 "$TB_SUDOERS.tmp"
visudo -cqf "$TB_SUDOERS.tmp" || die "generated sudoers rule is invalid"
mv "$TB_SUDOERS.tmp" "$TB_SUDOERS"

# --- per-host private /home, /opt, /tmp -------------------------------------------------------------------
homes=()
for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
    (
    hd=$TB_DIR/hosts/$h
    mkdir -p "$hd/home" "$hd/opt" "$hd/tmp" "$hd/var-tmp"
    chmod 0755 "$hd" "$hd/home" "$hd/opt"
    chmod 1777 "$hd/tmp" "$hd/var-tmp"
    for u in $TB_USERS; do
        home=$hd/home/$u
        mkdir -p "$home"
        if [ "$u" != hbsvc ]; then
            mkdir -p "$home/.ssh"
            cp "$KEYS/id_ed25519.pub" "$home/.ssh/authorized_keys"
            chmod 0700 "$home/.ssh"
            chmod 0600 "$home/.ssh/authorized_keys"
        fi
        touch "$home/.hushlogin"
        chown -R "$u:$u" "$home"
        chmod 0755 "$home"
    done
    ) &
    homes+=($!)
done
for p in "${homes[@]}"; do wait "$p" || die "cannot make the hosts' homes"; done
step "keys, users, homes"

# --- network ----------------------------------------------------------------------------------------------
ip link add "$TB_BRIDGE" type bridge
ip addr add "$TB_BRIDGE_ADDR/24" dev "$TB_BRIDGE"
ip link set "$TB_BRIDGE" up
ip neigh replace "$TB_UNREACHABLE" lladdr "$TB_UNREACHABLE_MAC" dev "$TB_BRIDGE" nud permanent
# Every host's name and address, once (with 50 scale hosts, a lookup per pair took 15 s).
all_addrs=$(for o in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do echo "$(tb_addr "$o") $o"; done)
# Links and addresses go through `ip -batch`, one ip process for the root namespace and one per host
# (an ip process per command made 50 scale hosts take 15 s).
root_batch=$TB_DIR/ip-root.batch
: >"$root_batch"
for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
    ns=$TB_NETNS_PREFIX$h
    echo "netns add $ns" >>"$root_batch"
    mkdir -p "/etc/netns/$ns"
    {
        echo "127.0.0.1 localhost"
        echo "127.0.1.1 $h"
        echo "$all_addrs"
    } >"/etc/netns/$ns/hosts"
    echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf"
    echo "$h" >"/etc/netns/$ns/hostname"
done
for h in $TB_BRIDGED_HOSTS $TB_SCALE_HOSTS; do
    echo "link add $TB_VETH_PREFIX$h type veth peer name eth0 netns $TB_NETNS_PREFIX$h" >>"$root_batch"
    echo "link set $TB_VETH_PREFIX$h master $TB_BRIDGE up" >>"$root_batch"
done
ip -batch "$root_batch"
for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
    {
        echo "link set lo up"
        case " $TB_BRIDGED_HOSTS $TB_SCALE_HOSTS " in
        *" $h "*)
            echo "addr add $(tb_addr "$h")/24 dev eth0"
            echo "link set eth0 up"
            echo "route add default via $TB_BRIDGE_ADDR"
            echo "neigh replace $TB_UNREACHABLE lladdr $TB_UNREACHABLE_MAC dev eth0 nud permanent"
            ;;
        esac
    } | ip -n "$TB_NETNS_PREFIX$h" -batch -
done
rm -f "$root_batch"
# h4: reachable only through h1 (h1 does not forward, the root namespace has no route).
ip -n "$(tb_netns h1)" link add eth1 type veth peer name eth0 netns "$(tb_netns h4)"
ip -n "$(tb_netns h1)" addr add "$TB_H4_LINK_H1_ADDR/24" dev eth1
ip -n "$(tb_netns h1)" link set eth1 up
ip -n "$(tb_netns h4)" addr add "$(tb_addr h4)/24" dev eth0
ip -n "$(tb_netns h4)" link set eth0 up
ip -n "$(tb_netns h4)" route add default via "$TB_H4_LINK_H1_ADDR"
# Without this the root namespace's default route would carry h4's packets off the machine (where the VM's
# network may even accept them); fail fast instead.
ip route add unreachable "$TB_H4_NET"
# Containers on h2's engine are routed (not NATed) through h2, so every host can reach them and they can
# reach every host on the bridge.
ip -n "$(tb_netns h2)" link add "$TB_DOCK_H2_BRIDGE" type bridge
ip -n "$(tb_netns h2)" addr add "$TB_DOCK_H2_CIDR" dev "$TB_DOCK_H2_BRIDGE"
ip -n "$(tb_netns h2)" link set "$TB_DOCK_H2_BRIDGE" up
echo 1 | nsenter --net="/run/netns/$(tb_netns h2)" tee /proc/sys/net/ipv4/ip_forward >/dev/null
ip route add "$TB_DOCK_H2_NET" via "$(tb_addr h2)"
for h in h1 h3; do ip -n "$(tb_netns "$h")" route add "$TB_DOCK_H2_NET" via "$(tb_addr h2)"; done
ip link add "$TB_DOCK_LOCAL_BRIDGE" type bridge
ip addr add "$TB_DOCK_LOCAL_CIDR" dev "$TB_DOCK_LOCAL_BRIDGE"
ip link set "$TB_DOCK_LOCAL_BRIDGE" up
step "network"

# --- sshd per host ----------------------------------------------------------------------------------------
# Each sshd runs in its host's network namespace and in its own UTS and mount namespace, where the host's
# hosts/resolv.conf/hostname files and private /home, /opt, /tmp and /var/tmp are bind-mounted. nsenter is used
# instead of `ip netns exec` because the latter remounts /sys without cgroups, and h2's dockerd joins this
# mount namespace.
for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
    ns=$(tb_netns "$h")
    hd=$TB_DIR/hosts/$h
    cat >"$hd/sshd_config" <<EOF
# harness testbed host $h
Port 22
ListenAddress 0.0.0.0
HostKey $hd/ssh_host_ed25519_key
PidFile $hd/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes yes
# sshd's default, written out: the product must live within 10 sessions per connection.
MaxSessions 10
# Parallel tests open many connections at once; the default 10:30:100 drops some of them at random.
MaxStartups 200
KexAlgorithms curve25519-sha256
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel INFO
EOF
    cat >"$hd/boot.sh" <<EOF
set -e
hostname $h
for f in hosts resolv.conf hostname; do mount --bind /etc/netns/$ns/\$f /etc/\$f; done
mount --bind $hd/home /home
mount --bind $hd/opt /opt
mount --bind $hd/tmp /tmp
mount --bind $hd/var-tmp /var/tmp
exec /usr/sbin/sshd -D -e -f $hd/sshd_config
EOF
    # Scale hosts share h1's template: checking it once is enough.
    case $h in s*) ;; *) /usr/sbin/sshd -t -f "$hd/sshd_config" || die "sshd config for $h is invalid" ;; esac
    setsid nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private /bin/sh "$hd/boot.sh" \
        </dev/null >>"$hd/sshd.log" 2>&1 9>&- &
    echo $! >"$hd/boot.pid"
done

# --- client config ----------------------------------------------------------------------------------------
: >"$SSHDIR/known_hosts"
for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
    echo "$h,$(tb_addr "$h") $(cut -d' ' -f1-2 "$TB_DIR/hosts/$h/ssh_host_ed25519_key.pub")" >>"$SSHDIR/known_hosts"
done
{
    echo "# harness testbed: ssh -F $SSHDIR/config h1 true"
    for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
        echo "Host $h"
        echo "    HostName $(tb_addr "$h")"
        [ "$h" = h4 ] && echo "    ProxyJump h1"
    done
    echo "Host h1 h2 h3 h4 $TB_SCALE_HOSTS $(for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do printf '%s ' "$(tb_addr "$h")"; done)"
    echo "    User hbuser"
    echo "    IdentityFile $KEYS/id_ed25519"
    echo "    IdentitiesOnly yes"
    echo "    UserKnownHostsFile $SSHDIR/known_hosts"
    echo "    GlobalKnownHostsFile /dev/null"
    echo "    StrictHostKeyChecking yes"
    echo "    KexAlgorithms curve25519-sha256"
    echo "    BatchMode yes"
    echo "    PasswordAuthentication no"
    echo "    ConnectTimeout 5"
    echo "    LogLevel ERROR"
} >"$SSHDIR/config"
chmod 0644 "$SSHDIR/config" "$SSHDIR/known_hosts"

# --- docker -----------------------------------------------------------------------------------------------
R=$TB_DIR/image/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/proc" "$R/sys" "$R/dev" "$R/root"
chmod 1777 "$R/tmp"
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
tar -C "$R" -cf "$TB_DIR/image/rootfs.tar" .

# start_dockerd NAME BRIDGE IP_FORWARD [PREFIX...]: data, exec root, socket, pid file and log under
# $TB_DIR/docker-NAME; PREFIX (nsenter ...) places the daemon in a host's namespaces.
start_dockerd() {
    local name=$1 bridge=$2 forward=$3 d=$TB_DIR/docker-$1
    shift 3
    mkdir -p "$d"
    echo '{}' >"$d/daemon.json"
    setsid "$@" dockerd --ip-forward="$forward" --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" --bridge "$bridge" \
        --iptables=false --ip6tables=false --ip-masq=false --storage-driver=vfs \
        --cgroup-parent "/${TB_CGROUP_PREFIX}$name" --log-level warn \
        </dev/null >"$d/dockerd.log" 2>&1 9>&- &
}
# Like any docker install, the root namespace's engine switches on IPv4 forwarding (containers reach the
# hosts through it, and `docker run` warns without it); down.sh restores the value saved here.
cat /proc/sys/net/ipv4/ip_forward >"$TB_DIR/ip_forward.orig"
start_dockerd local "$TB_DOCK_LOCAL_BRIDGE" true
# h2's engine joins h2's network, UTS and mount namespaces (bind mounts see h2's /home, /opt, /tmp).
wait_file() {
    local f=$1 i
    for ((i = 0; i < 100; i++)); do
        [ -s "$f" ] && return 0
        sleep 0.05
    done
    return 1
}
wait_file "$TB_DIR/hosts/h2/sshd.pid" || die "sshd on h2 did not start: $(tail -5 "$TB_DIR/hosts/h2/sshd.log")"
start_dockerd h2 "$TB_DOCK_H2_BRIDGE" true nsenter --target "$(cat "$TB_DIR/hosts/h2/sshd.pid")" --net --uts --mount
step "sshd and dockerd started"

# A client that talks to dockerd 20.10 (the Debian one first; /usr/local/bin/docker may be a newer client).
clients=()
for c in /usr/bin/docker /usr/local/bin/docker; do [ -x "$c" ] && clients+=("$c"); done
[ ${#clients[@]} -gt 0 ] || die "no docker client found"
# wait_engine NAME: prints the first client that gets an answer; fails when dockerd dies or after 30 s.
wait_engine() {
    local d=$TB_DIR/docker-$1 c pick pid deadline=$((SECONDS + 30))
    while :; do
        for c in "${clients[@]}"; do
            if "$c" -H "unix://$d/docker.sock" info >/dev/null 2>&1; then
                # The engine is up: now choose by preference, not by who asked first.
                for pick in "${clients[@]}"; do
                    "$pick" -H "unix://$d/docker.sock" version >/dev/null 2>&1 && echo "$pick" && return 0
                done
            fi
        done
        pid=$(cat "$d/dockerd.pid" 2>/dev/null || true)
        if [ $SECONDS -ge $deadline ] || { [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; }; then
            echo "testbed: dockerd $1 not answering: $(tail -n 5 "$d/dockerd.log")" >&2
            return 1
        fi
        sleep 0.05
    done
}
DOCKER_CLI=$(wait_engine local) || die "local dockerd did not start"
wait_engine h2 >/dev/null || die "h2's dockerd did not start"
step "dockerd ready ($DOCKER_CLI)"

imports=()
for e in local h2; do
    "$DOCKER_CLI" -H "unix://$TB_DIR/docker-$e/docker.sock" import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' \
        "$TB_DIR/image/rootfs.tar" harness-busybox:local >/dev/null &
    imports+=($!)
done
wait_ssh() {
    local h=$1 i
    for ((i = 0; i < 100; i++)); do
        ssh -F "$SSHDIR/config" -o ConnectTimeout=2 "$h" true </dev/null 2>/dev/null && return 0
        sleep 0.1
    done
    echo "testbed: sshd on $h not answering: $(tail -5 "$TB_DIR/hosts/$h/sshd.log")" >&2
    return 1
}
pids=()
for h in $TB_ALL_HOSTS $TB_SCALE_HOSTS; do
    wait_ssh "$h" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "ssh hosts not ready"; done
for p in "${imports[@]}"; do wait "$p" || die "docker import failed"; done
step "ssh ready on $TB_ALL_HOSTS${TB_SCALE_HOSTS:+ and $TB_SCALE hosts s1..s$TB_SCALE}, image imported"

# --- env file: written last, atomically; its presence means the testbed is up -----------------------------
{
    echo "# harness testbed, written by tests/testbed/up.sh at $(date -u +%FT%TZ); see tests/testbed/README.md"
    echo "TB_DIR=$TB_DIR"
    echo "TB_INSTANCE=$TB_INSTANCE"
    echo "TB_HOSTS=\"$TB_BRIDGED_HOSTS\""
    echo "TB_ALL_HOSTS=\"$TB_ALL_HOSTS\""
    for h in $TB_ALL_HOSTS; do
        H=$(echo "$h" | tr '[:lower:]' '[:upper:]')
        echo "TB_${H}_ADDR=$(tb_addr "$h")"
        echo "TB_${H}_NETNS=$(tb_netns "$h")"
    done
    echo "TB_SCALE_HOSTS=\"$TB_SCALE_HOSTS\""
    for h in $TB_SCALE_HOSTS; do
        H=$(echo "$h" | tr '[:lower:]' '[:upper:]')
        echo "TB_${H}_ADDR=$(tb_addr "$h")"
        echo "TB_${H}_NETNS=$(tb_netns "$h")"
    done
    echo "TB_H4_JUMP=h1"
    echo "TB_BRIDGE_ADDR=$TB_BRIDGE_ADDR"
    echo "TB_SSH_PORT=22"
    echo "TB_SSH_USER=hbuser"
    echo "TB_SSH_KEY=$KEYS/id_ed25519"
    echo "TB_SSH_WRONG_KEY=$KEYS/wrong_ed25519"
    echo "TB_SSH_KNOWN_HOSTS=$SSHDIR/known_hosts"
    echo "TB_SSH_CONFIG=$SSHDIR/config"
    echo "TB_SUDO_USER=hbsvc"
    echo "TB_PASSWORD_SUDO_USER=hbpw"
    echo "TB_DOCKER_CLI=$DOCKER_CLI"
    echo "TB_DOCKER_LOCAL=unix://$TB_DIR/docker-local/docker.sock"
    echo "TB_DOCKER_H2=unix://$TB_DIR/docker-h2/docker.sock"
    echo "TB_DOCKER_H2_HOST=h2"
    echo "TB_IMAGE=harness-busybox:local"
    echo "TB_UNREACHABLE_ADDR=$TB_UNREACHABLE"
} >"$TB_DIR/testbed.env.tmp"
chmod 0644 "$TB_DIR/testbed.env.tmp"
mv "$TB_DIR/testbed.env.tmp" "$TB_DIR/testbed.env"
step "up; env file $TB_DIR/testbed.env"
