/*
 * generations: O(1) invalidation. Each namespace has a Redis hash <prefix>gen:<ns> of
 * counters: "*" (the whole namespace), "m/NAME" (a model), "v/NAME/VERSION" (one version).
 * POST /cache/invalidate increments one and announces it on the done channel; the
 * counters that apply to a request are part of its cache key, so every older entry is
 * out of reach at once (and expires by its TTL).
 *
 * Owns one worker's copy of those hashes (at most PC_GENERATIONS_MAX namespaces) and the
 * HGETALLs in flight. A copy is re-read when an invalidation is announced (callers wait
 * for the new one) and at least every [cache] generation_refresh_ms (served while it is
 * re-read behind, for a missed announcement).
 */
#ifndef PREDCACHE_GENERATIONS_H
#define PREDCACHE_GENERATIONS_H

#include <stddef.h>

#define PC_GENERATIONS_MAX 1024
#define PC_GEN_MAX 64 /* room for "g" + three counters */

struct pc_worker;
struct pc_config;
struct pc_generations;

enum pc_gen_state {
    PC_GEN_KNOWN,   /* out holds the generation text ("" while nothing was invalidated) */
    PC_GEN_PENDING, /* cb will be called exactly once, later; then ask again */
    PC_GEN_UNKNOWN, /* Redis could not say: out holds the best known (maybe older) text;
                     * do not look up with it (storing is harmless: a fresh answer) */
};

typedef void (*pc_gen_cb)(void *arg);

/* Borrows w (its store, config, metrics). NULL on no memory. */
struct pc_generations *pc_generations_new(struct pc_worker *w);
/* Call after the worker's store is freed (its callbacks land here). NULL ok. */
void pc_generations_free(struct pc_generations *g);

/* The generation text for model (may be "") and version (may be "") in namespace ns.
 * cb NULL: do not wait (UNKNOWN where it would be PENDING). */
enum pc_gen_state pc_generations_get(struct pc_generations *g, const char *ns, const char *model,
                                     const char *version, char *out, size_t outlen, pc_gen_cb cb,
                                     void *arg);

/* An invalidation of ns was announced: the next request of ns reads the counters anew. */
void pc_generations_forget(struct pc_generations *g, const char *ns);

/* The Redis hash of namespace ns. 0 ok, -1 too long. */
int pc_generations_key(const struct pc_config *cfg, const char *ns, char *out, size_t len);
/* The hash field for model (NULL or "": the whole namespace) and version (NULL or ""). */
int pc_generations_field(const char *model, const char *version, char *out, size_t len);

/* The message announcing an invalidation of ns on the done channel starts with this. */
#define PC_GEN_ANNOUNCE "!gen "

#endif
