#!/usr/bin/env bash
# Sends the containers' metadata requests to ec2metaproxy (iptables, ip6tables).
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
#   5. only with --anti-spoof: an nftables table "bridge TAG" that drops, at the
#      bridge's prerouting hook, the frames a container sends from its own port
#      (the host side veth) with a source MAC, an IPv4 source or an ARP sender
#      that is not the one Docker gave it, so that a container with Docker's
#      default CAP_NET_RAW cannot wear a neighbour's address (docs/security.md).
#      Its sets hold one element per container port, taken from the containers
#      running now; --follow keeps them in step with Docker's events and the
#      kernel's, and holds a new port closed until it knows its container. IPv4
#      and ARP only for now; IPv6 frames are checked for their source MAC alone.
#   6. IPv6 (ip6tables), unless --no-ipv6 or the host has no IPv6: what 1.-3. do
#      for [fd00:ec2::254], where SDKs in IPv6 endpoint mode ask. The DNAT goes
#      to PROXY_IP6 (the proxy's config must list it in "listen"); the REJECT of
#      everything else to that address is written even when there is no
#      PROXY_IP6 to redirect to, so such a container gets a refusal, never the
#      host's metadata service.
#   7. only with --address-port PORT: the container credentials door by address.
#      nat PREROUTING: TCP to 169.254.170.2:80 (where SDKs resolve
#      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) is DNATed to PROXY_IP:PORT, the
#      config's containerCredentials.addressListen; and, as 3. does, new
#      connections to that port that did not come through the DNAT are dropped.
# Every rule carries the comment TAG (default "ec2metaproxy"), and the table is
# named TAG: --remove deletes exactly those, and applying again replaces them.
#
# Usage: scripts/setup-firewall.sh [options]
#   --force                 apply (default: dry run, print the commands)
#   --remove                delete the rules tagged TAG and the table TAG (and undo
#                           route_localnet)
#   --container-iface IF    the containers' bridge: docker0 (default), br-0123abcd,
#                           or br-+ for every user-defined network (iptables wildcard)
#   --proxy-port PORT       the proxy's port (default 18000, the config's ":18000")
#   --proxy-ip IP           where the proxy listens (default: IF's IPv4 address, e.g.
#                           172.17.0.1 for docker0; for a wildcard or an interface
#                           without an address, 127.0.0.1 with route_localnet, see 4.)
#   --metadata-ip IP        the address containers ask (default 169.254.169.254)
#   --block-direct MODE     all (default) | proxy-ip | off, see 3.
#   --proxy-ip6 IP          where the proxy listens on IPv6 (default: IF's global
#                           IPv6 address, e.g. the gateway of a --ipv6 network;
#                           none for a wildcard: then REJECT only, see 6.)
#   --metadata-ip6 IP       the IPv6 address containers ask (default fd00:ec2::254)
#   --no-ipv6               write no ip6tables rules (a host without IPv6)
#   --address-port PORT     also send 169.254.170.2:80 to PROXY_IP:PORT, see 7.
#   --comment TAG           the rules' comment ([A-Za-z0-9_.:-], default ec2metaproxy)
#   --anti-spoof            also write the anti-spoofing table (see 5.), filled
#                           from the containers running now (a snapshot)
#   --follow                with --anti-spoof: the table alone (no iptables rules),
#                           filled, then kept in step with `docker events` and
#                           `ip monitor link` in the foreground until SIGTERM; it
#                           stays when this exits (with --remove it is deleted
#                           then). --force to follow.
#   --resync-interval SEC   --follow lists every container again after SEC quiet
#                           seconds (default 300)
#   -h, --help
#
# The proxy's config must listen where the DNAT points, e.g. "listen": ":18000"
# or "172.17.0.1:18000". Rules do not survive a reboot: run this at boot after
# Docker (contrib/ec2metaproxy-firewall.service does), and the anti-spoofing
# follower after it (contrib/ec2metaproxy-antispoof.service). See
# docs/host-setup.md.
set -euo pipefail

FORCE=0
REMOVE=0
ADDRESS_PORT=""
CC_IP=169.254.170.2
IFACE=docker0
PORT=18000
PROXY_IP=""
METADATA_IP=169.254.169.254
BLOCK_DIRECT=all
TAG=ec2metaproxy
IPT=(iptables -w 5)
IPT6=(ip6tables -w 5)
PROXY_IP6=""
METADATA_IP6=fd00:ec2::254
NO_IPV6=0
STATE_DIR=/run/ec2metaproxy-firewall
ANTI_SPOOF=0
FOLLOW=0
RESYNC_INTERVAL=300
# How long --follow holds a new port closed while it finds its container.
PENDING_TIMEOUT=10s
# Every external command the anti-spoofing part waits for is bounded.
NFT=(timeout 20 nft)
DOCKER=(timeout 30 docker)
NSENTER=(timeout 10 nsenter)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "setup-firewall: $*" >&2; exit 2; }

need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi; }
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --remove) REMOVE=1 ;;
        --container-iface) need_value "$@"; IFACE="$2"; shift ;;
        --proxy-port) need_value "$@"; PORT="$2"; shift ;;
        --proxy-ip) need_value "$@"; PROXY_IP="$2"; shift ;;
        --metadata-ip) need_value "$@"; METADATA_IP="$2"; shift ;;
        --block-direct) need_value "$@"; BLOCK_DIRECT="$2"; shift ;;
        --proxy-ip6) need_value "$@"; PROXY_IP6="$2"; shift ;;
        --metadata-ip6) need_value "$@"; METADATA_IP6="$2"; shift ;;
        --no-ipv6) NO_IPV6=1 ;;
        --address-port) need_value "$@"; ADDRESS_PORT="$2"; shift ;;
        --comment) need_value "$@"; TAG="$2"; shift ;;
        --anti-spoof) ANTI_SPOOF=1 ;;
        --follow) FOLLOW=1 ;;
        --resync-interval) need_value "$@"; RESYNC_INTERVAL="$2"; shift ;;
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
# The shape of an IPv6 address; ip6tables itself refuses a malformed one.
is_ipv6() { [[ "$1" =~ ^[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}$ ]]; }
[[ "$TAG" =~ ^[A-Za-z0-9_.:-]{1,200}$ ]] || die "--comment must match [A-Za-z0-9_.:-]{1,200}: $TAG"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
    die "--proxy-port must be 1..65535: $PORT"
