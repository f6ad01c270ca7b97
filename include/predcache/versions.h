/*
 * versions: which version of a model serves requests that name none (or name a label),
 * as the model server's own status endpoint says (TF Serving GET /v1/models/NAME[/labels/L],
 * KServe v2 GET /v2/models/NAME; on the gRPC port, the gRPC model server's GetModelStatus or
 * ModelMetadata). One worker's cache of those answers, refreshed every
 * [cache] version_refresh_s, so that a rollout starts a fresh cache key space.
 *
 * Owns its entries (at most PC_VERSIONS_MAX; model names come from client paths) and the
 * status calls in flight. A known version is served while its refresh runs behind; a
 * failed lookup is remembered for the same period (the model server is not asked again
 * on every request).
 */
#ifndef PREDCACHE_VERSIONS_H
#define PREDCACHE_VERSIONS_H

#include <stddef.h>

#include "predcache/routes.h"

#define PC_VERSIONS_MAX 1024

struct pc_worker;
struct pc_versions;

enum pc_version_state {
    PC_VERSION_KNOWN,   /* out holds the version; "" for a model without versions (keyed
                           by the path as sent) */
    PC_VERSION_PENDING, /* cb will be called exactly once, later */
    PC_VERSION_UNKNOWN, /* the model server could not tell (recently): do not cache */
};

/* version: the resolved version ("" when the model has none), or NULL when it could not
 * be resolved. */
typedef void (*pc_version_cb)(const char *version, void *arg);

/* Borrows w (its upstreams, config, metrics and clock). NULL on no memory. */
struct pc_versions *pc_versions_new(struct pc_worker *w);
/* Call after the worker's upstreams are freed (their callbacks land here). NULL ok. */
void pc_versions_free(struct pc_versions *v);

/* Calls fn(name, arg) for each model the model server said has no versions (its status
 * endpoint answered 404, or listed none): their requests are keyed by the path as sent. */
typedef void (*pc_versions_name_fn)(const char *name, void *arg);
void pc_versions_unversioned(const struct pc_versions *v, pc_versions_name_fn fn, void *arg);

/* be: the gRPC model server ([backend] grpc_url), asked over gRPC: TF Serving's
 * ModelService/GetModelStatus (the newest AVAILABLE version, or the label's), KServe v2's
 * ModelMetadata (the newest version it lists; none listed: no versions). */
#define PC_VERSIONS_GRPC ((size_t)-1)

/* The version serving m (a path without a version) on backend be (an index of the worker's
 * backends, or PC_VERSIONS_GRPC). */
enum pc_version_state pc_versions_get(struct pc_versions *v, size_t be,
                                      const struct pc_model_ref *m, char *out, size_t outlen,
                                      pc_version_cb cb, void *arg);

#endif
