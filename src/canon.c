/*
 * canon: one pass over a JSON text that decides what json-c 0.16 (strict, depth 64) would
 * decide and writes the canonical form as it goes.
 *
 *     text --read_value (recursive, depth <= 63)--> refused: json-c's reason and offset
 *        |   scalars: written at once (numbers from their text, strings re-escaped)
 *        |   arrays:  elements written in order; flushed to out.write in chunks
 *        |   objects: members written in text order and recorded; at '}' put in name
 *        |            order only when they are not already (a name given twice: INEXACT)
 *        `--> PC_CANON_OK / LENIENT (json-c reads it, strict JSON does not) / INEXACT
 *
 * The reading mirrors json_tokener_parse_ex() fed the text and then, when it asks for more,
 * one NUL byte (what cachekey did with json-c): so a refusal met at the end of the text, or
 * at a NUL inside it, is "unexpected end of data", and a top-level number or word may end
 * the text. Depth: the root is at 0 and a container at 63 must be empty.
 */
#include "predcache/canon.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define CANON_DEPTH 64       /* json-c's tokener depth */
#define CANON_EXP_MAX 100000 /* largest exponent, written or canonical, of an exact number */
#define CANON_CHUNK 16384    /* stage size handed to out->write at a time */

/* json-c's reasons (json_tokener_error_desc), and cachekey's own for a NUL after the value. */
enum jerr {
    J_DEPTH,
    J_EOF,
    J_UNEXPECTED,
    J_NULL,
    J_BOOL,
    J_NUMBER,
    J_ARRAY,
    J_KEY_NAME,
    J_KEY_SEP,
    J_VALUE_SEP,
    J_STRING,
    J_TRAILING,
};

static const char *const jerr_text[] = {
    [J_DEPTH] = "nesting too deep",
    [J_EOF] = "unexpected end of data",
    [J_UNEXPECTED] = "unexpected character",
    [J_NULL] = "null expected",
    [J_BOOL] = "boolean expected",
    [J_NUMBER] = "number expected",
    [J_ARRAY] = "array value separator ',' expected",
    [J_KEY_NAME] = "quoted object property name expected",
    [J_KEY_SEP] = "object property name separator ':' expected",
    [J_VALUE_SEP] = "object value separator ',' expected",
    [J_STRING] = "invalid string sequence",
    [J_TRAILING] = "trailing data after the value",
};

/* One member of an object being written: its text in out, its decoded name in names. */
struct member {
    size_t text, text_len;
    size_t name, name_len;
    int inexact;
};

struct sort_ent {
    const char *name;
    size_t len;
    size_t pos;
};

struct canon {
    const char *s;
    size_t len;
    int lenient;
    enum jerr err;
    size_t err_off;

    struct pc_buf *out; /* the caller's buffer, or stage */
    struct pc_buf stage;
    int (*write)(void *arg, const void *p, size_t n);
    void *arg;
    int broken;       /* out of memory, or write gave up: nothing written can be trusted */
    int open_objects; /* objects being written: out holds text that may still move */

    struct member *m; /* members of the objects being written, innermost last */
    size_t nm, mcap;
    struct pc_buf names; /* their decoded names, same order */
    struct pc_buf scratch;
    struct sort_ent *sort;
    size_t sortcap;

    const struct pc_canon_hook *hook;
};

static void canon_init(struct canon *c, const char *s, size_t len)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    c->len = len;
    pc_buf_init(&c->stage);
    pc_buf_init(&c->names);
    pc_buf_init(&c->scratch);
}

static void canon_release(struct canon *c)
{
    pc_buf_release(&c->stage);
    pc_buf_release(&c->names);
    pc_buf_release(&c->scratch);
    free(c->m);
    free(c->sort);
}

/* ---- reading helpers --------------------------------------------------------------- */

/* The byte at i, or -1 past the end. */
static inline int at(const struct canon *c, size_t i)
{
    return i < c->len ? (unsigned char)c->s[i] : -1;
}

