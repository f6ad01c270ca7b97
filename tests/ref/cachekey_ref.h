/*
 * cachekey_ref: the json-c implementation of the v1 cache key, the oracle for tests only.
 * Same contracts as pc_cachekey_derive, pc_cachekey_canonical and pc_cachekey_instance in
 * predcache/cachekey.h; link with json-c and libcrypto.
 */
#ifndef PREDCACHE_TESTS_CACHEKEY_REF_H
#define PREDCACHE_TESTS_CACHEKEY_REF_H

#include "predcache/cachekey.h"

int pc_ref_cachekey_derive(const struct pc_key_params *p, const char *route, const char *body,
                           size_t len, int body_is_json, char out[PC_KEY_MAX],
                           enum pc_key_kind *kind, char *err, size_t errlen);
int pc_ref_cachekey_canonical(const char *json, size_t len, struct pc_buf *out);
int pc_ref_cachekey_instance(const struct pc_key_params *p, const char *route,
                             const char *signature, size_t sig_len, const char *inst,
                             size_t inst_len, char out[PC_KEY_MAX], char *err, size_t errlen);

#endif
