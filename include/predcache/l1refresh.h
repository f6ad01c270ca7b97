/*
 * l1refresh: the in-process tier's entries read again from Redis before they expire (see
 * l1.h, "Read ahead"). Owns nothing past a GET in flight: each carries its key and the
 * tier's epoch, and frees itself in its callback (the store calls it once, at teardown
 * too). The tier outlives the workers and their stores.
 */
#ifndef PREDCACHE_L1REFRESH_H
#define PREDCACHE_L1REFRESH_H

#include <stdint.h>

struct pc_buf;
struct pc_l1;
struct pc_store;

/* pc_l1_get, and when the entry found is due to be read again, a GET of key on st whose
 * answer refills the tier (or removes the entry when Redis has nothing), counted in
 * *asked (a metric of the calling worker; NULL: not counted). */
int pc_l1_get_refresh(struct pc_l1 *l1, struct pc_store *st, const char *key, struct pc_buf *out,
                      uint64_t *asked);

#endif
