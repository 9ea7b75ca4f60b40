/* A stand-in miner for tests: it speaks XMRig's Stratum login to a pool the test runs on
 * loopback and then burns one CPU until killed. It mines nothing.
 * Usage: miner -o HOST:PORT -u WALLET [other xmrig-style flags are accepted and ignored] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *pool = NULL, *user = "x";
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "-o")) pool = argv[i + 1];
        if (!strcmp(argv[i], "-u")) user = argv[i + 1];
    }
    if (!pool) return 2;
    char host[64];
    const char *colon = strrchr(pool, ':');
    if (!colon || (size_t)(colon - pool) >= sizeof host) return 2;
    memcpy(host, pool, colon - pool);
    host[colon - pool] = 0;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return 2;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return 3;
    char msg[1024];
    int n = snprintf(msg, sizeof msg,
        "{\"id\":1,\"jsonrpc\":\"2.0\",\"method\":\"login\",\"params\":{\"login\":\"%s\","
        "\"pass\":\"x\",\"agent\":\"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/12.2.0\","
        "\"algo\":[\"rx/0\"]}}\n", user);
    if (write(fd, msg, n) != n) return 4;
    char buf[4096];
    if (read(fd, buf, sizeof buf) <= 0) return 5;
    /* Burn CPU, sending a keepalive now and then so the connection stays established. */
    volatile unsigned long x = 0;
    time_t last = time(NULL);
    for (;;) {
        for (int i = 0; i < 10000000; i++) x += i * 2654435761u;
        if (time(NULL) - last >= 5) {
            const char *ka = "{\"id\":2,\"jsonrpc\":\"2.0\",\"method\":\"keepalived\",\"params\":{\"id\":\"1\"}}\n";
            if (write(fd, ka, strlen(ka)) < 0) return 6;
            last = time(NULL);
        }
    }
}
