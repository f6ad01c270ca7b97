/*
 * h1parse_ref: a second, deliberately plain reading of one HTTP/1.1 request, the oracle
 * for tests only (tests/unit/test_h1parse.c, tests/fuzz/fuzz_h1parse.c). It sees the whole
 * input at once and reads it top to bottom as RFC 9112 and predcache/h1parse.h describe it:
 * no state machine, no line buffer, no partial input to resume. Never linked into predcache.
 */
#ifndef PREDCACHE_TESTS_H1PARSE_REF_H
#define PREDCACHE_TESTS_H1PARSE_REF_H

#include <stddef.h>

#include "predcache/h1parse.h"

#define PC_REF_H1_INCOMPLETE (-1)

struct pc_ref_h1 {
    int status;      /* 0: a complete request; PC_REF_H1_INCOMPLETE; else the refusal */
    size_t consumed; /* when complete: the request's bytes (what follows is the next one) */
    char *method, *target, *path, *query;
    int minor;
    struct pc_header *headers; /* n_headers of them */
    size_t n_headers;
    char *body;
    size_t body_len;
    int keep_alive, is_head, expect_continue, chunked;
    int started; /* 1 once anything but whole empty lines was read */
};

/* Reads the request at the start of in[0..len). Returns out->status. Free with
 * pc_ref_h1_free (also after a refusal). */
int pc_ref_h1_read(const char *in, size_t len, const struct pc_h1_limits *lim,
                   struct pc_ref_h1 *out);
void pc_ref_h1_free(struct pc_ref_h1 *r);

#endif