fi
[[ "$IFACE" =~ ^[A-Za-z0-9_.:@-]{1,15}\+?$ ]] || die "--container-iface is not an interface name (or NAME+): $IFACE"
is_ipv4 "$METADATA_IP" || die "--metadata-ip must be an IPv4 address: $METADATA_IP"
is_ipv6 "$METADATA_IP6" || die "--metadata-ip6 must be an IPv6 address: $METADATA_IP6"
if [ -n "$PROXY_IP6" ]; then
    is_ipv6 "$PROXY_IP6" || die "--proxy-ip6 must be an IPv6 address: $PROXY_IP6"
    # The kernel has no route_localnet for IPv6: a packet DNATed to ::1 from
    # another interface is dropped.
    [ "$PROXY_IP6" != ::1 ] || die "--proxy-ip6 cannot be ::1 (IPv6 cannot be redirected to loopback); use the bridge's IPv6 address"
fi
if [ -n "$ADDRESS_PORT" ]; then
    if ! [[ "$ADDRESS_PORT" =~ ^[0-9]+$ ]] || [ "$ADDRESS_PORT" -lt 1 ] || [ "$ADDRESS_PORT" -gt 65535 ] \
        || [ "$ADDRESS_PORT" = "$PORT" ]; then
        die "--address-port must be 1..65535 and not the proxy port: $ADDRESS_PORT"
    fi
fi
case "$BLOCK_DIRECT" in all|proxy-ip|off) ;; *) die "--block-direct must be all, proxy-ip or off" ;; esac
[ "$FOLLOW" = 0 ] || [ "$ANTI_SPOOF" = 1 ] || die "--follow needs --anti-spoof"
if ! [[ "$RESYNC_INTERVAL" =~ ^[0-9]+$ ]] || [ "$RESYNC_INTERVAL" -lt 1 ] || [ "$RESYNC_INTERVAL" -gt 86400 ]; then
    die "--resync-interval must be 1..86400 seconds: $RESYNC_INTERVAL"
fi
# nft names a table with a letter or "_" first; the rest of TAG's alphabet is fine.
if [ "$ANTI_SPOOF" = 1 ] && ! [[ "$TAG" =~ ^[A-Za-z_] ]]; then
    die "--anti-spoof names its nftables table after --comment, which must then start with a letter: $TAG"
fi

WILDCARD=0
[[ "$IFACE" == *+ ]] && WILDCARD=1

# The follower writes no iptables rules: it needs no proxy address.
if [ -z "$PROXY_IP" ] && [ "$REMOVE" = 0 ] && [ "$FOLLOW" = 0 ]; then
    if [ "$WILDCARD" = 0 ]; then
        PROXY_IP="$(ip -4 -o addr show dev "$IFACE" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
    fi
    if [ -z "$PROXY_IP" ]; then
        PROXY_IP=127.0.0.1
        echo "# --proxy-ip: $IFACE has no single IPv4 address; using 127.0.0.1 (needs route_localnet, see below)." >&2
        echo "# To avoid route_localnet, pass a host address the proxy listens on, e.g. --proxy-ip 172.17.0.1." >&2
    fi
fi
if [ "$REMOVE" = 0 ] && [ "$FOLLOW" = 0 ]; then
    is_ipv4 "$PROXY_IP" || die "--proxy-ip must be an IPv4 address: $PROXY_IP"
fi
LOCALNET=0
[[ "$PROXY_IP" == 127.* ]] && LOCALNET=1

# 6. IPv6: on unless --no-ipv6, or the kernel or ip6tables is missing.
IPV6=1
if [ "$NO_IPV6" = 1 ]; then
    IPV6=0
elif [ ! -e /proc/net/if_inet6 ] || ! command -v ip6tables >/dev/null; then
    IPV6=0
    echo "# no IPv6 on this host (no /proc/net/if_inet6 or no ip6tables): IPv4 rules only" >&2
fi
if [ "$IPV6" = 1 ] && [ -z "$PROXY_IP6" ] && [ "$WILDCARD" = 0 ] && [ "$REMOVE" = 0 ] && [ "$FOLLOW" = 0 ]; then
    PROXY_IP6="$(ip -6 -o addr show dev "$IFACE" scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
fi

# The forward-path chain Docker leaves to its users, else FORWARD itself
# (Docker writes ip6tables chains only with "ip6tables": true).
forward_chain() {
    if "${IPT[@]}" -t filter -S DOCKER-USER >/dev/null 2>&1; then echo DOCKER-USER; else echo FORWARD; fi
}
forward_chain6() {
    if "${IPT6[@]}" -t filter -S DOCKER-USER >/dev/null 2>&1; then echo DOCKER-USER; else echo FORWARD; fi
}