static inline int is_ws(int ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static inline int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static inline int is_hex(int ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static inline int is_num_char(char ch)
{
    return is_digit(ch) || ch == '.' || ch == 'e' || ch == 'E' || ch == '+' || ch == '-';
}

static inline size_t skip_ws(const struct canon *c, size_t i)
{
    while (i < c->len && is_ws((unsigned char)c->s[i]))
        i++;
    return i;
}

/*
 * Refuses at off for reason kind. json-c reads past the end as one NUL byte, and a NUL byte
 * turns any refusal into "unexpected end of data" at its offset (the end of the text when
 * off is past it).
 */
static int fail_at(struct canon *c, enum jerr kind, size_t off)
{
    if (off >= c->len) {
        kind = J_EOF;
        off = c->len;
    } else if (c->s[off] == '\0') {
        kind = J_EOF;
    }
    c->err = kind;
    c->err_off = off;
    return -1;
}

/* ---- writing ----------------------------------------------------------------------- */

static char *room_grow(struct canon *c, size_t n)
{
    if (pc_buf_reserve(c->out, n) != 0) {
        c->broken = 1;
        return NULL;
    }
    return c->out->data + c->out->len;
}

/* Room for n more bytes (and the NUL) at out->data + out->len, or NULL (and broken). */
static inline char *room(struct canon *c, size_t n)
{
    if (c->out->cap - c->out->len > n) /* cap is 0 or len + 1 at least */
        return c->out->data + c->out->len;
    return room_grow(c, n);
}

static inline void put(struct canon *c, const void *p, size_t n)
{
    char *w = room(c, n);
    if (w != NULL) {
        memcpy(w, p, n);
        c->out->len += n;
    }
}

static inline void put_char(struct canon *c, char ch)
{
    char *w = room(c, 1);
    if (w != NULL) {
        *w = ch;
        c->out->len++;
    }
}

/* Hands the stage to out->write once nothing in it can move any more. */
static void flush(struct canon *c)
{
    if (c->write == NULL || c->open_objects > 0 || c->stage.len == 0)
        return;
    if (!c->broken && c->write(c->arg, c->stage.data, c->stage.len) != 0)
        c->broken = 1;
    c->stage.len = 0;
}

/* Bytes of a decoded string, escaped the one canonical way. */
static void put_escaped(struct canon *c, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)p[i];
        char e[6] = {'\\', 0, '0', '0', 0, 0};
        size_t k = 2;
        switch (b) {
        case '"':
        case '\\':
            e[1] = (char)b;
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            if (b >= 0x20) {
                put(c, p + i, 1);
                continue;
            }
            e[1] = 'u';
            e[4] = hex[b >> 4];
            e[5] = hex[b & 15];
            k = 6;
        }
        put(c, e, k);
    }
}

/* Whether p[0..n) holds U+FFFD (EF BF BD); memchr first, as most texts have no 0xEF. */
static int has_replacement_char(const char *p, size_t n)
{
    const char *end = p + n;
    while (end - p >= 3 && (p = memchr(p, 0xEF, (size_t)(end - p - 2))) != NULL) {
        if ((unsigned char)p[1] == 0xBF && (unsigned char)p[2] == 0xBD)
            return 1;
        p++;
    }
    return 0;
}

/* ---- strings ----------------------------------------------------------------------- */

enum smode {
    S_CHECK,  /* only read */
    S_DECODE, /* append the decoded bytes to dec */
    S_EMIT,   /* write the canonical string to out */
};

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t has_zero_byte(uint64_t v)
{
    return (v - ONES) & ~v & HIGHS;
}

static inline int is_plain(unsigned char b)
{
    return b >= 0x20 && b != '"' && b != '\\' && b != '\'';
}

/* End of the run of bytes from j that a string keeps as they are: 16 at a time where
 * SSE2 is (every x86-64), then 8 at a time, then one by one. */
static size_t plain_run(const char *s, size_t j, size_t n)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\'),
                  apos = _mm_set1_epi8('\''), ctl = _mm_set1_epi8(0x1F);
    while (n - j >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + j));
        __m128i stop = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash)),
            _mm_or_si128(_mm_cmpeq_epi8(v, apos), _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v)));
        unsigned mask = (unsigned)_mm_movemask_epi8(stop);
        if (mask != 0)
            return j + (size_t)__builtin_ctz(mask); /* exactly the bytes is_plain refuses */
        j += 16;
    }
#endif
    while (n - j >= 8) {
        uint64_t x;
        memcpy(&x, s + j, 8);
        uint64_t stop = has_zero_byte(x ^ (ONES * '"')) | has_zero_byte(x ^ (ONES * '\\')) |
                        has_zero_byte(x ^ (ONES * '\'')) | ((x - ONES * 0x20) & ~x & HIGHS);
        if (stop != 0)
            break;
        j += 8;
    }
    while (j < n && is_plain((unsigned char)s[j]))
        j++;
    return j;
}

static void put_decoded(struct canon *c, enum smode mode, struct pc_buf *dec, const char *p,
                        size_t n)
{
    if (mode == S_EMIT)
        put_escaped(c, p, n);
    else if (mode == S_DECODE && pc_buf_append(dec, p, n) != 0)
        c->broken = 1;
}

/* A code point as json-c writes it (1 to 4 UTF-8 bytes). */
static void put_code_point(struct canon *c, enum smode mode, struct pc_buf *dec, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | ((cp >> 18) & 0x07));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    put_decoded(c, mode, dec, u, n);
}

#define REPLACEMENT 0xFFFDu
#define IS_HIGH(u) (((u)&0xFC00u) == 0xD800u)
#define IS_LOW(u) (((u)&0xFC00u) == 0xDC00u)

/*
 * The string whose opening quote (" or ', which json-c takes for member names) is at i.
 * Decoding as json-c does: a high surrogate pairs only with a "\u" low one right after it,
 * and every lone surrogate becomes U+FFFD. Returns -1 refused, else (S_EMIT) 1 when the
 * string holds U+FFFD, 0 otherwise; *end is past the closing quote.
 */
