/* buf: growable byte buffer and small string helpers. */
#include "predcache/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <pthread.h>

void pc_buf_init(struct pc_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void pc_buf_release(struct pc_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    pc_buf_init(b);
}

int pc_buf_reserve(struct pc_buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) {
        if (cap > ((size_t)-1) / 2)
            return -1;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int pc_buf_append(struct pc_buf *b, const void *p, size_t n)
{
    if (pc_buf_reserve(b, n) != 0)
        return -1;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int pc_buf_append_str(struct pc_buf *b, const char *s)
{
    return pc_buf_append(b, s, strlen(s));
}

int pc_buf_append_char(struct pc_buf *b, char c)
{
    return pc_buf_append(b, &c, 1);
}

/* One vsnprintf when the text fits a line on the stack (every caller's usual case), a
 * second one into the buffer only past that. */
int pc_buf_printf(struct pc_buf *b, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof line)
        return pc_buf_append(b, line, (size_t)n);
    if (pc_buf_reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int pc_buf_append_u64(struct pc_buf *b, uint64_t v)
{
    char d[PC_U64_TEXT];
    return pc_buf_append(b, d, pc_u64_text(v, d));
}

int pc_buf_append_hex64(struct pc_buf *b, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char d[16];
    for (int i = 15; i >= 0; i--, v >>= 4)
        d[i] = hex[v & 15];
    return pc_buf_append(b, d, sizeof d);
}

/* The length of the well-formed UTF-8 sequence at s[0..n) (2 to 4), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n)
        return 0;
    /* The second byte's range excludes overlong forms, surrogates and past U+10FFFF. */
    unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return len;
}

size_t pc_json_escape(const char *s, size_t n, size_t *used, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *in = (const unsigned char *)s;
    size_t i = 0, w = 0;
    while (i < n) {
        unsigned char ch = in[i];
        if (ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\') {
            if (w + 1 > cap)
                break;
            out[w++] = (char)ch;
            i++;
            continue;
        }
        size_t seq = ch >= 0x80 ? utf8_len(in + i, n - i) : 0;
        if (seq > 0) { /* a character beyond ASCII: as it is */
            if (w + seq > cap)
                break;
            memcpy(out + w, in + i, seq);
            w += seq;
            i += seq;
        } else if (ch == '"' || ch == '\\') {
            if (w + 2 > cap)
                break;
            out[w++] = '\\';
            out[w++] = (char)ch;
            i++;
        } else { /* a control character, or a byte that is not UTF-8: \u00XX */
            if (w + 6 > cap)
                break;
            memcpy(out + w, "\\u00", 4);
            out[w + 4] = hex[ch >> 4];
            out[w + 5] = hex[ch & 15];
            w += 6;
            i++;
        }
    }
    *used = i;
    return w;
}

int pc_buf_json_chars(struct pc_buf *b, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        char out[256];
        size_t used, w = pc_json_escape(s, n, &used, out, sizeof out);
        if (pc_buf_append(b, out, w) != 0)
            return -1;
        s += used;
        n -= used;
    }
    return 0;
}

int pc_buf_json_error(struct pc_buf *b, const char *msg)
{
    int rc = pc_buf_append_str(b, "{\"error\":\"");
    rc |= pc_buf_json_chars(b, msg);
    rc |= pc_buf_append_str(b, "\"}");
    return rc ? -1 : 0;
}

char *pc_buf_steal(struct pc_buf *b, size_t *len)
{
    char *p = b->data;
    if (len != NULL)
        *len = b->len;
    pc_buf_init(b);
    return p;
}

struct pc_arena_block {
    struct pc_arena_block *next;
    size_t size;
    char data[];
};

/* The first heap block's room: with its header, 992 bytes, below glibc's large requests
 * (1008 and more), which each sweep its fast bins first (malloc_consolidate). */
#define ARENA_FIRST_BLOCK (992 - sizeof(struct pc_arena_block))

void pc_arena_init(struct pc_arena *a, char *first, size_t first_len)
{
    a->blocks = NULL;
    a->next = first;
    a->left = first != NULL ? first_len : 0;
}

char *pc_arena_strndup(struct pc_arena *a, const char *s, size_t n)
{
    if (n >= SIZE_MAX / 4)
        return NULL;
    if (a->left <= n) {
        size_t size = ARENA_FIRST_BLOCK;
        if (a->blocks != NULL && a->blocks->size < SIZE_MAX / 8)
            size = a->blocks->size * 2;
        if (size <= n)
            size = n + 1;
        struct pc_arena_block *b = malloc(sizeof *b + size);
        if (b == NULL)
            return NULL;
        b->next = a->blocks;
        b->size = size;
        a->blocks = b;
        a->next = b->data;
        a->left = size;
    }
    char *out = a->next;
    if (n > 0)
        memcpy(out, s, n);
    out[n] = '\0';
    a->next += n + 1;
    a->left -= n + 1;
    return out;
}

char *pc_arena_strdup(struct pc_arena *a, const char *s)
{
    return pc_arena_strndup(a, s, strlen(s));
}

void pc_arena_release(struct pc_arena *a)
{
    if (a == NULL)
        return;
    while (a->blocks != NULL) {
        struct pc_arena_block *b = a->blocks;
        a->blocks = b->next;
        free(b);
    }
    pc_arena_init(a, NULL, 0);
}

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); /* kept for the process's life */
}

const struct evp_md_st *pc_sha256_md(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md;
}

uint64_t pc_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t pc_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pc_clock_ms(const struct pc_clock *c)
{
    return c != NULL && c->now_ms != NULL ? c->now_ms(c->arg) : pc_wall_ms();
}

static inline unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

int pc_strcaseeq(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (; *x == *y || ascii_lower(*x) == ascii_lower(*y); x++, y++) {
        if (*x == '\0')
            return 1;
    }
    return 0;
}

size_t pc_u64_text(uint64_t v, char out[PC_U64_TEXT])
{
    char d[PC_U64_TEXT], *p = d + sizeof d;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    size_t n = (size_t)(d + sizeof d - p);
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

size_t pc_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size > 0) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int pc_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pc_token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ (i < lb ? b[i] : 0));
    return diff == 0;
}

int pc_name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}