# The chains rules may be in: "FAMILY:TABLE:CHAIN" (4 or 6).
rule_chains() {
    echo 4:nat:PREROUTING 4:filter:DOCKER-USER 4:filter:FORWARD 4:filter:INPUT 4:mangle:PREROUTING
    if [ "$IPV6" = 1 ]; then echo 6:nat:PREROUTING 6:filter:DOCKER-USER 6:filter:FORWARD 6:filter:INPUT; fi
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

# Every rule tagged TAG in family $1 (4 or 6), table $2, chain $3, as
# iptables -S prints it.
tagged_rules() {
    local cmd=("${IPT[@]}")
    [ "$1" = 4 ] || cmd=("${IPT6[@]}")
    "${cmd[@]}" -t "$2" -S "$3" 2>/dev/null \
        | grep -E -- "^-A $3 .*--comment \"?${TAG//./\\.}\"?( |\$)" || true
}

# Deletes the iptables rules tagged TAG; FOUND=1 when there was one.
FOUND=0
remove_rules() {
    local failed=0 family table chain line rest cmd
    if [ "$(id -u)" != 0 ]; then
        echo "# (not root: cannot list the current rules; run as root to see what --remove would delete)"
        return 0
    fi
    for where in $(rule_chains); do
        family="${where%%:*}" rest="${where#*:}"
        table="${rest%%:*}" chain="${rest#*:}"
        cmd=("${IPT[@]}")
        [ "$family" = 4 ] || cmd=("${IPT6[@]}")
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            FOUND=1
            # -S prints "-A CHAIN spec...": the same spec deletes it. The tag has
            # no spaces or quotes, so word splitting is safe here.
            local spec=() word prev=""
            for word in ${line#-A }; do
                # -S drops the /32 of a conntrack address, and reading it back
                # without one gives another rule (-D then finds no match).
                case "$prev" in
                    --ctorigdst|--ctorigsrc|--ctrepldst|--ctreplsrc)
                        if [[ "$word" != */* ]]; then
                            if [ "$family" = 4 ]; then word="$word/32"; else word="$word/128"; fi
                        fi ;;
                esac
                spec+=("$word")
                prev="$word"
            done
            run "${cmd[@]}" -t "$table" -D "${spec[@]}" || failed=1
        done < <(tagged_rules "$family" "$table" "$chain")
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
    if [ "$failed" = 1 ]; then
        echo "setup-firewall: some rules tagged \"$TAG\" could not be deleted; list them with" >&2
        echo "  iptables -t TABLE -S | grep -- '--comment $TAG'   (and ip6tables)" >&2
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
    block_direct IPT "$PORT" "$METADATA_IP/32" "$PROXY_IP/32"
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
    add_rules_by_address
    add_rules6
}

# 7. The container credentials door by address: 169.254.170.2:80 to
#    PROXY_IP:ADDRESS_PORT, and that port only through the redirect.
add_rules_by_address() {
    [ -n "$ADDRESS_PORT" ] || return 0
    echo "# containers on $IFACE asking $CC_IP:80 (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) -> $PROXY_IP:$ADDRESS_PORT"
    run "${IPT[@]}" -t nat -I PREROUTING 1 -i "$IFACE" -d "$CC_IP/32" -p tcp --dport 80 \
        "${comment[@]}" -j DNAT --to-destination "$PROXY_IP:$ADDRESS_PORT"
    block_direct IPT "$ADDRESS_PORT" "$CC_IP/32" "$PROXY_IP/32"
}

# 3., 6. and 7.: new connections to PORT from anywhere but loopback are
# dropped unless their original destination was ORIGDST (that is, they came
# through the redirect); --block-direct proxy-ip limits this to PROXY (none:
# nothing to limit it to, no rule).
block_direct() {  # IPT|IPT6 PORT ORIGDST PROXY
    local -n ipt="$1"
    local port="$2" origdst="$3" proxy="$4"
    case "$BLOCK_DIRECT" in
        all)
            run "${ipt[@]}" -t filter -I INPUT 1 ! -i lo -p tcp --dport "$port" \
                -m conntrack --ctstate NEW ! --ctorigdst "$origdst" \
                "${comment[@]}" -j DROP ;;
        proxy-ip)
            [ -n "$proxy" ] || return 0
            run "${ipt[@]}" -t filter -I INPUT 1 ! -i lo -d "$proxy" -p tcp --dport "$port" \
                -m conntrack --ctstate NEW ! --ctorigdst "$origdst" \
                "${comment[@]}" -j DROP ;;
        off) ;;
    esac
}

# 6. The same for IPv6: [METADATA_IP6]:80 to [PROXY_IP6]:PORT, the rest rejected.
add_rules6() {
    [ "$IPV6" = 1 ] || return 0
    local fwd
    fwd="$(forward_chain6)"
    if [ -n "$PROXY_IP6" ]; then
        echo "# ec2metaproxy: containers on $IFACE asking [$METADATA_IP6]:80 -> proxy at [$PROXY_IP6]:$PORT (list it in the config's \"listen\")"
        run "${IPT6[@]}" -t nat -I PREROUTING 1 -i "$IFACE" -d "$METADATA_IP6/128" -p tcp --dport 80 \
            "${comment[@]}" -j DNAT --to-destination "[$PROXY_IP6]:$PORT"
    else
        echo "# $IFACE has no global IPv6 address and no --proxy-ip6 was given: [$METADATA_IP6] is"
        echo "# rejected, not redirected (SDKs in IPv6 endpoint mode get no credentials there)"
    fi
    run "${IPT6[@]}" -t filter -I "$fwd" 1 -i "$IFACE" -d "$METADATA_IP6/128" \
        "${comment[@]}" -j REJECT --reject-with icmp6-port-unreachable
    block_direct IPT6 "$PORT" "$METADATA_IP6/128" "${PROXY_IP6:+$PROXY_IP6/128}"
}

# ---- 5. anti-spoofing (--anti-spoof): the nftables table "bridge TAG" ---------
#
# The frames a container sends enter the bridge on its own port, the host side
# of its veth pair. At the bridge's prerouting hook, before the bridge learns
# the source MAC, forwards the frame or hands it to the host, a frame from a
# port in @ports must carry the container's MAC (@macs); an IPv4 packet its
# IPv4 address too, an ARP packet both as its sender (@ipv4). Frames from any
# other port pass (the host's own, a port of another bridge), except from a
# new port that --follow holds closed (@pending) until it knows its container.
# Updates are set element changes, each in one nft transaction: the rules
# themselves are written once.

# The nft script that creates the table, replacing one of the same name in the
# same transaction (declared first so that the delete always finds it).
as_table() {
    cat <<NFT
table bridge $TAG
delete table bridge $TAG
table bridge $TAG {
    # The host side veth of every protected container port.
    set ports { type ifname; }
    # Port . the MAC Docker gave the container on that port's network.
    set macs { type ifname . ether_addr; }
    # Port . MAC . the container's IPv4 address on that network.
    set ipv4 { type ifname . ether_addr . ipv4_addr; }
    # New ports of a --container-iface bridge whose container is not known
    # yet (--follow): nothing passes until it is, or for $PENDING_TIMEOUT at most.
    set pending { type ifname; flags timeout; timeout $PENDING_TIMEOUT; }

    chain prerouting {
        # -300: ahead of anything else on the bridge (br_netfilter's iptables too).
        type filter hook prerouting priority -300; policy accept;
        # (IPv6 passes, as below: the container's kernel sends its own as the link comes up.)
        iifname != @ports iifname @pending ether type != ip6 counter drop comment "a starting container's port, not yet known"
        iifname != @ports accept
        iifname . ether saddr != @macs counter drop comment "source MAC is not the container's"
        # A VLAN tag hides the ARP or IPv4 header from the two rules below, and
        # the host takes a priority-tagged (VLAN 0) frame as an untagged one.
        ether type { 8021q, 8021ad } counter drop comment "VLAN-tagged frame from a container"
        ether type ip iifname . ether saddr . ip saddr != @ipv4 counter drop comment "IPv4 source is not the container's"
        ether type arp iifname . arp saddr ether . arp saddr ip != @ipv4 counter drop comment "ARP sender is not the container's"
        # IPv6 (issue 22, with the networks issue) goes here: a set ipv6 of
        # port . MAC . address for the source address, and neighbour discovery
        # (the NS/NA target and their link-layer address options). Until then
        # IPv6 frames are checked for their source MAC alone (above) and pass.
    }
}
NFT
}

as_log() { echo "anti-spoof: $*"; }
as_warn() { echo "anti-spoof: $*" >&2; }

# Prints an nft script and, with --force, runs it (one transaction).
nft_script() {
    printf "nft -f - <<'NFT'\n%s\nNFT\n" "$1"
    if [ "$FORCE" = 1 ]; then printf '%s\n' "$1" | "${NFT[@]}" -f -; fi
}

# Runs an nft script quietly (the follower logs what it changed instead).
as_nft() { "${NFT[@]}" -f - <<<"$1"; }

# True when the bridge $1 is one --container-iface names (br-+ is a prefix).
as_bridge_wanted() {
    if [ "$WILDCARD" = 1 ]; then [[ "$1" == "${IFACE%+}"* ]]; else [ "$1" = "$IFACE" ]; fi
}

# The host's veths, by ifindex: LINK_NAME[index]; and by name: LINK_MASTER
# (the bridge it is a port of) and LINK_PEER (its peer's ifindex, in the
# peer's network namespace).
declare -A LINK_NAME=() LINK_MASTER=() LINK_PEER=()
as_load_links() {
    local line name
    LINK_NAME=() LINK_MASTER=() LINK_PEER=()
    while IFS= read -r line; do
        # 146: vethc9d90b4@if145: <BROADCAST,...> mtu 1500 qdisc noqueue master br-174c98443d56 ...
        [[ "$line" =~ ^([0-9]+):\ ([^:@\ ]+)@if([0-9]+): ]] || continue
        name=${BASH_REMATCH[2]}
        LINK_NAME[${BASH_REMATCH[1]}]=$name
        LINK_PEER[$name]=${BASH_REMATCH[3]}
        LINK_MASTER[$name]=""
        if [[ "$line" =~ \ master\ ([^\ ]+)\  ]]; then LINK_MASTER[$name]=${BASH_REMATCH[1]}; fi
    done < <(ip -o link show type veth)
}

# Docker's bridge networks: NET_BRIDGE[network id] = the bridge's interface
# (com.docker.network.bridge.name, else br-<id[:12]>).
declare -A NET_BRIDGE=()
as_load_networks() {
    local out id name ids
    NET_BRIDGE=()
    out=$("${DOCKER[@]}" network ls -q --no-trunc --filter driver=bridge) || return 1
    [ -n "$out" ] || return 0
    mapfile -t ids <<<"$out"
    out=$("${DOCKER[@]}" network inspect --format \
        '{{.Id}} {{index .Options "com.docker.network.bridge.name"}}' "${ids[@]}" 2>/dev/null) || true
    while read -r id name; do
        [ -n "$id" ] || continue
        if [ -z "$name" ] || [ "$name" = "<no value>" ]; then name="br-${id:0:12}"; fi
        NET_BRIDGE[$id]=$name
    done <<<"$out"
}

# Sets COLLECTED to "ID PORT MAC IPV4" lines (IPV4 "-" when there is none),
# one for every port of the given containers (every running one when none is
# given) on a bridge that --container-iface names; a container that is not
# running has none. Returns 1 when Docker cannot be asked; the caller then
# leaves the sets as they are. (It sets globals rather than printing, so that
# what it learns about Docker's networks is kept for the next call.)
#
# The host side veth: Docker's SandboxKey is a file that holds the container's
# network namespace open for as long as its network is set up (unlike a PID,
# it is never reused by something else). Inside it, `ip -o link` shows each
# veth as "INNER: eth0@ifPEER": PEER is the host's end. That host veth must
# name INNER as its own peer, and be a port of the bridge of one of the
# container's Docker networks; the MAC and IPv4 are Docker's for that network.
COLLECTED=""
declare -A KNOWN_KEY=()  # network namespace file -> running container ID
declare -A KNOWN_ID=()   # running container ID -> its network namespace file
SANDBOX_DIR=/var/run/docker/netns
as_collect() {
    local out ids=() id running pid key eps ep net rest mac ip br links l port inner
    local reloaded=0 line
    local -A want=()
    COLLECTED=""
    as_load_links
    if [ $# -gt 0 ]; then
        ids=("$@")
    else
        out=$("${DOCKER[@]}" ps -q --no-trunc) || return 1
        KNOWN_KEY=() KNOWN_ID=()
        [ -n "$out" ] || return 0
        mapfile -t ids <<<"$out"
    fi
    if [ "${#NET_BRIDGE[@]}" = 0 ]; then
        as_load_networks || return 1
        reloaded=1
    fi
    # stdout and stderr together: a line per container found, "Error: No such
    # object" for one that is gone; anything else means Docker did not answer.
    out=$("${DOCKER[@]}" inspect --type container --format \
        '{{.Id}} {{.State.Running}} {{.State.Pid}} {{.NetworkSettings.SandboxKey}}{{range .NetworkSettings.Networks}} {{.NetworkID}}/{{.MacAddress}}/{{.IPAddress}}{{end}}' \
        "${ids[@]}" 2>&1) || [[ "$out" == *"No such"* ]] || return 1
    while IFS= read -r line; do
        [[ "$line" =~ ^[0-9a-f]{64}\  ]] || continue
        read -r id running pid key eps <<<"$line"
        if [ -n "${KNOWN_ID[$id]:-}" ]; then unset "KNOWN_KEY[${KNOWN_ID[$id]}]" "KNOWN_ID[$id]"; fi
        [ "$running" = true ] || continue
        if [[ "$key" == /* ]]; then
            KNOWN_KEY[$key]=$id KNOWN_ID[$id]=$key
            SANDBOX_DIR=${key%/*}
        fi
        want=()
        for ep in $eps; do
            net=${ep%%/*} rest=${ep#*/}
            mac=${rest%%/*} ip=${rest#*/}
            # A network created after the last look: look again, once per call.
            if [ -z "${NET_BRIDGE[$net]:-}" ] && [ "$reloaded" = 0 ]; then
                as_load_networks || return 1
                reloaded=1
            fi
            br=${NET_BRIDGE[$net]:-}
            if [ -z "$br" ] || ! as_bridge_wanted "$br"; then continue; fi
            if [ -z "$mac" ]; then as_warn "${id:0:12} has no MAC on $br: not protected"; continue; fi
            want[$br]="$mac ${ip:--}"
        done
        [ "${#want[@]}" -gt 0 ] || continue
        if [ -z "$key" ] || [ ! -e "$key" ]; then key=/proc/$pid/ns/net; fi
        if ! links=$("${NSENTER[@]}" --net="$key" ip -o link show type veth 2>/dev/null); then
            as_warn "cannot enter the network namespace of ${id:0:12} ($key): not protected"
            continue
        fi
        while IFS= read -r l; do
            [[ "$l" =~ ^([0-9]+):\ [^:@\ ]+@if([0-9]+): ]] || continue
            inner=${BASH_REMATCH[1]}
            port=${LINK_NAME[${BASH_REMATCH[2]}]:-}
            if [ -z "$port" ] || [ "${LINK_PEER[$port]}" != "$inner" ]; then continue; fi
            br=${LINK_MASTER[$port]}
            if [ -z "$br" ] || [ -z "${want[$br]:-}" ]; then continue; fi
            COLLECTED+="${COLLECTED:+$'\n'}$id $port ${want[$br]}"
            unset "want[$br]"
        done <<<"$links"
        for br in "${!want[@]}"; do as_warn "no host port of ${id:0:12} found on $br: not protected"; done
    done <<<"$out"
}

# "ID PORT MAC IPV4" lines -> "SET ELEMENT" lines, one per set element.
as_elements_of() {
    local id port mac ip
    while read -r id port mac ip; do
        [ -n "$port" ] || continue
        echo "ports \"$port\""
        echo "macs \"$port\" . $mac"
        [ "$ip" = - ] || echo "ipv4 \"$port\" . $mac . $ip"
    done
}

# "SET ELEMENT" lines -> the nft commands that VERB (add|delete) them.
as_render() {
    local verb=$1 set elem name
    local -A by=()
    while read -r set elem; do
        [ -n "$set" ] || continue
        by[$set]+="${by[$set]:+, }$elem"
    done
    for name in macs ipv4 ports; do
        [ -z "${by[$name]:-}" ] || echo "$verb element bridge $TAG $name { ${by[$name]} }"
    done
}

# Lines of $1 that are not lines of $2.
lines_minus() {
    local l
    local -A drop=()
    while IFS= read -r l; do [ -z "$l" ] || drop[$l]=1; done <<<"$2"
    while IFS= read -r l; do [ -z "$l" ] || [ -n "${drop[$l]:-}" ] || echo "$l"; done <<<"$1"
}

# One shot (--anti-spoof without --follow): the table with the ports of the
# containers running now.
as_apply() {
    local lines="" n=0
    if [ "$(id -u)" = 0 ]; then
        as_collect || die "cannot list the containers (docker ps failed)"
        lines=$COLLECTED
        [ -z "$lines" ] || n=$(wc -l <<<"$lines")
    else
        echo "# (not root: the containers' ports are not listed; run as root to see them)"
    fi
    echo "# anti-spoof: table bridge $TAG, $n container port(s) on $IFACE"
    nft_script "$(as_table; as_elements_of <<<"$lines" | as_render add)"
    if [ "$FOLLOW" = 0 ]; then
        echo "# these sets are a snapshot: a container started later is not protected until"
        echo "# --anti-spoof --follow (contrib/ec2metaproxy-antispoof.service) adds its port"
    fi
}

# Deletes the table named TAG, if there is one (FOUND=1 then).
as_remove() {
    if ! [[ "$TAG" =~ ^[A-Za-z_] ]] || ! command -v nft >/dev/null; then return 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "# (not root: cannot list the nftables tables)"
        return 0
    fi
    "${NFT[@]}" list table bridge "$TAG" >/dev/null 2>&1 || return 0
    FOUND=1
    run "${NFT[@]:2}" delete table bridge "$TAG"
}

# ---- --follow: the table kept in step with Docker ------------------------------
#
# Two streams, merged into one pipe a line at a time: Docker's events (a
# container started, died, was destroyed; a network connected or disconnected)
# and the kernel's link changes (`ip monitor link`).
#
# Docker reports a start only after the container's process runs, and a
# process that spoofs from its first instruction is done within a few
# milliseconds: waiting for that event alone leaves a window that such a
# container always wins (measured: docs/host-setup.md). So the follower also
# watches the kernel, in three steps:
#   1. pending: Docker attaches the host end of a container's veth to the
#      bridge some 300 ms before the container's process starts (its peer is
#      still down). The port goes into @pending at once: nothing it sends but
#      IPv6 passes until step 2 or 3 (or PENDING_TIMEOUT, as a last resort).
#   2. early: when the peer comes up (LOWER_UP), the container's network
#      namespace is set up, tens of milliseconds before its process starts.
#      The MAC and IPv4 address configured there (a container cannot change
#      them without CAP_NET_ADMIN) go into the sets, which opens the port.
#   3. Docker's start event: the container's own record (inspect) replaces
#      what step 2 read, and is what the sets keep.

declare -A HAVE=()       # container ID -> its "ID PORT MAC IPV4" lines, as in the sets
declare -A PORT_OWNER=() # port -> container ID, for the ports in HAVE
declare -A EARLY=()      # port -> "early PORT MAC IPV4", in the sets before Docker's start event
declare -A PENDING=()    # port -> 1 once put in @pending
TABLE_READY=0            # the table exists with this script's definition
STOP=0
EVENTS_PID=""
LAST_RESYNC=0

# HAVE[$1] = $2, and PORT_OWNER with it.
as_have() {
    local id=$1 port
    while read -r _ port _; do [ -z "$port" ] || unset "PORT_OWNER[$port]"; done <<<"${HAVE[$id]:-}"
    if [ -n "$2" ]; then HAVE[$id]=$2; else unset "HAVE[$id]"; fi
    while read -r _ port _; do [ -z "$port" ] || PORT_OWNER[$port]=$id; done <<<"$2"
}

# Every container listed again; the sets replaced with the result in one
# transaction (the first time, or when the table is gone: the whole table).
# Early elements of containers Docker does not report running yet are kept
# while their port exists.
as_resync() {
    local lines text id port mac ip n=0 early="" l
    LAST_RESYNC=$SECONDS
    if ! as_collect; then
        as_warn "cannot list the containers (docker ps failed): the sets are left as they are"
        return 1
    fi
    lines=$COLLECTED
    for port in "${!EARLY[@]}"; do
        if [ -z "${LINK_MASTER[$port]+set}" ] || grep -q " $port " <<<"$lines"; then
            unset "EARLY[$port]"
        else
            early+="${EARLY[$port]}"$'\n'
        fi
    done
    text=$(printf '%s\n%s' "$lines" "$early" | as_elements_of | as_render add)
    if [ "$TABLE_READY" = 1 ] && as_nft "$(printf 'flush set bridge %s %s\n' "$TAG" ports "$TAG" macs "$TAG" ipv4; echo "$text")"; then
        :
    elif ! as_nft "$(as_table; echo "$text")"; then
        as_warn "nft failed to write table bridge $TAG"
        return 2
    fi
    TABLE_READY=1
    HAVE=() PORT_OWNER=()
    while read -r id port mac ip; do
        [ -n "$id" ] || continue
        HAVE[$id]+="${HAVE[$id]:+$'\n'}$id $port $mac $ip"
        PORT_OWNER[$port]=$id
    done <<<"$lines"
    [ -z "$lines" ] || n=$(wc -l <<<"$lines")
    as_log "resync: $n container port(s) protected on $IFACE"
    while read -r l; do [ -z "$l" ] || as_log "resync: kept early ${l#* }"; done <<<"$early"
}

# Brings the sets in line with container $1 ($2: the event; $3: its time in
# ns). A container that is not running has no ports.
as_sync() {
    local id=$1 why=$2 tn=${3:-} new="" old port l
    if [ "$why" != die ] && [ "$why" != destroy ]; then
        if ! as_collect "$id"; then
            as_warn "cannot ask Docker about ${id:0:12}"
            return 1
        fi
        new=$COLLECTED
    fi
    if [ -z "$new" ] && [ -n "${KNOWN_ID[$id]:-}" ]; then
        unset "KNOWN_KEY[${KNOWN_ID[$id]}]" "KNOWN_ID[$id]"
    fi
    old=${HAVE[$id]:-}
    # Early elements of this container's ports become its own (Docker's
    # record replaces them below if they differ).
    while read -r _ port _; do
        if [ -n "$port" ] && [ -n "${EARLY[$port]:-}" ]; then
            old+="${old:+$'\n'}${EARLY[$port]}"
            unset "EARLY[$port]"
        fi
    done <<<"$new"
    [ "$new" != "$old" ] || return 0
    local old_e new_e gone added text
    old_e=$(as_elements_of <<<"$old")
    new_e=$(as_elements_of <<<"$new")
    gone=$(lines_minus "$old_e" "$new_e")
    added=$(lines_minus "$new_e" "$old_e")
    text=$(as_render delete <<<"$gone"; as_render add <<<"$added")
    if [ -n "$text" ] && ! as_nft "$text"; then
        as_warn "nft failed on the change for ${id:0:12}"
        return 1
    fi
    as_have "$id" "$new"
    # How long after Docker's event the change was in place.
    local after=""
    if [[ "$tn" =~ ^[0-9]+$ ]]; then
        local now_us=${EPOCHREALTIME/[.,]/}
        after=" ($(( (now_us - tn / 1000) / 1000 )) ms after Docker's $why event)"
    fi
    local old_p new_p
    old_p=$(cut -d' ' -f2- <<<"$old")
    new_p=$(cut -d' ' -f2- <<<"$new")
    while read -r l; do [ -z "$l" ] || as_log "$why ${id:0:12}: - $l"; done <<<"$(lines_minus "$old_p" "$new_p")"
    while read -r l; do [ -z "$l" ] || as_log "$why ${id:0:12}: + $l$after"; done <<<"$(lines_minus "$new_p" "$old_p")"
    if [ -n "$new" ] && [ -z "$(lines_minus "$new_p" "$old_p")" ] && [ "$why" = start ]; then
        as_log "$why ${id:0:12}: already protected (early)$after"
    fi
}

# One line of `docker events` (see the --format below).
as_event() {
    local type=${1:-} action=${2:-} tn=${3:-} actor=${4:-} container=${5:-}
    case "$type $action" in
        "container start"|"container die"|"container destroy")
            [ -z "$actor" ] || as_sync "$actor" "$action" "$tn" ;;
        "network connect"|"network disconnect")
            # A starting container's connect comes before its start (which
            # covers it); asking Docker about it then would wait for the start.
            if [ -z "$container" ] || [ -z "${KNOWN_ID[$container]:-}" ]; then return 0; fi
            as_sync "$container" "$action" "$tn" ;;
        *) return 0 ;;
    esac && return 0
    # A change that could not be made: list everything again (unless stopping).
    [ "$STOP" = 1 ] || as_resync || true
}

