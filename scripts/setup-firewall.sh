#!/usr/bin/env bash
# Sends the containers' metadata requests to ec2metaproxy (iptables, IPv4).
#
# Prints the iptables commands and changes nothing unless --force is given.
#
# What it sets up, for containers behind --container-iface:
#   1. nat PREROUTING: TCP to 169.254.169.254:80 is DNATed to PROXY_IP:PROXY_PORT,
#      so every SDK in a container reaches the proxy at the usual address, and the
#      proxy sees the container's own source address.
#   2. filter DOCKER-USER (FORWARD when Docker's chain is missing): anything else
#      to 169.254.169.254 from those containers is rejected, so the host's real
#      metadata service (and the host role's credentials) is never reached.
#   3. filter INPUT: new connections to PROXY_PORT that did not come through the
#      DNAT above are dropped, from every interface but loopback (so neither a
#      container nor another machine can talk to the proxy port directly);
#      --block-direct proxy-ip limits this to PROXY_IP, off leaves it out.
#   4. only when PROXY_IP is in 127.0.0.0/8: the route_localnet sysctl (the kernel
#      drops packets routed to 127.0.0.0/8 from another interface without it), and
#      a mangle PREROUTING rule that drops anything the containers send to
#      127.0.0.0/8 themselves, which route_localnet would otherwise let through to
#      every service listening on the host's loopback.
# Every rule carries the comment TAG (default "ec2metaproxy"): --remove deletes
# exactly the rules with that comment, and applying again replaces them.
#
# Usage: scripts/setup-firewall.sh [options]
#   --force                 apply (default: dry run, print the commands)
#   --remove                delete the rules tagged TAG (and undo route_localnet)
#   --container-iface IF    the containers' bridge: docker0 (default), br-0123abcd,
#                           or br-+ for every user-defined network (iptables wildcard)
#   --proxy-port PORT       the proxy's port (default 18000, the config's ":18000")
#   --proxy-ip IP           where the proxy listens (default: IF's IPv4 address, e.g.
#                           172.17.0.1 for docker0; for a wildcard or an interface
#                           without an address, 127.0.0.1 with route_localnet, see 4.)
#   --metadata-ip IP        the address containers ask (default 169.254.169.254)
#   --block-direct MODE     all (default) | proxy-ip | off, see 3.
#   --comment TAG           the rules' comment ([A-Za-z0-9_.:-], default ec2metaproxy)
#   -h, --help
#
# The proxy's config must listen where the DNAT points, e.g. "listen": ":18000"
# or "172.17.0.1:18000". Rules do not survive a reboot: run this at boot after
# Docker (contrib/ec2metaproxy-firewall.service does). See docs/host-setup.md.
set -euo pipefail

FORCE=0
REMOVE=0
IFACE=docker0
PORT=18000
PROXY_IP=""
METADATA_IP=169.254.169.254
BLOCK_DIRECT=all
TAG=ec2metaproxy
IPT=(iptables -w 5)
STATE_DIR=/run/ec2metaproxy-firewall

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "setup-firewall: $*" >&2; exit 2; }

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --remove) REMOVE=1 ;;
        --container-iface) need_value "$@"; IFACE="$2"; shift ;;
        --proxy-port) need_value "$@"; PORT="$2"; shift ;;
        --proxy-ip) need_value "$@"; PROXY_IP="$2"; shift ;;
        --metadata-ip) need_value "$@"; METADATA_IP="$2"; shift ;;
        --block-direct) need_value "$@"; BLOCK_DIRECT="$2"; shift ;;
        --comment) need_value "$@"; TAG="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

