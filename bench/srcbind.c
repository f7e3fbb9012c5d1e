/*
 * srcbind: an LD_PRELOAD shim that gives each new TCP connection to a
 * loopback address the next source address from a list, so one load
 * generator (wrk, oha) looks like many containers to the proxy, which maps
 * callers by source IP. Without it every connection comes from 127.0.0.1.
 *
 *   SRCBIND_IPS=127.10.0.1,127.10.0.2,...  addresses to cycle through
 *   SRCBIND_PORT=18000                     only connections to this port
 *
 * The whole of 127.0.0.0/8 is local on Linux, so binding to any of it works
 * without configuring an interface. IP_BIND_ADDRESS_NO_PORT lets the kernel
 * pick the source port at connect() time, so ports are not exhausted.
 *
 * Build: gcc -O2 -shared -fPIC -o libsrcbind.so srcbind.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_IPS 65536

static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static struct in_addr ips[MAX_IPS];
static unsigned nips;
static int port_filter = -1;
static unsigned next_ip;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
    real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    const char *list = getenv("SRCBIND_IPS");
    const char *port = getenv("SRCBIND_PORT");
    if (port && *port)
        port_filter = atoi(port);
    if (!list)
        return;
    char *copy = strdup(list);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && nips < MAX_IPS;
         tok = strtok_r(NULL, ",", &save)) {
        if (inet_pton(AF_INET, tok, &ips[nips]) == 1)
            nips++;
    }
    free(copy);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    pthread_once(&once, init);
    if (nips && addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *to = (const struct sockaddr_in *)addr;
        int type = 0;
        socklen_t tlen = sizeof type;
        if ((ntohl(to->sin_addr.s_addr) >> 24) == 127 &&
            (port_filter < 0 || ntohs(to->sin_port) == port_filter) &&
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM) {
            struct sockaddr_in local;
            socklen_t llen = sizeof local;
            /* Leave sockets the program bound itself alone. */
            if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0 && local.sin_port == 0 &&
                local.sin_addr.s_addr == htonl(INADDR_ANY)) {
                unsigned i = __atomic_fetch_add(&next_ip, 1, __ATOMIC_RELAXED) % nips;
                int one = 1;
                setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
                memset(&local, 0, sizeof local);
                local.sin_family = AF_INET;
                local.sin_addr = ips[i];
                local.sin_port = 0;
                bind(fd, (struct sockaddr *)&local, sizeof local);
            }
        }
    }
    return real_connect(fd, addr, len);
}