static int read_string(struct canon *c, size_t i, enum smode mode, struct pc_buf *dec, size_t *end)
{
    const char *s = c->s;
    size_t n = c->len, j = i + 1, start = 0;
    char quote = s[i];
    unsigned hi = 0; /* a high surrogate waiting for its low half */
    if (mode == S_EMIT) {
        start = c->out->len;
        put(c, "\"", 1);
    }
    for (;;) {
        size_t run = j;
        j = plain_run(s, j, n);
        if (j > run) {
            if (hi != 0) {
                put_code_point(c, mode, dec, REPLACEMENT);
                hi = 0;
            }
            if (mode == S_EMIT)
                put(c, s + run, j - run);
            else
                put_decoded(c, mode, dec, s + run, j - run);
        }
        if (j >= n)
            return fail_at(c, J_EOF, n);
        unsigned char b = (unsigned char)s[j];
        if (b == '\\' && at(c, j + 1) == 'u') {
            unsigned u = 0;
            for (size_t q = j + 2; q < j + 6; q++) {
                int h = at(c, q);
                if (!is_hex(h))
                    return fail_at(c, J_STRING, q);
                u = u << 4 | (unsigned)(h <= '9' ? h - '0' : (h & 7) + 9);
            }
            j += 6;
            if (hi != 0) {
                if (IS_LOW(u))
                    u = ((hi & 0x3FFu) << 10) + (u & 0x3FFu) + 0x10000u;
                else
                    put_code_point(c, mode, dec, REPLACEMENT);
                hi = 0;
            }
            /* json-c tests the 16 low bits even of a pair it just decoded: U+1D800 waits
             * for a low half like a high surrogate, U+1DC00 becomes U+FFFD. */
            if (IS_HIGH(u))
                hi = u;
            else
                put_code_point(c, mode, dec, IS_LOW(u) ? REPLACEMENT : u);
            continue;
        }
        if (hi != 0) {
            put_code_point(c, mode, dec, REPLACEMENT);
            hi = 0;
        }
        if (b == (unsigned char)quote)
            break;
        if (b == '\\') {
            char d;
            switch (at(c, j + 1)) {
            case '"':
            case '\\':
            case '/':
                d = s[j + 1];
                break;
            case 'b':
                d = '\b';
                break;
            case 'f':
                d = '\f';
                break;
            case 'n':
                d = '\n';
                break;
            case 'r':
                d = '\r';
                break;
            case 't':
                d = '\t';
                break;
            default:
                return fail_at(c, J_STRING, j + 1);
            }
            put_decoded(c, mode, dec, &d, 1);
            j += 2;
            continue;
        }
        if (b == '\0') { /* json-c steps over it, then stops: end of data */
            c->err = J_EOF;
            c->err_off = j + 1;
            return -1;
        }
        if (b < 0x20) /* written raw: json-c keeps it, strict JSON refuses it */
            c->lenient = 1;
        put_decoded(c, mode, dec, s + j, 1); /* a control character, or the other quote */
        j++;
    }
    *end = j + 1;
    if (mode != S_EMIT)
        return 0;
    put(c, "\"", 1);
    return !c->broken && has_replacement_char(c->out->data + start, c->out->len - start);
}

/* ---- numbers ----------------------------------------------------------------------- */

/* The parts of an RFC 8259 number: ["-"] s[is..ie] ["." s[fs..fe]] ["e" exp]. */
struct num {
    int neg;
    int is_int; /* neither fraction nor exponent: json-c reads an integer */
    int exp_big;
    size_t is, ie, fs, fe; /* fs == fe == ie without a fraction */
    int64_t exp;           /* the written exponent, when !exp_big */
};

/* End of the RFC 8259 number that s[i..n) starts with, or 0 when it starts with none. */
static inline size_t rfc_number(const char *s, size_t i, size_t n, struct num *x)
{
    size_t j = i;
    x->neg = 0;
    if (j < n && s[j] == '-') {
        x->neg = 1;
        j++;
    }
    x->is = j;
    if (j < n && s[j] == '0') {
        j++;
    } else if (j < n && s[j] >= '1' && s[j] <= '9') {
        do
            j++;
        while (j < n && is_digit(s[j]));
    } else {
        return 0;
    }
    x->ie = x->fs = x->fe = j;
    x->is_int = 1;
    x->exp_big = 0;
    x->exp = 0;
    if (j < n && s[j] == '.') {
        x->fs = ++j;
        while (j < n && is_digit(s[j]))
            j++;
        if (j == x->fs)
            return 0;
        x->fe = j;
        x->is_int = 0;
    }
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        int neg = 0;
        if (++j < n && (s[j] == '+' || s[j] == '-'))
            neg = s[j++] == '-';
        size_t d = j;
        int64_t e = 0;
        for (; j < n && is_digit(s[j]); j++)
            if (e <= CANON_EXP_MAX)
                e = e * 10 + (s[j] - '0');
        if (j == d)
            return 0;
        x->exp_big = e > CANON_EXP_MAX;
        x->exp = neg ? -e : e;
        x->is_int = 0;
    }
    return j;
}

