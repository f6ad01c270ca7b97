/*
 * slots: Redis Cluster's key space, pure. Owns the slot of a key (CRC16 of the key or of
 * its hash tag, modulo 16384), the slot map (which node serves each slot, learnt from
 * CLUSTER SLOTS and corrected by MOVED), and the reading of MOVED / ASK redirections.
 * Never touches a connection: the store asks it where a key goes and tells it what the
 * cluster said.
 */
#ifndef PREDCACHE_SLOTS_H
#define PREDCACHE_SLOTS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PC_SLOTS 16384
#define PC_SLOT_NODES_MAX 64 /* masters a map tracks; ranges of more are refused */
#define PC_SLOT_HOST_MAX 256

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster computes it. */
uint16_t pc_slot_crc16(const char *s, size_t len);

/* The hash tag of key[0..len): the part between the first '{' and the first '}' after it,
 * when that part is not empty. 1 with it at key[*off], *n bytes; 0 when key has none (then
 * the whole key decides the slot). Inline: the configuration checks names with it too. */
static inline int pc_slot_tag(const char *key, size_t len, size_t *off, size_t *n)
{
    const char *open = memchr(key, '{', len);
    if (open == NULL)
        return 0;
    size_t from = (size_t)(open - key) + 1;
    const char *close = memchr(open + 1, '}', len - from);
    if (close == NULL || close == open + 1)
        return 0;
    *off = from;
    *n = (size_t)(close - open - 1);
    return 1;
}

/* The slot of key: the CRC16 of its hash tag (pc_slot_tag), else of the whole key; modulo
 * 16384. */
unsigned pc_slot_of(const char *key, size_t len);

struct pc_slot_node {
    char host[PC_SLOT_HOST_MAX];
    int port;
};

struct pc_slotmap {
    uint8_t owner[PC_SLOTS]; /* node index + 1; 0: no node known */
    struct pc_slot_node nodes[PC_SLOT_NODES_MAX];
    size_t n_nodes;
};

/* An empty map: no slot has a node. */
void pc_slotmap_init(struct pc_slotmap *m);

/* The index of host:port in m, added when new. -1: the map is full, or a bad address. */
int pc_slotmap_node(struct pc_slotmap *m, const char *host, int port);

/* Slots first..last (inclusive, first <= last < 16384) are served by host:port. 0 ok; -1
 * a bad range or address, or no room for another node (m unchanged). */
int pc_slotmap_assign(struct pc_slotmap *m, unsigned first, unsigned last, const char *host,
                      int port);

/* The node serving slot, or NULL when none is known. */
const struct pc_slot_node *pc_slotmap_owner(const struct pc_slotmap *m, unsigned slot);

/* Slots with no node (a map that does not cover the key space must be asked again). */
size_t pc_slotmap_uncovered(const struct pc_slotmap *m);

/*
 * Reads a redirection error ("MOVED 3999 127.0.0.1:6381", "ASK 3999 [::1]:6381", without
 * the leading '-'): *ask 1 for ASK, 0 for MOVED, the slot and the address. 0 ok; -1 when
 * err is not exactly one of them.
 */
int pc_slot_parse_redirect(const char *err, size_t len, int *ask, unsigned *slot, char *host,
                           size_t hostlen, int *port);

/*
 * Where a command's keys are, so that it can be sent to the node serving them: *first is
 * the index in argv of its first key; returns how many keys follow from there (MGET, DEL:
 * every argument; EVAL/EVALSHA: numkeys; XREADGROUP: the streams after STREAMS; XGROUP:
 * the key after the subcommand; other commands: argv[1]). 0: the command has no key
 * (PING, PUBLISH, CLUSTER, ...), any node serves it. Command names in any case.
 */
int pc_slot_command_keys(int argc, const char *const *argv, const size_t *lens, int *first);

#endif
