/*
 * cachekey_ref: an independent reading of the v2 cache key on json-c 0.16, the oracle for
 * tests only (tests/unit/test_canon.c, tests/fuzz/fuzz_cachekey.c, fuzz_keypairs.c). Same
 * contracts as the functions of the same name in predcache/cachekey.h; link with json-c and
 * libcrypto. Never linked into predcache.
 */
#ifndef PREDCACHE_TESTS_CACHEKEY_REF_H
#define PREDCACHE_TESTS_CACHEKEY_REF_H

#include "predcache/batch.h"
#include "predcache/cachekey.h"

int pc_ref_cachekey_head(const struct pc_key_head *h, struct pc_buf *out);
int pc_ref_cachekey_body(const struct pc_key_params *p, const char *head, size_t head_len,
                         const char *body, size_t len, int body_is_json, char out[PC_KEY_MAX],
                         enum pc_key_kind *kind, char *err, size_t errlen);
int pc_ref_cachekey_derive(const struct pc_key_params *p, const char *route, const char *body,
                           size_t len, int body_is_json, char out[PC_KEY_MAX],
                           enum pc_key_kind *kind, char *err, size_t errlen);
int pc_ref_cachekey_canonical(const char *json, size_t len, struct pc_buf *out);
int pc_ref_cachekey_herd(const char *prefix, const char (*keys)[PC_KEY_MAX], const size_t *pick,
                         size_t n, char out[PC_KEY_MAX]);

/*
 * pc_cachekey_instances read with json-c: 0 with *n element spans and keys (malloc'ed, the
 * caller frees both) and *sig, 1 when the body is not a batch keyed one element at a time,
 * -1 no memory. The spans come from a scan of the text, not from canon or batch.c.
 */
int pc_ref_cachekey_instances(const struct pc_key_params *p, const char *head, size_t head_len,
                              const char *body, size_t len, struct pc_span **spans, size_t *n,
                              struct pc_span *sig, char (**keys)[PC_KEY_MAX]);

/*
 * What the model server sees of each element of such a batch: canonical(context) "\n"
 * canonical(element), one malloc'ed string each in *readings (pc_ref_readings_free). 0 with
 * *n; 1 when the body is no batch keyed one element at a time, or (unless last_wins) when
 * taking the first of each name reads it otherwise; -1 no memory.
 */
int pc_ref_instance_readings(const struct pc_key_params *p, const char *body, size_t len,
                             int last_wins, char ***readings, size_t *n);
void pc_ref_readings_free(char **readings, size_t n);

/* The parameter sets the tests and fuzz targets hold cachekey to the reference under: every
 * family, with and without ignore fields, a path field, the input fields alias, odd names. */
extern const struct pc_key_params pc_ref_params[];
extern const size_t pc_ref_n_params;

/*
 * The material after the head that pc_cachekey_body hashes: form "\n" input, appended to
 * out. Returns as pc_ref_cachekey_body (0, or -1 with err when a declared body is not JSON).
 */
int pc_ref_cachekey_material(const struct pc_key_params *p, const char *body, size_t len,
                             int body_is_json, struct pc_buf *out, enum pc_key_kind *kind,
                             char *err, size_t errlen);

/*
 * 1 when model servers may read the body two ways: a member the family reads is named twice
 * at the root (names decoded), or an object inside a value it reads holds a name twice.
 * json-c and Python's json keep the last of the two, rapidjson's FindMember (TF Serving,
 * Triton) the first. 0 otherwise, and for any body that is not a strict JSON object or
 * array.
 */
int pc_ref_names_twice(const struct pc_key_params *p, const char *body, size_t len);

/*
 * What the model server of p's family sees in the body, appended to out as one tagged text:
 *   "json\n" canonical(the members the family reads, or the whole non-object value)
 *   "fields\n" canonical(the input fields present)   (the unsafe alias: what the key claims)
 *   "raw\n" the bytes                                 (no exact JSON reading)
 * When a name is given twice, json-c's reading (the last) is the one taken if last_wins is
 * set; else the body must read the same when the first of each name is taken (rapidjson's
 * FindMember), at every depth, or it has no JSON reading (servers read it two ways). 0 ok,
 * -1 no memory.
 */
int pc_ref_reading(const struct pc_key_params *p, const char *body, size_t len, int last_wins,
                   struct pc_buf *out);

#endif
