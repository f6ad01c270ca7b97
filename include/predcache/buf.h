/*
 * buf: a growable byte buffer and small string helpers shared by every module.
 * Owns only its own memory; never does I/O.
 */
#ifndef PREDCACHE_BUF_H
#define PREDCACHE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct pc_buf {
    char *data; /* always NUL-terminated when non-NULL (the NUL is not counted in len) */
    size_t len;
    size_t cap;
};

void pc_buf_init(struct pc_buf *b);
/* Frees the memory; the buffer may be reused after pc_buf_init. Accepts NULL. */
void pc_buf_release(struct pc_buf *b);
/* Ensures room for n more bytes. 0 ok, -1 out of memory. */
int pc_buf_reserve(struct pc_buf *b, size_t n);
int pc_buf_append(struct pc_buf *b, const void *p, size_t n);
int pc_buf_append_str(struct pc_buf *b, const char *s);
int pc_buf_append_char(struct pc_buf *b, char c);
int pc_buf_printf(struct pc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The hot paths' numbers without printf: v in decimal; v as 16 lowercase hex digits. */
int pc_buf_append_u64(struct pc_buf *b, uint64_t v);
int pc_buf_append_hex64(struct pc_buf *b, uint64_t v);
/* Escapes s[0..n) as the inside of a JSON string into out (cap bytes, 6 or more): quotes
 * and backslashes behind a backslash, control characters and bytes that are not UTF-8 as
 * \u00XX, the rest as it is. Takes as many whole characters as fit; *used: the input bytes
 * taken. Returns the bytes written. Allocates nothing (the log's hot path). */
size_t pc_json_escape(const char *s, size_t n, size_t *used, char *out, size_t cap);
/* Appends s escaped as the inside of a JSON string (pc_json_escape). */
int pc_buf_json_chars(struct pc_buf *b, const char *s);
/* Appends {"error":"<msg>"} with msg escaped as a JSON string. */
int pc_buf_json_error(struct pc_buf *b, const char *msg);
/* Moves the memory out; the caller frees it. The buffer is left empty. */
char *pc_buf_steal(struct pc_buf *b, size_t *len);

/*
 * A string arena: NUL-terminated copies that stay where they are until the arena is
 * released, then are freed at once. The first copies go into a buffer the caller gives
 * (or none), the rest into heap blocks, each twice the size of the one before (at least
 * what the copy needs): a message's strings cost a few allocations, or none, where a copy
 * each cost one. A pointer into the arena stays valid until pc_arena_release.
 * An arena given a buffer of the caller's must not be copied: it points into that buffer.
 * One without may be moved to a new owner by a struct copy, the old one then forgotten.
 * A zeroed struct is an empty arena without a buffer.
 */
struct pc_arena_block;
struct pc_arena {
    struct pc_arena_block *blocks; /* heap blocks, the newest first */
    char *next;                    /* where the next copy goes */
    size_t left;                   /* bytes free from next */
};
/* first: first_len bytes of the caller's for the first copies (NULL, 0: none). */
void pc_arena_init(struct pc_arena *a, char *first, size_t first_len);
/* A copy of s[0..n) with a NUL after it; NULL out of memory. s may hold NULs. */
char *pc_arena_strndup(struct pc_arena *a, const char *s, size_t n);
char *pc_arena_strdup(struct pc_arena *a, const char *s);
/* Frees the heap blocks; every copy is gone. The arena is left empty, without a buffer.
 * Accepts NULL. */
void pc_arena_release(struct pc_arena *a);

/* OpenSSL's SHA-256, fetched once for the process (an EVP_MD): EVP_sha256() in a digest's
 * init fetches the implementation again on every call (a lock and a lookup). NULL if
 * OpenSSL has none. */
struct evp_md_st;
const struct evp_md_st *pc_sha256_md(void);

/* Monotonic clock in microseconds. */
uint64_t pc_now_us(void);
/* Wall clock in milliseconds since the epoch. */
int64_t pc_wall_ms(void);

/* The clock a structure that ages its entries reads: the wall clock in production, a fake
 * one in the model-based tests (which move time by hand). */
struct pc_clock {
    int64_t (*now_ms)(void *arg);
    void *arg;
};
/* c->now_ms(c->arg); pc_wall_ms() when c or its function is NULL. */
int64_t pc_clock_ms(const struct pc_clock *c);

/* Case-insensitive ASCII comparison of a header name or token. */
int pc_strcaseeq(const char *a, const char *b);
/* Decimal text of v, NUL-terminated, in out (20 digits at most); returns its length. The
 * hot paths' integer formatting, without printf. */
#define PC_U64_TEXT 21
size_t pc_u64_text(uint64_t v, char out[PC_U64_TEXT]);
/* strlcpy-like: copies at most size-1 bytes, always terminates; returns strlen(src). */
size_t pc_strlcpy(char *dst, const char *src, size_t size);
/* Value of a hex digit, or -1. */
int pc_hexval(int c);
/* 1 when s is a plain name: 1 to max bytes of A-Z a-z 0-9 . _ - (namespaces, sections). */
int pc_name_ok(const char *s, size_t max);
/* 1 when the secret a equals b, compared in time that does not depend on where they differ
 * (so a token cannot be guessed byte by byte from timings). */
int pc_token_equal(const char *a, const char *b);

#endif