/* End of the number json-c's tokener takes from s[i..n): its state machine, verbatim. */
static size_t jc_number_end(const char *s, size_t i, size_t n, int *is_double)
{
    int dbl = 0, is_exp = 0, neg_ok = 1, pos_ok = 0;
    size_t j = i;
    for (; j < n; j++) {
        char ch = s[j];
        if (is_digit(ch)) {
            neg_ok = pos_ok = 0;
        } else if (!is_exp && (ch == 'e' || ch == 'E')) {
            is_exp = dbl = 1;
            neg_ok = pos_ok = 1;
        } else if ((neg_ok && ch == '-') || (pos_ok && ch == '+')) {
            neg_ok = pos_ok = 0;
        } else if (!dbl && ch == '.') {
            dbl = 1;
            neg_ok = pos_ok = 1;
        } else {
            break;
        }
    }
    *is_double = dbl;
    return j;
}

/*
 * Whether json-c converts the number text s[i..k): an integer through strtoll/strtoull
 * (saturating; "-" alone fails; strict mode refuses a leading zero on a nonzero value), a
 * double through strtod, which must read all of it.
 */
static int jc_number_valid(const char *s, size_t i, size_t k, int is_double)
{
    size_t j = i + (s[i] == '-');
    if (!is_double) {
        if (j == k)
            return 0;
        if (j > i || s[j] != '0')
            return 1;
        while (j < k && s[j] == '0')
            j++;
        return j == k;
    }
    size_t digits = j;
    while (j < k && is_digit(s[j]))
        j++;
    size_t nd = j - digits;
    if (j < k && s[j] == '.') {
        size_t f = ++j;
        while (j < k && is_digit(s[j]))
            j++;
        nd += j - f;
    }
    if (nd == 0)
        return 0;
    if (j < k && (s[j] == 'e' || s[j] == 'E')) {
        if (++j < k && (s[j] == '+' || s[j] == '-'))
            j++;
        size_t e = j;
        while (j < k && is_digit(s[j]))
            j++;
        if (j == e)
            return 0;
    }
    return j == k;
}

/*
 * Whether the bare integer ["-"] d[0..k) (no leading zero) is one json-c reads saturated (at
 * or beyond INT64_MIN, at or beyond UINT64_MAX): such a value is never keyed exactly, in
 * any spelling.
 */
static int int_saturates(int neg, const char *d, size_t k)
{
    const char *lim = neg ? "9223372036854775808" : "18446744073709551615";
    size_t ll = strlen(lim);
    return k > ll || (k == ll && memcmp(d, lim, ll) >= 0);
}

/* 2^1024 - 2^970: from here up strtod's nearest double is infinite (DBL_MAX's odd tie). */
static const char dbl_overflow[] =
    "17976931348623158079372897140530341507993413271003782693617377898044496829276475094664"
    "90179775872070963302864166928879109465555478519404026306574886715058206819089020007083"
    "83676273854845817711531764475730270069855571366959622842914819860834936475292719074168"
    "444365510704342711559699508093042880177904174497792";

/* Whether D x 10^e (D the digits d[0..nd), no leading or trailing zero) reads as +-inf. */
static int overflows(const char *d, size_t nd, int64_t e)
{
    int64_t top = (int64_t)nd + e; /* 10^(top-1) <= value < 10^top */
    size_t ol = sizeof dbl_overflow - 1;
    if (top != (int64_t)ol)
        return top > (int64_t)ol;
    int cmp = memcmp(d, dbl_overflow, nd < ol ? nd : ol);
    return cmp != 0 ? cmp > 0 : nd >= ol;
}

/* Copies the few bytes of a number's digits: cheaper inline than a call to memcpy. */
static inline char *copy_short(char *w, const char *p, size_t n)
{
    if (n > 32) {
        memcpy(w, p, n);
        return w + n;
    }
    for (size_t i = 0; i < n; i++)
        w[i] = p[i];
    return w + n;
}

static char *u64_digits(uint64_t u, char *end)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    return end;
}

/*
 * Writes the canonical form of the RFC 8259 number x of s: ["-"] D ["e" E], D its
 * significant digits, E only when nonzero, every zero "0". Returns 1, writing nothing,
 * when json-c holds no exact value for it (saturated integer, double overflowing to inf)
 * or an exponent, written or canonical, is beyond CANON_EXP_MAX.
 */
