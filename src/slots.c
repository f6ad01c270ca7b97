/*
 * slots: Redis Cluster's key space (see the header). The CRC16 is the bitwise form of the
 * XMODEM variant; keys are short, so no table is kept.
 */
#include "predcache/slots.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

uint16_t pc_slot_crc16(const char *s, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)s[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned pc_slot_of(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close != NULL && close > open + 1)
            return pc_slot_crc16(open + 1, (size_t)(close - open - 1)) & (PC_SLOTS - 1);
    }
    return pc_slot_crc16(key, len) & (PC_SLOTS - 1);
}

void pc_slotmap_init(struct pc_slotmap *m)
{
    memset(m, 0, sizeof *m);
}

int pc_slotmap_node(struct pc_slotmap *m, const char *host, int port)
{
    size_t hl = host != NULL ? strlen(host) : 0;
    if (hl == 0 || hl >= PC_SLOT_HOST_MAX || port <= 0 || port > 65535)
        return -1;
    for (size_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
            return (int)i;
    if (m->n_nodes == PC_SLOT_NODES_MAX)
        return -1;
    memcpy(m->nodes[m->n_nodes].host, host, hl + 1);
    m->nodes[m->n_nodes].port = port;
    return (int)m->n_nodes++;
}

int pc_slotmap_assign(struct pc_slotmap *m, unsigned first, unsigned last, const char *host,
                      int port)
{
    if (first > last || last >= PC_SLOTS)
        return -1;
    int n = pc_slotmap_node(m, host, port);
    if (n < 0)
        return -1;
    memset(m->owner + first, n + 1, last - first + 1);
    return 0;
}

const struct pc_slot_node *pc_slotmap_owner(const struct pc_slotmap *m, unsigned slot)
{
    if (slot >= PC_SLOTS || m->owner[slot] == 0)
        return NULL;
    return &m->nodes[m->owner[slot] - 1];
}

size_t pc_slotmap_uncovered(const struct pc_slotmap *m)
{
    size_t n = 0;
    for (size_t s = 0; s < PC_SLOTS; s++)
        n += m->owner[s] == 0;
    return n;
}

/* An unsigned decimal of 1..max_digits digits at s[*i], no sign or leading zero. */
static int read_uint(const char *s, size_t len, size_t *i, int max_digits, unsigned long *v)
{
    size_t start = *i;
    unsigned long x = 0;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9' && (int)(*i - start) < max_digits)
        x = x * 10 + (unsigned long)(s[(*i)++] - '0');
    size_t n = *i - start;
    if (n == 0 || (n > 1 && s[start] == '0') || (*i < len && s[*i] >= '0' && s[*i] <= '9'))
        return -1;
    *v = x;
    return 0;
}

int pc_slot_parse_redirect(const char *err, size_t len, int *ask, unsigned *slot, char *host,
                           size_t hostlen, int *port)
{
    size_t i;
    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        *ask = 0;
        i = 6;
    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        *ask = 1;
        i = 4;
    } else {
        return -1;
    }
    unsigned long s, p;
    if (read_uint(err, len, &i, 5, &s) != 0 || s >= PC_SLOTS || i >= len || err[i++] != ' ')
        return -1;
    /* host:port, the port after the last ':' (an IPv6 address may be bracketed or not) */
    const char *addr = err + i;
    size_t alen = len - i;
    const char *colon = NULL;
    for (size_t k = 0; k < alen; k++)
        if (addr[k] == ':')
            colon = addr + k;
    if (colon == NULL || colon == addr)
        return -1;
    size_t pi = (size_t)(colon - err) + 1;
    if (read_uint(err, len, &pi, 5, &p) != 0 || pi != len || p == 0 || p > 65535)
        return -1;
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen || memchr(h, ' ', hl) != NULL)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *slot = (unsigned)s;
    *port = (int)p;
    return 0;
}

static int name_is(const char *s, size_t len, const char *name)
{
    return len == strlen(name) && strncasecmp(s, name, len) == 0;
}

int pc_slot_command_keys(int argc, const char *const *argv, const size_t *lens, int *first)
{
    *first = 1;
    if (argc < 2)
        return 0;
    const char *c = argv[0];
    size_t n = lens[0];
    static const char *const keyless[] = {"PING",  "PUBLISH", "CLUSTER", "AUTH",   "SELECT",
                                          "ROLE",  "INFO",    "ASKING",  "SCRIPT", "SUBSCRIBE",
                                          "HELLO", "ECHO",    "COMMAND"};
    for (size_t i = 0; i < sizeof keyless / sizeof keyless[0]; i++)
        if (name_is(c, n, keyless[i]))
            return 0;
    if (name_is(c, n, "MGET") || name_is(c, n, "DEL") || name_is(c, n, "UNLINK") ||
        name_is(c, n, "EXISTS"))
        return argc - 1;
    if (name_is(c, n, "EVAL") || name_is(c, n, "EVALSHA")) {
        long k = 0;
        if (argc < 3 || lens[2] == 0 || lens[2] > 9)
            return 0;
        for (size_t i = 0; i < lens[2]; i++) {
            if (argv[2][i] < '0' || argv[2][i] > '9')
                return 0;
            k = k * 10 + (argv[2][i] - '0');
        }
        *first = 3;
        return k <= argc - 3 ? (int)k : argc - 3;
    }
    if (name_is(c, n, "XREADGROUP") || name_is(c, n, "XREAD")) {
        for (int i = 1; i < argc; i++) {
            if (name_is(argv[i], lens[i], "STREAMS")) {
                *first = i + 1;
                return (argc - i - 1) / 2;
            }
        }
        return 0;
    }
    if (name_is(c, n, "XGROUP") || name_is(c, n, "XINFO")) {
        *first = 2;
        return argc > 2 ? 1 : 0;
    }
    return 1;
}