# The network namespace of a starting container, found by its new port $1
# (host ifindex $2, peer ifindex $3): the container's end and the port name
# each other as peers. Adds the MAC and IPv4 address configured there as
# early elements.
as_early() {
    local port=$1 idx=$2 peer=$3 key newest="" keys=() tried=0 out l inner="" mac="" ip=""
    # Every millisecond counts here: builtins only, but for one nsenter and
    # one nft. The newest namespace first: Docker made the starting
    # container's moments ago (the directory also holds those of containers
    # gone, until Docker's clean-up, and entering each costs milliseconds).
    for key in "$SANDBOX_DIR"/*; do
        if [ ! -e "$key" ] || [ -n "${KNOWN_KEY[$key]:-}" ] || [ "${key##*/}" = default ]; then continue; fi
        keys+=("$key")
        if [ -z "$newest" ] || [ "$key" -nt "$newest" ]; then newest=$key; fi
    done
    [ -n "$newest" ] || return 0
    for key in "$newest" "${keys[@]}"; do
        if [ "$key" = "$newest" ] && [ "$tried" = 1 ]; then continue; fi
        [ "$key" != "$newest" ] || tried=1
        out=$("${NSENTER[@]}" --net="$key" ip -o -4 -batch - 2>/dev/null \
            <<<$'link show type veth\naddr show') || continue
        while IFS= read -r l; do
            # 294: eth0@if295: <...> ... link/ether 02:42:0a:d3:4f:03 brd ...
            if [[ "$l" =~ ^([0-9]+):\ [^:@\ ]+@if([0-9]+):.*\ link/ether\ ([0-9a-f:]+) ]] \
                && [ "${BASH_REMATCH[1]}" = "$peer" ] && [ "${BASH_REMATCH[2]}" = "$idx" ]; then
                inner=$peer mac=${BASH_REMATCH[3]}
            fi
        done <<<"$out"
        [ -n "$inner" ] || continue
        while IFS= read -r l; do
            # 294: eth0    inet 10.211.79.3/24 brd 10.211.79.255 scope global eth0 ...
            if [[ "$l" =~ ^([0-9]+):\ [^\ ]+\ +inet\ ([0-9.]+)/ ]] && [ "${BASH_REMATCH[1]}" = "$inner" ]; then
                ip=${BASH_REMATCH[2]}
                break
            fi
        done <<<"$out"
        # Its address is configured before the veth comes up; without one, wait
        # for Docker's start event rather than drop the container's IPv4.
        [ -n "$ip" ] || return 0
        l="early $port $mac $ip"
        as_nft "add element bridge $TAG macs { \"$port\" . $mac }