static int put_number(struct canon *c, const char *s, const struct num *x)
{
    if (x->exp_big || (x->is_int && int_saturates(x->neg, s + x->is, x->ie - x->is)))
        return 1;
    size_t first = x->is;
    while (first < x->ie && s[first] == '0')
        first++;
    if (first == x->ie) {
        first = x->fs;
        while (first < x->fe && s[first] == '0')
            first++;
        if (first == x->fe) {
            put(c, "0", 1); /* any zero, -0 included */
            return 0;
        }
    }
    size_t last = x->fe; /* one past the last nonzero digit */
    while (last > x->fs && s[last - 1] == '0')
        last--;
    int64_t trailing = (int64_t)(x->fe - last);
    if (last == x->fs) { /* no fraction, or all zeros: the integer part holds a nonzero digit */
        last = x->ie;
        while (s[last - 1] == '0')
            last--;
        trailing += (int64_t)(x->ie - last);
    }
    int64_t e = x->exp - (int64_t)(x->fe - x->fs) + trailing;
    if (e > CANON_EXP_MAX || e < -CANON_EXP_MAX)
        return 1;

    char *w0 = room(c, (x->fe - x->is) + 24);
    if (w0 == NULL)
        return 1;
    char *w = w0;
    if (x->neg)
        *w++ = '-';
    char *digits = w;
    size_t f = first;
    if (f < x->ie) {
        size_t stop = last < x->ie ? last : x->ie;
        w = copy_short(w, s + f, stop - f);
        f = x->fs;
    }
    if (last > x->fs && last > f)
        w = copy_short(w, s + f, last - f);
    size_t nd = (size_t)(w - digits);
    if (!x->is_int && overflows(digits, nd, e))
        return 1;
    if (e == 0 && int_saturates(x->neg, digits, nd))
        return 1; /* its form would read back saturated */
    if (e != 0) {
        *w++ = 'e';
        if (e < 0)
            *w++ = '-';
        uint64_t a = e < 0 ? (uint64_t)-e : (uint64_t)e; /* at most CANON_EXP_MAX */
        if (a < 10) {
            *w++ = (char)('0' + a);
        } else {
            char tmp[20];
            char *p = u64_digits(a, tmp + sizeof tmp);
            w = copy_short(w, p, (size_t)(tmp + sizeof tmp - p));
        }
    }
    c->out->len += (size_t)(w - w0);
    return 0;
}

/*
 * The usual array element, written straight through: ["-"] int ["." frac] of at most 40
 * bytes, with at most 18 integer digits (so it can neither saturate nor overflow), and
 * then ',', ']', '}' or whitespace. Gives the same form as put_number. 0 written; -2 when
 * the number is not of that shape (nothing written: the general path takes it).
 */
static int fast_number(struct canon *c, size_t i, size_t *end)
{
    const char *s = c->s;
    size_t lim = c->len - i > 40 ? i + 40 : c->len, j = i;
    char *w0 = room(c, 48);
    if (w0 == NULL)
        return -2;
    char *w = w0;
    if (s[j] == '-')
        *w++ = s[j++];
    char *digits = w;
    if (j < lim && s[j] == '0') {
        j++;
    } else {
        while (j < lim && is_digit(s[j]))
            *w++ = s[j++];
        if (w == digits || w - digits > 18)
            return -2;
    }
    size_t nfrac = 0;
    if (j < lim && s[j] == '.') {
        size_t fs = ++j;
        if (w == digits) /* zeros after "0." are not significant */
            while (j < lim && s[j] == '0')
                j++;
        while (j < lim && is_digit(s[j]))
            *w++ = s[j++];
        nfrac = j - fs;
        if (nfrac == 0)
            return -2;
    }
    if (j >= lim || (s[j] != ',' && s[j] != ']' && s[j] != '}' && !is_ws((unsigned char)s[j])))
        return -2; /* the end, an exponent, a longer number, or something json-c refuses */
    int e = -(int)nfrac;
    while (w > digits && w[-1] == '0') {
        w--;
        e++;
    }
    if (w == digits) { /* any zero, -0 included */
        w = w0;
        *w++ = '0';
    } else if (e != 0) {
        *w++ = 'e';
        if (e < 0) {
            *w++ = '-';
            e = -e;
        }
        if (e >= 10)
            *w++ = (char)('0' + e / 10);
        *w++ = (char)('0' + e % 10);
    }
    c->out->len += (size_t)(w - w0);
    *end = j;
    return 0;
}

static int read_word(struct canon *c, size_t i, const char *word, enum jerr kind, size_t *end)
{
    size_t k = 0;
    for (; word[k] != '\0'; k++)
        if (at(c, i + k) != (unsigned char)word[k])
            return fail_at(c, kind, i + k);
    *end = i + k;
    return 0;
}

/*
 * The number at i, as json-c takes it: its tokener's lexeme, then (inside a container) the
 * byte after it must be one json-c lets end a number, then "-" before "Infinity" is
 * -Infinity, then the text must convert. A lexeme off the RFC 8259 grammar is lenient.
 */
static int read_number(struct canon *c, size_t i, int depth, int emit, size_t *end)
{
    const char *s = c->s;
    struct num x;
    size_t k = rfc_number(s, i, c->len, &x);
    int strict = k != 0 && (k == c->len || !is_num_char(s[k]));
    int valid = strict;
    if (!strict) {
        int dbl;
        k = jc_number_end(s, i, c->len, &dbl);
        valid = jc_number_valid(s, i, k, dbl);
        strict = valid && rfc_number(s, i, k, &x) == k;
    }
    int t = at(c, k);
    if (depth > 0 && t != ',' && t != ']' && t != '}' && t != '/' && t != 'I' && t != 'i' &&
        !is_ws(t))
        return fail_at(c, J_NUMBER, k);
    if (k == i + 1 && s[i] == '-' && (t == 'I' || t == 'i')) {
        if (read_word(c, k, "Infinity", J_UNEXPECTED, end) != 0)
            return -1;
        c->lenient = 1;
        return 1;
    }
    if (!valid)
        return fail_at(c, J_NUMBER, k);
    *end = k;
    if (!strict) {
        c->lenient = 1;
        return 1;
    }
    return emit ? put_number(c, s, &x) : 0;
}

/* ---- containers -------------------------------------------------------------------- */