is_ipv4() {
    local IFS=. a b c d
    [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
    read -r a b c d <<<"$1"
    for o in "$a" "$b" "$c" "$d"; do [ "$o" -le 255 ] || return 1; done
}
[[ "$TAG" =~ ^[A-Za-z0-9_.:-]{1,200}$ ]] || die "--comment must match [A-Za-z0-9_.:-]{1,200}: $TAG"
[[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--proxy-port must be 1..65535: $PORT"
[[ "$IFACE" =~ ^[A-Za-z0-9_.:@-]{1,15}\+?$ ]] || die "--container-iface is not an interface name (or NAME+): $IFACE"
is_ipv4 "$METADATA_IP" || die "--metadata-ip must be an IPv4 address: $METADATA_IP"
case "$BLOCK_DIRECT" in all|proxy-ip|off) ;; *) die "--block-direct must be all, proxy-ip or off" ;; esac

WILDCARD=0
[[ "$IFACE" == *+ ]] && WILDCARD=1

if [ -z "$PROXY_IP" ] && [ "$REMOVE" = 0 ]; then
    if [ "$WILDCARD" = 0 ]; then
        PROXY_IP="$(ip -4 -o addr show dev "$IFACE" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
    fi
    if [ -z "$PROXY_IP" ]; then
        PROXY_IP=127.0.0.1
        echo "# --proxy-ip: $IFACE has no single IPv4 address; using 127.0.0.1 (needs route_localnet, see below)." >&2
        echo "# To avoid route_localnet, pass a host address the proxy listens on, e.g. --proxy-ip 172.17.0.1." >&2
    fi
fi
if [ "$REMOVE" = 0 ]; then
    is_ipv4 "$PROXY_IP" || die "--proxy-ip must be an IPv4 address: $PROXY_IP"
fi
LOCALNET=0
[[ "$PROXY_IP" == 127.* ]] && LOCALNET=1

# The forward-path chain Docker leaves to its users, else FORWARD itself.
forward_chain() {
    if "${IPT[@]}" -t filter -S DOCKER-USER >/dev/null 2>&1; then echo DOCKER-USER; else echo FORWARD; fi
}

# route_localnet per interface, or for all of them for a wildcard.
sysctl_key() {
    if [ "$WILDCARD" = 1 ]; then echo net.ipv4.conf.all.route_localnet
    else echo "net.ipv4.conf.${IFACE//./\/}.route_localnet"; fi
}

run() {
    # Print a command in a form that can be pasted; run it with --force.
    printf '%q ' "$@" | sed 's/ $//'
    echo
    if [ "$FORCE" = 1 ]; then "$@"; fi
}

# Every rule tagged TAG in table $1, chain $2, as iptables -S prints it.
tagged_rules() {
    "${IPT[@]}" -t "$1" -S "$2" 2>/dev/null \
        | grep -E -- "^-A $2 .*--comment \"?${TAG//./\\.}\"?( |\$)" || true
}

remove_rules() {
    local found=0 failed=0 table chain line
    if [ "$(id -u)" != 0 ]; then
        echo "# (not root: cannot list the current rules; run as root to see what --remove would delete)"
        return 0
    fi
    for pair in nat:PREROUTING filter:DOCKER-USER filter:FORWARD filter:INPUT mangle:PREROUTING; do
        table="${pair%%:*}" chain="${pair#*:}"
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            found=1
            # -S prints "-A CHAIN spec...": the same spec deletes it. The tag has
            # no spaces or quotes, so word splitting is safe here.
            local spec=() word prev=""
            for word in ${line#-A }; do
                # -S drops the /32 of a conntrack address, and reading it back
                # without one gives another rule (-D then finds no match).
                case "$prev" in
                    --ctorigdst|--ctorigsrc|--ctrepldst|--ctreplsrc)
                        [[ "$word" == */* ]] || word="$word/32" ;;
                esac
                spec+=("$word")
                prev="$word"
            done
            run "${IPT[@]}" -t "$table" -D "${spec[@]}" || failed=1
        done < <(tagged_rules "$table" "$chain")
    done
    local saved="$STATE_DIR/$TAG.route_localnet"
    if [ -f "$saved" ]; then
        local key value
        read -r key value < "$saved"
        run sysctl -q -w "$key=$value"
        if [ "$FORCE" = 1 ]; then
            rm -f "$saved"
            rmdir "$STATE_DIR" 2>/dev/null || true
        fi
    fi
    [ "$found" = 1 ] || echo "# no rules tagged \"$TAG\""
    if [ "$failed" = 1 ]; then
        echo "setup-firewall: some rules tagged \"$TAG\" could not be deleted; list them with" >&2
        echo "  iptables -t TABLE -S | grep -- '--comment $TAG'" >&2
        return 1
    fi
}

comment=(-m comment --comment "$TAG")

add_rules() {
    local fwd
    fwd="$(forward_chain)"
    echo "# ec2metaproxy: containers on $IFACE asking $METADATA_IP:80 -> proxy at $PROXY_IP:$PORT (rules tagged \"$TAG\")"
    # 1. The redirect itself, ahead of everything else in PREROUTING.
    run "${IPT[@]}" -t nat -I PREROUTING 1 -i "$IFACE" -d "$METADATA_IP/32" -p tcp --dport 80 \
        "${comment[@]}" -j DNAT --to-destination "$PROXY_IP:$PORT"
    # 2. Nothing else reaches the real metadata service from these containers.
    run "${IPT[@]}" -t filter -I "$fwd" 1 -i "$IFACE" -d "$METADATA_IP/32" \
        "${comment[@]}" -j REJECT --reject-with icmp-port-unreachable
    # 3. The proxy port only through the redirect (loopback stays open for the host).
    case "$BLOCK_DIRECT" in
        all)
            run "${IPT[@]}" -t filter -I INPUT 1 ! -i lo -p tcp --dport "$PORT" \
                -m conntrack --ctstate NEW ! --ctorigdst "$METADATA_IP/32" \
                "${comment[@]}" -j DROP ;;
        proxy-ip)
            run "${IPT[@]}" -t filter -I INPUT 1 ! -i lo -d "$PROXY_IP/32" -p tcp --dport "$PORT" \
                -m conntrack --ctstate NEW ! --ctorigdst "$METADATA_IP/32" \
                "${comment[@]}" -j DROP ;;
        off) ;;
    esac
    # 4. A loopback proxy address: let DNATed packets be routed to 127.0.0.0/8,
    #    and nothing else the containers address to it.
    if [ "$LOCALNET" = 1 ]; then
        local key old
        key="$(sysctl_key)"
        echo "# $PROXY_IP is a loopback address: the kernel routes packets from $IFACE to it only"
        echo "# with route_localnet=1; the mangle rule keeps containers off the host's other"
        echo "# loopback services, which route_localnet would otherwise expose to them."
        run "${IPT[@]}" -t mangle -I PREROUTING 1 -i "$IFACE" -d 127.0.0.0/8 \
            "${comment[@]}" -j DROP
        old="$(sysctl -n "$key" 2>/dev/null || echo 0)"
        if [ "$FORCE" = 1 ] && [ ! -f "$STATE_DIR/$TAG.route_localnet" ]; then
            mkdir -p "$STATE_DIR"
            echo "$key $old" > "$STATE_DIR/$TAG.route_localnet"
        fi
        run sysctl -q -w "$key=1"
    fi
}

if [ "$FORCE" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "--force needs root"
fi
command -v iptables >/dev/null || die "iptables not found (Debian: apt-get install iptables)"
if [ "$FORCE" = 0 ]; then
    echo "# dry run: nothing is changed; run again with --force to apply"
fi

if [ "$REMOVE" = 1 ]; then
    remove_rules
else
    # Applying again replaces the rules with this tag instead of doubling them.
    if [ "$(id -u)" = 0 ] && [ -n "$(for p in nat:PREROUTING filter:DOCKER-USER filter:FORWARD filter:INPUT mangle:PREROUTING; do tagged_rules "${p%%:*}" "${p#*:}"; done)" ]; then
        echo "# replacing the rules already tagged \"$TAG\""
        remove_rules
    fi
    add_rules
fi