add element bridge $TAG ipv4 { \"$port\" . $mac . $ip }
add element bridge $TAG ports { \"$port\" }" || return 0
        EARLY[$port]=$l
        as_log "early: + $port $mac $ip (read in $key, before Docker's start event)"
        return 0
    done
}

# One line of `ip -o monitor link`.
as_link_event() {
    local line=$1 deleted=0 idx port peer flags master=""
    if [[ "$line" == "Deleted "* ]]; then deleted=1; line=${line#Deleted }; fi
    [[ "$line" =~ ^([0-9]+):\ ([^:@\ ]+)@([^:]*):\ \<([^>]*)\> ]] || return 0
    idx=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]} peer=${BASH_REMATCH[3]} flags=${BASH_REMATCH[4]}
    if [ "$deleted" = 1 ]; then
        unset "PENDING[$port]"
        # A port that went away before its container started (a failed start).
        if [ -n "${EARLY[$port]:-}" ]; then
            as_nft "$(as_elements_of <<<"${EARLY[$port]}" | as_render delete)" || true
            as_log "early: - ${EARLY[$port]#early } (the port is gone)"
            unset "EARLY[$port]"
        fi
        return 0
    fi
    if [[ "$line" =~ \ master\ ([^\ ]+)\  ]]; then master=${BASH_REMATCH[1]}; fi
    if [ -z "$master" ] || ! as_bridge_wanted "$master"; then return 0; fi
    if [ -n "${PORT_OWNER[$port]:-}" ] || [ -n "${EARLY[$port]:-}" ]; then return 0; fi
    if [[ ",$flags," == *,LOWER_UP,* ]] && [[ "$peer" =~ ^if([0-9]+)$ ]]; then
        as_early "$port" "$idx" "${BASH_REMATCH[1]}"
    elif [ -z "${PENDING[$port]:-}" ]; then
        # Step 1: a new port, its peer not up yet.
        PENDING[$port]=1
        if as_nft "add element bridge $TAG pending { \"$port\" }"; then
            as_log "pending: + $port (new on $master: closed until its container is known)"
        fi
    fi
}