static int read_value(struct canon *c, size_t i, int depth, int emit, size_t *end);

static enum pc_canon_type type_at(const struct canon *c, size_t i)
{
    switch (at(c, i)) {
    case '{':
        return PC_CANON_OBJECT;
    case '[':
        return PC_CANON_ARRAY;
    case '"':
        return PC_CANON_STRING;
    case 't':
    case 'f':
        return PC_CANON_BOOL;
    case 'n':
        return PC_CANON_NULL;
    default:
        return PC_CANON_NUMBER;
    }
}

/*
 * An array. With each (the hook asked for the elements one by one, emit set), no brackets
 * or commas are written: each element's canonical text is appended to out and shown to
 * hook->element with its exactness, and the array itself counts as exact.
 */
static int read_array(struct canon *c, size_t i, int depth, int emit, int each, size_t *end)
{
    int inexact = 0, frame = emit && !each; /* brackets and commas */
    if (frame)
        put(c, "[", 1);
    size_t j = skip_ws(c, i + 1);
    if (at(c, j) != ']') {
        for (int first = 1;; first = 0) {
            if (depth >= CANON_DEPTH - 1)
                return fail_at(c, J_DEPTH, j);
            if (frame && !first)
                put_char(c, ',');
            size_t ve, text = c->out->len;
            int ch = at(c, j), v;
            if (ch == '-' || (ch >= '0' && ch <= '9')) /* the usual element: straight there */
                v = emit && fast_number(c, j, &ve) == 0 ? 0
                                                        : read_number(c, j, depth + 1, emit, &ve);
            else
                v = read_value(c, j, depth + 1, emit, &ve);
            if (v < 0)
                return -1;
            if (each)
                c->hook->element(c->hook->arg, j, ve - j, text, c->out->len - text,
                                 v || c->broken ? PC_CANON_INEXACT : PC_CANON_OK);
            else
                inexact |= v;
            if (frame && c->stage.len >= CANON_CHUNK)
                flush(c);
            j = skip_ws(c, ve);
            int t = at(c, j);
            if (t == ']')
                break;
            if (t != ',')
                return fail_at(c, J_ARRAY, j);
            j = skip_ws(c, j + 1);
            if (at(c, j) == ']') /* strict mode: no trailing comma */
                return fail_at(c, J_UNEXPECTED, j);
        }
    }
    if (frame)
        put(c, "]", 1);
    *end = j + 1;
    return inexact;
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int r = memcmp(a, b, al < bl ? al : bl);
    return r != 0 ? r : (al > bl) - (al < bl);
}

static int sort_cmp(const void *pa, const void *pb)
{
    const struct sort_ent *a = pa, *b = pb;
    int r = name_cmp(a->name, a->len, b->name, b->len);
    return r != 0 ? r : (a->pos > b->pos) - (a->pos < b->pos);
}

/*
 * Ends an object being written at out0 with members m[m0..nm): as written when the names
 * already ascend (the usual case, nothing moves), else rebuilt in name order keeping the
 * last member of each name. Returns 1 when a kept member is not exact.
 */
static int close_object(struct canon *c, size_t out0, size_t m0, size_t names0)
{
    size_t k = c->nm - m0;
    struct member *m = k > 0 ? c->m + m0 : NULL;
    const char *names = c->names.data;
    int inexact = 0, sorted = 1;
    for (size_t a = 1; a < k && sorted; a++)
        sorted = name_cmp(names + m[a - 1].name, m[a - 1].name_len, names + m[a].name,
                          m[a].name_len) < 0;
    if (c->broken) {
        inexact = 1;
    } else if (sorted) {
        for (size_t a = 0; a < k; a++)
            inexact |= m[a].inexact;
        put(c, "}", 1);
    } else {
        if (k > c->sortcap) {
            struct sort_ent *p = realloc(c->sort, k * sizeof *p);
            if (p == NULL) {
                c->broken = 1;
                goto out;
            }
            c->sort = p;
            c->sortcap = k;
        }
        for (size_t a = 0; a < k; a++)
            c->sort[a] = (struct sort_ent){names + m[a].name, m[a].name_len, a};
        qsort(c->sort, k, sizeof *c->sort, sort_cmp);
        struct pc_buf *sb = &c->scratch;
        sb->len = 0;
        int rc = pc_buf_append_char(sb, '{');
        for (size_t a = 0, kept = 0; a < k && rc == 0; a++) {
            if (a + 1 < k && name_cmp(c->sort[a].name, c->sort[a].len, c->sort[a + 1].name,
                                      c->sort[a + 1].len) == 0) {
                /* A name given twice is read two ways (TF Serving's rapidjson takes the
                 * first, json-c and Python the last): no exact form. */
                inexact = 1;
                continue;
            }
            const struct member *x = &m[c->sort[a].pos];
            if (kept++ > 0)
                rc = pc_buf_append_char(sb, ',');
            if (rc == 0)
                rc = pc_buf_append(sb, c->out->data + x->text, x->text_len);
            inexact |= x->inexact;
        }
        if (rc == 0)
            rc = pc_buf_append_char(sb, '}');
        if (rc != 0) {
            c->broken = 1;
            goto out;
        }
        c->out->len = out0;
        put(c, sb->data, sb->len);
    }
out:
    c->nm = m0;
    c->names.len = names0;
    c->open_objects--;
    return inexact || c->broken;
}

