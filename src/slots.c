/*
 * slots: Redis Cluster's key space (see the header). The CRC16 is the XMODEM variant, a byte
 * at a time from a table (it runs for every command sent to a cluster).
 */
#include "predcache/slots.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* CRC16-CCITT (XMODEM) of each byte value: the bitwise form, precomputed. */
static const uint16_t crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7, 0x8108, 0x9129, 0xa14a, 0xb16b,
    0xc18c, 0xd1ad, 0xe1ce, 0xf1ef, 0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de, 0x2462, 0x3443, 0x0420, 0x1401,
    0x64e6, 0x74c7, 0x44a4, 0x5485, 0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4, 0xb75b, 0xa77a, 0x9719, 0x8738,
    0xf7df, 0xe7fe, 0xd79d, 0xc7bc, 0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b, 0x5af5, 0x4ad4, 0x7ab7, 0x6a96,
    0x1a71, 0x0a50, 0x3a33, 0x2a12, 0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41, 0xedae, 0xfd8f, 0xcdec, 0xddcd,
    0xad2a, 0xbd0b, 0x8d68, 0x9d49, 0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78, 0x9188, 0x81a9, 0xb1ca, 0xa1eb,
    0xd10c, 0xc12d, 0xf14e, 0xe16f, 0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e, 0x02b1, 0x1290, 0x22f3, 0x32d2,
    0x4235, 0x5214, 0x6277, 0x7256, 0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405, 0xa7db, 0xb7fa, 0x8799, 0x97b8,
    0xe75f, 0xf77e, 0xc71d, 0xd73c, 0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab, 0x5844, 0x4865, 0x7806, 0x6827,
    0x18c0, 0x08e1, 0x3882, 0x28a3, 0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92, 0xfd2e, 0xed0f, 0xdd6c, 0xcd4d,
    0xbdaa, 0xad8b, 0x9de8, 0x8dc9, 0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8, 0x6e17, 0x7e36, 0x4e55, 0x5e74,
    0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

uint16_t pc_slot_crc16(const char *s, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc16_table[((crc >> 8) ^ (unsigned char)s[i]) & 0xff]);
    return crc;
}

unsigned pc_slot_of(const char *key, size_t len)
{
    size_t off, n;
    if (pc_slot_tag(key, len, &off, &n))
        return pc_slot_crc16(key + off, n) & (PC_SLOTS - 1);
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