# Copies lines from stdin to stdout one write per line, so that two streams
# sharing a pipe never cut into each other's lines.
as_relay() {
    local l
    while IFS= read -r l; do printf '%s\n' "$l"; done
}

# Both streams into stdout until either ends (or SIGTERM).
as_streams_stop() {
    local pids
    mapfile -t pids < <(jobs -p)
    [ "${#pids[@]}" = 0 ] || kill "${pids[@]}" 2>/dev/null || true
}
as_streams() {
    trap 'as_streams_stop; exit 0' TERM
    "${DOCKER[@]:2}" events \
        --format '{{.Type}} {{.Action}} {{.TimeNano}} {{.Actor.ID}} {{index .Actor.Attributes "container"}}' \
        --filter type=container --filter type=network \
        --filter event=start --filter event=die --filter event=destroy \
        --filter event=connect --filter event=disconnect > >(as_relay) &
    ip -o monitor link > >(as_relay) &
    wait -n || true
    as_streams_stop
}

as_on_signal() {
    STOP=1
    # Ends the streams, so that the blocked read returns at once.
    if [ -n "$EVENTS_PID" ]; then kill "$EVENTS_PID" 2>/dev/null || true; fi
}

as_follow() {
    local fd line partial rc backoff=1 started events wait_s
    trap as_on_signal TERM INT
    while [ "$STOP" = 0 ]; do
        # The streams first, then the list: whatever happens in between is in
        # the streams, and applying it again changes nothing.
        exec {fd}< <(as_streams)
        EVENTS_PID=$!
        started=$SECONDS events=0
        rc=0
        as_resync || rc=$?
        if [ "$rc" = 0 ]; then
            as_log "following docker events (container start/die/destroy, network connect/disconnect) and link changes"
        elif [ "$rc" = 2 ] && [ "$TABLE_READY" = 0 ]; then
            kill "$EVENTS_PID" 2>/dev/null || true
            die "cannot write the nftables table bridge $TAG"
        fi
        partial=""
        while [ "$STOP" = 0 ]; do
            # Everything is listed again every RESYNC_INTERVAL seconds, in case
            # an event was lost.
            wait_s=$((LAST_RESYNC + RESYNC_INTERVAL - SECONDS))
            if [ "$wait_s" -le 0 ]; then as_resync || true; continue; fi
            rc=0
            IFS= read -r -t "$wait_s" -u "$fd" line || rc=$?
            if [ "$rc" -gt 128 ]; then partial+=$line; continue; fi
            line=$partial$line partial=""
            [ "$rc" = 0 ] || break
            [ -n "$line" ] || continue
            events=$((events + 1))
            # shellcheck disable=SC2086  # Docker's fields are words without spaces
            case "$line" in
                "container "*|"network "*) as_event $line ;;
                *) as_link_event "$line" ;;
            esac
        done
        exec {fd}<&-
        kill "$EVENTS_PID" 2>/dev/null || true
        wait "$EVENTS_PID" 2>/dev/null || true
        EVENTS_PID=""
        [ "$STOP" = 0 ] || break
        # A stream broke (Docker restarted, or is not up yet): again after a
        # pause that grows to 30 s while it keeps failing, then a full resync.
        if [ "$events" -gt 0 ] || [ $((SECONDS - started)) -ge 60 ]; then backoff=1; fi
        as_warn "docker events or ip monitor ended; following again in ${backoff}s (with a full resync)"
        sleep "$backoff" &
        wait "$!" || kill "$!" 2>/dev/null || true
        backoff=$((backoff * 2 > 30 ? 30 : backoff * 2))
    done
    if [ "$REMOVE" = 1 ]; then as_remove; fi
    as_log "stopped"
}