/* Decoded name at names[name..], cut at its first NUL as json-c's C string keys are. */
static size_t name_length(const struct canon *c, size_t name)
{
    size_t n = c->names.len - name;
    const char *nul = memchr(c->names.data + name, '\0', n);
    return nul != NULL ? (size_t)(nul - (c->names.data + name)) : n;
}

static int push_member(struct canon *c, const struct member *x)
{
    if (c->nm == c->mcap) {
        size_t cap = c->mcap ? 2 * c->mcap : 16;
        struct member *p = realloc(c->m, cap * sizeof *p);
        if (p == NULL)
            return -1;
        c->m = p;
        c->mcap = cap;
    }
    c->m[c->nm++] = *x;
    return 0;
}

/*
 * An object. Written (emit): members go out in text order, each recorded, and close_object
 * sorts them. At the root of pc_canon_scan the hook sees each member instead, and only the
 * values it asks for are written.
 */
static int read_object(struct canon *c, size_t i, int depth, int emit, size_t *end)
{
    int hook = depth == 0 && c->hook != NULL && !emit;
    size_t out0 = 0, m0 = c->nm, names0 = c->names.len;
    if (emit) {
        out0 = c->out->len;
        put(c, "{", 1);
        c->open_objects++;
    }
    int keep_names = emit || hook;
    if (keep_names && pc_buf_reserve(&c->names, 64) != 0)
        c->broken = 1;
    size_t j = skip_ws(c, i + 1);
    if (at(c, j) != '}') {
        for (;;) {
            int q = at(c, j);
            size_t j0 = j;
            if (q != '"' && q != '\'')
                return fail_at(c, J_KEY_NAME, j);
            if (q == '\'')
                c->lenient = 1;
            size_t ke, name = c->names.len, name_len = 0;
            if (read_string(c, j, keep_names ? S_DECODE : S_CHECK, &c->names, &ke) < 0)
                return -1;
            if (keep_names && !c->broken)
                name_len = name_length(c, name);
            j = skip_ws(c, ke);
            if (at(c, j) != ':')
                return fail_at(c, J_KEY_SEP, j);
            j = skip_ws(c, j + 1);
            if (depth >= CANON_DEPTH - 1)
                return fail_at(c, J_DEPTH, j);

            int v_emit = emit, each = 0;
            if (hook) {
                const char *nm = c->broken ? "" : c->names.data + name;
                int want = c->hook->member_at != NULL
                               ? c->hook->member_at(c->hook->arg, nm, name_len, j0, ke - j0)
                               : c->hook->member(c->hook->arg, nm, name_len);
                v_emit = want == 1;
                each = want == PC_CANON_EACH && at(c, j) == '[' && c->hook->element != NULL &&
                       c->out != &c->stage; /* texts are shown by offset in out->buf */
            }
            struct member x = {0, 0, name, name_len, 0};
            if (emit) {
                if (c->nm > m0)
                    put(c, ",", 1);
                x.text = c->out->len;
                if (!c->broken) {
                    /* the name is copied out first: out and names are different buffers */
                    x.inexact = has_replacement_char(c->names.data + name, name_len);
                    put(c, "\"", 1);
                    put_escaped(c, c->names.data + name, name_len);
                    put(c, "\":", 2);
                }
            }
            size_t ve;
            int v = each ? read_array(c, j, depth + 1, 1, 1, &ve)
                         : read_value(c, j, depth + 1, v_emit, &ve);
            if (v < 0)
                return -1;
            if (emit) {
                x.text_len = c->out->len - x.text;
                x.inexact |= v;
                if (push_member(c, &x) != 0)
                    c->broken = 1;
            }
            if (hook) {
                if (v_emit)
                    flush(c);
                c->hook->member_end(c->hook->arg, j, ve - j, type_at(c, j),
                                    v_emit && (v || c->broken) ? PC_CANON_INEXACT : PC_CANON_OK);
                c->names.len = name;
            }
            j = skip_ws(c, ve);
            int t = at(c, j);
            if (t == '}')
                break;
            if (t != ',')
                return fail_at(c, J_VALUE_SEP, j);
            j = skip_ws(c, j + 1);
            if (at(c, j) == '}') /* strict mode: no trailing comma */
                return fail_at(c, J_UNEXPECTED, j);
        }
    }
    *end = j + 1;
    if (!emit) {
        c->names.len = names0;
        return 0;
    }
    return close_object(c, out0, m0, names0);
}

/*
 * The value at i (whitespace already skipped), depth levels deep. -1 refused (c->err set);
 * else 1 when a written value is not exact (or lenient), 0 otherwise.
 */
static int read_value(struct canon *c, size_t i, int depth, int emit, size_t *end)
{
    int rc;
    switch (at(c, i)) {
    case '{':
        return read_object(c, i, depth, emit, end);
    case '[':
        return read_array(c, i, depth, emit, 0, end);
    case '"':
        return read_string(c, i, emit ? S_EMIT : S_CHECK, NULL, end);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return read_number(c, i, depth, emit, end);
    case 't':
        rc = read_word(c, i, "true", J_BOOL, end);
        if (rc == 0 && emit)
            put(c, "true", 4);
        return rc;
    case 'f':
        rc = read_word(c, i, "false", J_BOOL, end);
        if (rc == 0 && emit)
            put(c, "false", 5);
        return rc;
    case 'n':
        rc = read_word(c, i, "null", J_NULL, end);
        if (rc == 0 && emit)
            put(c, "null", 4);
        return rc;
    case 'N': /* json-c's NaN and Infinity carry no text: never exact */
        if (read_word(c, i, "NaN", J_NULL, end) != 0)
            return -1;
        c->lenient = 1;
        return 1;
    case 'I':
        if (read_word(c, i, "Infinity", J_UNEXPECTED, end) != 0)
            return -1;
        c->lenient = 1;
        return 1;
    case 'T':
    case 'F': /* strict mode: lowercase only */
        return fail_at(c, J_BOOL, i);
    default: /* a single quote, 'i', a NUL, the end, ... */
        return fail_at(c, J_UNEXPECTED, i);
    }
}

/* ---- entry points ------------------------------------------------------------------ */

/*
 * Reads the whole text, the root written when emit. After the value only whitespace may
 * follow: another byte is json-c's "unexpected character"; a NUL (where json-c stops with
 * success) is cachekey's "trailing data".
 */
static enum pc_canon_rc run(struct canon *c, const struct pc_canon_out *out, int emit,
                            struct pc_canon_info *info)
{
    size_t out0 = 0;
    if (out != NULL && out->buf != NULL) {
        c->out = out->buf;
        out0 = out->buf->len;
    } else {
        c->out = &c->stage;
        if (out != NULL) {
            c->write = out->write;
            c->arg = out->arg;
        }
    }
    size_t i = skip_ws(c, 0), end = 0;
    int v = read_value(c, i, 0, emit, &end);
    if (v >= 0) {
        size_t p = skip_ws(c, end);
        if (p < c->len) {
            c->err = c->s[p] == '\0' ? J_TRAILING : J_UNEXPECTED;
            c->err_off = p;
            v = -1;
        }
    }
    enum pc_canon_rc rc;
    if (v < 0) {
        rc = PC_CANON_INVALID;
    } else if (c->lenient) {
        rc = PC_CANON_LENIENT;
    } else {
        if (emit && v == 0)
            flush(c);
        rc = (emit && v != 0) || c->broken ? PC_CANON_INEXACT : PC_CANON_OK;
    }
    if (out != NULL && out->buf != NULL) {
        if (rc != PC_CANON_OK)
            out->buf->len = out0;
        if (out->buf->data != NULL)
            out->buf->data[out->buf->len] = '\0';
    }
    if (info != NULL) {
        info->root = type_at(c, i);
        info->error = rc == PC_CANON_INVALID ? jerr_text[c->err] : NULL;
        info->error_off = rc == PC_CANON_INVALID ? c->err_off : 0;
    }
    return rc;
}

enum pc_canon_rc pc_canon_json(const char *s, size_t len, const struct pc_canon_out *out,
                               struct pc_canon_info *info)
{
    struct canon c;
    canon_init(&c, s, len);
    enum pc_canon_rc rc = run(&c, out, 1, info);
    canon_release(&c);
    return rc;
}

enum pc_canon_rc pc_canon_scan(const char *s, size_t len, const struct pc_canon_hook *hook,
                               const struct pc_canon_out *out, struct pc_canon_info *info)
{
    struct canon c;
    canon_init(&c, s, len);
    c.hook = hook;
    enum pc_canon_rc rc = run(&c, out, 0, info);
    canon_release(&c);
    return rc;
}

enum pc_canon_rc pc_canon_decode_string(const char *s, size_t len, struct pc_buf *out)
{
    struct canon c;
    canon_init(&c, s, len);
    size_t out0 = out->len, end = 0;
    enum pc_canon_rc rc = PC_CANON_INVALID;
    if (pc_buf_reserve(out, len) != 0) /* decoded is never longer; data is set even for "" */
        rc = PC_CANON_INEXACT;
    else if (len > 0 && s[0] == '"' && read_string(&c, 0, S_DECODE, out, &end) == 0 && end == len)
        rc = c.broken || has_replacement_char(out->data + out0, out->len - out0) ? PC_CANON_INEXACT
                                                                                 : PC_CANON_OK;
    canon_release(&c);
    return rc;
}

enum pc_canon_rc pc_canon_put_string(struct pc_buf *out, const char *s, size_t n)
{
    if (has_replacement_char(s, n))
        return PC_CANON_INEXACT;
    struct canon c;
    canon_init(&c, s, n);
    c.out = out;
    size_t out0 = out->len;
    put(&c, "\"", 1);
    put_escaped(&c, s, n);
    put(&c, "\"", 1);
    enum pc_canon_rc rc = PC_CANON_OK;
    if (c.broken) {
        out->len = out0;
        rc = PC_CANON_INEXACT;
    }
    if (out->data != NULL)
        out->data[out->len] = '\0';
    canon_release(&c);
    return rc;
}