if [ "$FORCE" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "--force needs root"
fi
if [ "$FOLLOW" = 0 ]; then
    command -v iptables >/dev/null || die "iptables not found (Debian: apt-get install iptables)"
fi
if [ "$ANTI_SPOOF" = 1 ]; then
    for tool in nft docker nsenter ip timeout; do
        command -v "$tool" >/dev/null || die "--anti-spoof needs $tool (Debian: apt-get install nftables docker.io util-linux iproute2 coreutils)"
    done
fi
if [ "$FORCE" = 0 ]; then
    echo "# dry run: nothing is changed; run again with --force to apply"
fi

if [ "$FOLLOW" = 1 ]; then
    # The table alone: the iptables rules are the firewall unit's.
    if [ "$FORCE" = 0 ]; then
        as_apply
        echo "# --follow: a dry run does not follow docker events"
        exit 0
    fi
    as_follow
elif [ "$REMOVE" = 1 ]; then
    rc=0
    remove_rules || rc=$?
    as_remove || rc=1
    if [ "$FOUND" = 0 ] && [ "$(id -u)" = 0 ]; then echo "# no rules tagged \"$TAG\""; fi
    exit "$rc"
else
    # Applying again replaces the rules with this tag instead of doubling them
    # (and the table, below, in one transaction).
    if [ "$(id -u)" = 0 ] && [ -n "$(for w in $(rule_chains); do r="${w#*:}"; tagged_rules "${w%%:*}" "${r%%:*}" "${r#*:}"; done)" ]; then
        echo "# replacing the rules already tagged \"$TAG\""
        remove_rules
    fi
    add_rules
    if [ "$ANTI_SPOOF" = 1 ]; then as_apply; fi
fi
