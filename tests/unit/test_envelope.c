/* Unit tests of envelope: round trips (PC4 with the key tag, PC3 with headers), every
 * malformed value is refused, PC1 and PC2 still read. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "predcache/envelope.h"

/* Encodes env into a fresh buffer the caller releases; asserts success. */
static struct pc_buf encode_ok(const struct pc_envelope *env)
{
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_envelope_encode(env, &b), 0);
    return b;
}

/* Decodes data[0..len) with a 64-byte type buffer and asserts it is refused. */
static void assert_rejected_len(const char *data, size_t len)
{
    struct pc_envelope env = {.status = 7};
    char ctype[64];
    assert_int_equal(pc_envelope_decode(data, len, &env, ctype, sizeof ctype), -1);
    assert_int_equal(env.status, 7); /* untouched on failure */
}

static void assert_rejected(const char *data)
{
    assert_rejected_len(data, strlen(data));
}

static void test_round_trip_binary(void **state)
{
    (void)state;
    static const char body[] = "\0line1\nline2\r\n\0\xff PC1\n200\n";
    const size_t body_len = sizeof body - 1;
    struct pc_envelope in = {.status = 200,
                             .stored_at_ms = 1700000000123,
                             .content_type = "application/json; charset=utf-8",
                             .body = body,
                             .body_len = body_len};
    struct pc_buf b = encode_ok(&in);
    const char head[] = "PC3\n200\n1700000000123\n0\n0\napplication/json; charset=utf-8\n";
    assert_int_equal(b.len, sizeof head - 1 + body_len);
    assert_memory_equal(b.data, head, sizeof head - 1);

    struct pc_envelope out;
    char ctype[64];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.status, 200);
    assert_int_equal(out.stored_at_ms, 1700000000123);
    assert_string_equal(out.content_type, "application/json; charset=utf-8");
    assert_ptr_equal(out.content_type, ctype);
    assert_int_equal(out.body_len, body_len);
    assert_memory_equal(out.body, body, body_len);
    assert_ptr_equal(out.body, b.data + (sizeof head - 1)); /* borrowed, not copied */
    pc_buf_release(&b);
}

static void test_empty_body_and_type(void **state)
{
    (void)state;
    struct pc_envelope in = {.status = 599, .stored_at_ms = 0, .content_type = "", .body = NULL};
    struct pc_buf b = encode_ok(&in);
    assert_int_equal(b.len, strlen("PC3\n599\n0\n0\n0\n\n"));
    assert_memory_equal(b.data, "PC3\n599\n0\n0\n0\n\n", b.len);
    struct pc_envelope out;
    char ctype[1];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.status, 599);
    assert_int_equal(out.stored_at_ms, 0);
    assert_string_equal(out.content_type, "");
    assert_int_equal(out.body_len, 0);
    pc_buf_release(&b);

    in.content_type = NULL; /* NULL type is the empty type */
    b = encode_ok(&in);
    assert_memory_equal(b.data, "PC3\n599\n0\n0\n0\n\n", b.len);
    pc_buf_release(&b);
}

static void test_encode_appends(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_buf_append_str(&b, "xx"), 0);
    struct pc_envelope in = {
        .status = 100, .stored_at_ms = INT64_MAX, .content_type = "t", .body = "B", .body_len = 1};
    assert_int_equal(pc_envelope_encode(&in, &b), 0);
    assert_string_equal(b.data, "xxPC3\n100\n9223372036854775807\n0\n0\nt\nB");
    struct pc_envelope out;
    char ctype[2];
    assert_int_equal(pc_envelope_decode(b.data + 2, b.len - 2, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.stored_at_ms, INT64_MAX);
    pc_buf_release(&b);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_buf_append_str(&b, "keep"), 0);
    struct pc_envelope bad[] = {
        {.status = 99, .content_type = "t"},
        {.status = 600, .content_type = "t"},
        {.status = -200, .content_type = "t"},
        {.status = 200, .content_type = "text/plain\nX-Evil: 1"},
        {.status = 200, .content_type = "text/plain\r"},
        {.status = 200, .content_type = "\n"},
        {.status = 200, .stored_at_ms = -1, .content_type = "t"},
        {.status = 200, .content_type = "t", .body = NULL, .body_len = 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pc_envelope_encode(&bad[i], &b), -1);
        assert_string_equal(b.data, "keep"); /* nothing half-written */
        assert_int_equal(b.len, 4);
    }
    pc_buf_release(&b);
}

static void test_decode_rejects_header(void **state)
{
    (void)state;
    assert_rejected("");
    assert_rejected("PC1");
    assert_rejected("PC1\n");
    assert_rejected("PC2\n200\n1\nt\nbody");
    assert_rejected("PC0\n200\n1\nt\nbody");
    assert_rejected("pc1\n200\n1\nt\nbody");
    assert_rejected("XPC1\n200\n1\nt\nbody");
    assert_rejected("PC1\r\n200\n1\nt\nbody");
    assert_rejected_len(NULL, 0);
}

static void test_decode_rejects_status(void **state)
{
    (void)state;
    assert_rejected("PC1\n20\n1\nt\nbody");
    assert_rejected("PC1\n2000\n1\nt\nbody");
    assert_rejected("PC1\n600\n1\nt\nbody");
    assert_rejected("PC1\n099\n1\nt\nbody");
    assert_rejected("PC1\n99\n1\nt\nbody");
    assert_rejected("PC1\n2x0\n1\nt\nbody");
    assert_rejected("PC1\n-20\n1\nt\nbody");
    assert_rejected("PC1\n+20\n1\nt\nbody");
    assert_rejected("PC1\n 200\n1\nt\nbody");
    assert_rejected("PC1\n200 \n1\nt\nbody");
    assert_rejected("PC1\n\n1\nt\nbody");
    assert_rejected("PC1\n200");
}

static void test_decode_rejects_time(void **state)
{
    (void)state;
    assert_rejected("PC1\n200\n\nt\nbody");
    assert_rejected("PC1\n200\n-1\nt\nbody");
    assert_rejected("PC1\n200\n+1\nt\nbody");
    assert_rejected("PC1\n200\n12a\nt\nbody");
    assert_rejected("PC1\n200\n01\nt\nbody");
    assert_rejected("PC1\n200\n1 \nt\nbody");
    assert_rejected("PC1\n200\n12345678901234567890\nt\nbody"); /* 20 digits */
    assert_rejected("PC1\n200\n9223372036854775808\nt\nbody");  /* INT64_MAX + 1 */
    assert_rejected("PC1\n200\n9999999999999999999\nt\nbody");
    assert_rejected("PC1\n200\n17");
    assert_rejected("PC1\n200\n17\r\nt\nbody");
}

static void test_decode_rejects_type(void **state)
{
    (void)state;
    assert_rejected("PC1\n200\n1\ntext/plain");           /* no newline after the type */
    assert_rejected("PC1\n200\n1\ntext/plain\r\nbody");   /* CR in the type */
    assert_rejected_len("PC1\n200\n1\nte\0xt\nbody", 20); /* NUL in the type */

    char longtype[200];
    memset(longtype, 'a', sizeof longtype);
    memcpy(longtype, "PC1\n200\n1\n", 10);
    longtype[10 + 64] = '\n'; /* a 64-byte type: no room for its NUL in 64 bytes */
    assert_rejected_len(longtype, 10 + 64 + 1);

    struct pc_envelope env;
    char ctype[65];
    assert_int_equal(pc_envelope_decode(longtype, 10 + 64 + 1, &env, ctype, sizeof ctype), 0);
    assert_int_equal(strlen(env.content_type), 64);
    assert_int_equal(env.body_len, 0);
    assert_int_equal(pc_envelope_decode(longtype, 10 + 64 + 1, &env, NULL, 0), -1);
}

/* Every strict prefix of a valid envelope up to the type's newline is refused. */
static void test_decode_rejects_truncation(void **state)
{
    (void)state;
    const char full[] = "PC1\n200\n1700000000000\ntext/plain\nhello";
    size_t head = strlen("PC1\n200\n1700000000000\ntext/plain\n");
    for (size_t n = 0; n < head; n++) {
        char *copy = malloc(n ? n : 1); /* exact size, so valgrind sees any over-read */
        assert_non_null(copy);
        memcpy(copy, full, n);
        assert_rejected_len(copy, n);
        free(copy);
    }
    struct pc_envelope env;
    char ctype[32];
    for (size_t n = head; n <= sizeof full - 1; n++) {
        assert_int_equal(pc_envelope_decode(full, n, &env, ctype, sizeof ctype), 0);
        assert_int_equal(env.body_len, n - head);
    }
}

/* The entry's own TTL (a client's X-Predcache-TTL), 0 when none is recorded; PC1 and PC2,
 * written before PC3, carry none (the route's) and one. */
static void test_ttl_round_trip(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    struct pc_envelope in = {.status = 201,
                             .stored_at_ms = 5,
                             .ttl_s = 2147483647,
                             .content_type = "t",
                             .body = "xy",
                             .body_len = 2};
    assert_int_equal(pc_envelope_encode(&in, &b), 0);
    assert_int_equal(b.len, strlen("PC3\n201\n5\n2147483647\n0\nt\nxy"));
    assert_memory_equal(b.data, "PC3\n201\n5\n2147483647\n0\nt\nxy", b.len);
    struct pc_envelope out;
    char ctype[16];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.status, 201);
    assert_int_equal(out.stored_at_ms, 5);
    assert_int_equal(out.ttl_s, 2147483647);
    assert_string_equal(out.content_type, "t");
    assert_memory_equal(out.body, "xy", 2);
    /* PC1 decodes with ttl_s 0: "the route's". */
    assert_int_equal(pc_envelope_decode("PC1\n200\n1\nt\nb", 13, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.ttl_s, 0);
    assert_int_equal(out.n_headers, 0);
    assert_int_equal(pc_envelope_decode("PC2\n200\n1\n60\nt\nb", 16, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.ttl_s, 60);
    assert_int_equal(out.n_headers, 0);
    assert_null(out.headers[0].name);
    assert_memory_equal(out.body, "b", 1);
    in.ttl_s = -1;
    assert_int_equal(pc_envelope_encode(&in, &b), -1);
    pc_buf_release(&b);
}

static void test_decode_rejects_ttl(void **state)
{
    (void)state;
    assert_rejected("PC2\n200\n1\n0\nt\nbody");
    assert_rejected("PC2\n200\n1\n07\nt\nbody");
    assert_rejected("PC2\n200\n1\n-7\nt\nbody");
    assert_rejected("PC2\n200\n1\n2147483648\nt\nbody");
    assert_rejected("PC2\n200\n1\n12345678901\nt\nbody");
    assert_rejected("PC2\n200\n1\n60");
    assert_rejected("PC2\n200\n1\n60\n");
}

/* Asserts that two decoded envelopes say the same thing, field by field. */
static void assert_env_equal(const struct pc_envelope *a, const struct pc_envelope *b)
{
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->stored_at_ms, b->stored_at_ms);
    assert_int_equal(a->ttl_s, b->ttl_s);
    assert_string_equal(a->content_type, b->content_type);
    assert_int_equal(a->n_headers, b->n_headers);
    for (size_t i = 0; i < a->n_headers; i++) {
        assert_string_equal(a->headers[i].name, b->headers[i].name);
        assert_string_equal(a->headers[i].value, b->headers[i].value);
    }
    assert_int_equal(a->body_len, b->body_len);
    if (a->body_len > 0)
        assert_memory_equal(a->body, b->body, a->body_len);
}

/* Encodes in, checks the bytes against want (head only: want ends before the body), then
 * decodes with a PC_ENV_SCRATCH buffer and checks every field and where it points. */
static void round_trip(const struct pc_envelope *in, const char *want)
{
    struct pc_buf b = encode_ok(in);
    size_t head = strlen(want);
    assert_int_equal(b.len, head + in->body_len);
    assert_memory_equal(b.data, want, head);

    struct pc_envelope out;
    memset(&out, 0x5a, sizeof out);
    char scratch[PC_ENV_SCRATCH];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, scratch, sizeof scratch), 0);
    struct pc_envelope norm = *in;
    if (norm.content_type == NULL)
        norm.content_type = "";
    assert_env_equal(&out, &norm);
    assert_ptr_equal(out.content_type, scratch);
    for (size_t i = 0; i < out.n_headers; i++) {
        assert_true(out.headers[i].name > scratch &&
                    out.headers[i].name < scratch + sizeof scratch);
        assert_true(out.headers[i].value > out.headers[i].name &&
                    out.headers[i].value < scratch + sizeof scratch);
    }
    for (size_t i = out.n_headers; i < PC_ENV_MAX_HEADERS; i++) {
        assert_null(out.headers[i].name);
        assert_null(out.headers[i].value);
    }
    assert_ptr_equal(out.body, b.data + head);
    pc_buf_release(&b);
}

/* PC3: 0, 1 and PC_ENV_MAX_HEADERS replayed headers, in order, values as given. */
static void test_headers_round_trip(void **state)
{
    (void)state;
    struct pc_envelope in = {.status = 200,
                             .stored_at_ms = 1700000000123,
                             .ttl_s = 0,
                             .content_type = "application/octet-stream",
                             .body = "{\"id\":\"1\"}\x01\x02",
                             .body_len = 12};
    round_trip(&in, "PC3\n200\n1700000000123\n0\n0\napplication/octet-stream\n");

    in.headers[0] = (struct pc_env_header){"Inference-Header-Content-Length", "10"};
    in.n_headers = 1;
    in.ttl_s = 30;
    round_trip(&in, "PC3\n200\n1700000000123\n30\n1\napplication/octet-stream\n"
                    "Inference-Header-Content-Length:10\n");

    static const struct pc_env_header eight[PC_ENV_MAX_HEADERS] = {
        {"Inference-Header-Content-Length", "10"},
        {"Content-Encoding", "gzip"},
        {"X-Empty", ""},
        {"x", " leading and trailing spaces "},
        {"!#$%&'*+-.^_`|~09azAZ", "a:b:c"},
        {"Content-Language", "en, de"},
        {"X-Binary", "\t\x01\x7f\xc3\xa9\xff"},
        {"x", "given twice"},
    };
    memcpy(in.headers, eight, sizeof eight);
    in.n_headers = PC_ENV_MAX_HEADERS;
    in.content_type = NULL;
    in.body = NULL;
    in.body_len = 0;
    round_trip(&in, "PC3\n200\n1700000000123\n30\n8\n\n"
                    "Inference-Header-Content-Length:10\n"
                    "Content-Encoding:gzip\n"
                    "X-Empty:\n"
                    "x: leading and trailing spaces \n"
                    "!#$%&'*+-.^_`|~09azAZ:a:b:c\n"
                    "Content-Language:en, de\n"
                    "X-Binary:\t\x01\x7f\xc3\xa9\xff\n"
                    "x:given twice\n");
}

/* Builds a struct with n headers whose text (type included) takes exactly `text` bytes of
 * scratch: the names are "h<i>", the values fill the rest. Uses vals[n][...]. */
static void fill_text(struct pc_envelope *env, size_t n, size_t text, char names[][8],
                      char vals[][PC_ENV_SCRATCH])
{
    size_t used = strlen(env->content_type ? env->content_type : "") + 1;
    env->n_headers = n;
    for (size_t i = 0; i < n; i++) {
        names[i][0] = 'h';
        names[i][1] = (char)('0' + i); /* i < PC_ENV_MAX_HEADERS <= 10 */
        names[i][2] = '\0';
        used += strlen(names[i]) + 2; /* name, its NUL, the value's NUL */
    }
    assert_true(text >= used);
    size_t rest = text - used;
    for (size_t i = 0; i < n; i++) {
        size_t k = i + 1 == n ? rest : rest / n;
        memset(vals[i], 'v', k);
        vals[i][k] = '\0';
        rest -= k;
        env->headers[i] = (struct pc_env_header){names[i], vals[i]};
    }
}

static void test_encode_rejects_headers(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_buf_append_str(&b, "keep"), 0);
    char name64[PC_ENV_MAX_NAME + 2];
    memset(name64, 'n', sizeof name64);
    name64[PC_ENV_MAX_NAME] = '\0';
    char name65[PC_ENV_MAX_NAME + 2];
    memset(name65, 'n', sizeof name65);
    name65[PC_ENV_MAX_NAME + 1] = '\0';
    const char *const bad_names[] = {
        "",    "Content Type", "X:Y", "X\n", "X\r", "é",   "X\x7f", "(x)",  "a/b",  "a\"b",
        "a@b", "a,b",          "a;b", "a=b", "a?b", "a[b", "a{b",   "a\\b", "a\tb", name65,
    };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        struct pc_envelope in = {.status = 200, .content_type = "t", .n_headers = 2};
        in.headers[0] = (struct pc_env_header){"Good", "v"};
        in.headers[1] = (struct pc_env_header){bad_names[i], "v"};
        assert_int_equal(pc_envelope_encode(&in, &b), -1);
        assert_string_equal(b.data, "keep");
        in.headers[1].name = name64; /* the longest name is fine */
        assert_int_equal(pc_envelope_encode(&in, &b), 0);
        b.len = 4;
        b.data[4] = '\0';
    }
    static const char *const bad_values[] = {"a\nb", "a\r\nb", "\r", "\n", "x\r"};
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        struct pc_envelope in = {.status = 200, .n_headers = 1};
        in.headers[0] = (struct pc_env_header){"X", bad_values[i]};
        assert_int_equal(pc_envelope_encode(&in, &b), -1);
        assert_string_equal(b.data, "keep");
    }
    struct pc_envelope in = {.status = 200, .n_headers = 1};
    in.headers[0] = (struct pc_env_header){NULL, "v"};
    assert_int_equal(pc_envelope_encode(&in, &b), -1);
    in.headers[0] = (struct pc_env_header){"X", NULL};
    assert_int_equal(pc_envelope_encode(&in, &b), -1);
    in.n_headers = PC_ENV_MAX_HEADERS + 1;
    in.headers[0] = (struct pc_env_header){"X", "v"};
    assert_int_equal(pc_envelope_encode(&in, &b), -1);
    in.n_headers = (size_t)-1;
    assert_int_equal(pc_envelope_encode(&in, &b), -1);
    assert_string_equal(b.data, "keep");
    assert_int_equal(b.len, 4);

    /* The text fits PC_ENV_SCRATCH exactly, or it is refused. */
    static char names[PC_ENV_MAX_HEADERS][8];
    static char vals[PC_ENV_MAX_HEADERS][PC_ENV_SCRATCH];
    for (size_t n = 1; n <= PC_ENV_MAX_HEADERS; n++) {
        struct pc_envelope e = {.status = 200, .content_type = "application/json"};
        fill_text(&e, n, PC_ENV_SCRATCH, names, vals);
        assert_int_equal(pc_envelope_encode(&e, &b), 0);
        struct pc_envelope out;
        char scratch[PC_ENV_SCRATCH];
        assert_int_equal(pc_envelope_decode(b.data + 4, b.len - 4, &out, scratch, sizeof scratch),
                         0);
        assert_env_equal(&out, &e);
        /* one byte short of room: refused */
        assert_int_equal(
            pc_envelope_decode(b.data + 4, b.len - 4, &out, scratch, sizeof scratch - 1), -1);
        b.len = 4;
        b.data[4] = '\0';
        fill_text(&e, n, PC_ENV_SCRATCH + 1, names, vals);
        assert_int_equal(pc_envelope_encode(&e, &b), -1);
        assert_string_equal(b.data, "keep");
    }
    /* A type alone: PC_ENV_SCRATCH - 1 bytes and its NUL fit, one more byte does not. */
    static char type[PC_ENV_SCRATCH + 1];
    memset(type, 't', PC_ENV_SCRATCH);
    type[PC_ENV_SCRATCH] = '\0';
    struct pc_envelope big = {.status = 200, .content_type = type + 1};
    assert_int_equal(pc_envelope_encode(&big, &b), 0);
    b.len = 4;
    b.data[4] = '\0';
    big.content_type = type;
    assert_int_equal(pc_envelope_encode(&big, &b), -1);
    assert_string_equal(b.data, "keep");
    pc_buf_release(&b);
}

/* Decodes data[0..len) into a PC_ENV_SCRATCH buffer and asserts it is refused. */
static void assert_rejected3(const char *data, size_t len)
{
    struct pc_envelope env = {.status = 7, .n_headers = 3};
    char *copy = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
    assert_non_null(copy);
    memcpy(copy, data, len);
    char scratch[PC_ENV_SCRATCH];
    assert_int_equal(pc_envelope_decode(copy, len, &env, scratch, sizeof scratch), -1);
    assert_int_equal(env.status, 7);
    assert_int_equal(env.n_headers, 3);
    free(copy);
}

#define REJECT3(lit) assert_rejected3(lit, sizeof lit - 1)

static void test_decode_rejects_pc3(void **state)
{
    (void)state;
    /* the numbers */
    REJECT3("PC3\n200\n1\n00\n0\nt\nbody");
    REJECT3("PC3\n200\n1\n01\n0\nt\nbody");
    REJECT3("PC3\n200\n1\n-1\n0\nt\nbody");
    REJECT3("PC3\n200\n1\n2147483648\n0\nt\nbody");
    REJECT3("PC3\n200\n1\n\n0\nt\nbody");
    REJECT3("PC3\n200\n1\n0\n9\nt\nbody");
    REJECT3("PC3\n200\n1\n0\n10\nt\nbody");
    REJECT3("PC3\n200\n1\n0\n00\nt\nbody");
    REJECT3("PC3\n200\n1\n0\n01\nt\nX:1\nbody");
    REJECT3("PC3\n200\n1\n0\n-1\nt\nbody");
    REJECT3("PC3\n200\n1\n0\n+1\nt\nX:1\nbody");
    REJECT3("PC3\n200\n1\n0\n\nt\nbody");
    REJECT3("PC3\n200\n1\n0\nx\nt\nbody");
    REJECT3("PC3\n200\n1\n0\n1 \nt\nX:1\nbody");
    REJECT3("PC3\n200\n1\n0\nt\nbody"); /* a PC2-shaped value */
    REJECT3("PC3\n200\n1\nt\nbody");    /* a PC1-shaped value */
    REJECT3("PC3\n099\n1\n0\n0\nt\nbody");
    REJECT3("PC3\n600\n1\n0\n0\nt\nbody");
    REJECT3("PC3\n200\n01\n0\n0\nt\nbody");
    /* missing lines */
    REJECT3("PC3\n200\n1\n0\n1\nt\n");
    REJECT3("PC3\n200\n1\n0\n2\nt\nX:1\n");
    REJECT3("PC3\n200\n1\n0\n2\nt\nX:1\nY:2");
    REJECT3("PC3\n200\n1\n0\n0\nt");
    REJECT3("PC3\n200\n1\n0\n0\n");
    /* bad header lines */
    REJECT3("PC3\n200\n1\n0\n1\nt\n:v\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX \nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX :v\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\n X:v\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX\x01:v\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\n\xc3\xa9:v\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX:v\r\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX:\rv\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX:v\0w\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\nX\0:v\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\n\nbody");
    REJECT3("PC3\n200\n1\n0\n1\nt\r\nX:v\nbody");
    REJECT3("PC3\n200\n1\n0\n0\nt\0\nbody");
    /* a 65-byte name; 64 is fine */
    char v[128];
    memcpy(v, "PC3\n200\n1\n0\n1\nt\n", 16);
    memset(v + 16, 'n', 65);
    memcpy(v + 16 + 65, ":v\nB", 4);
    assert_rejected3(v, 16 + 65 + 4);
    struct pc_envelope env;
    char scratch[PC_ENV_SCRATCH];
    assert_int_equal(pc_envelope_decode(v + 1, 16 + 64 + 4, &env, scratch, sizeof scratch), -1);
    memcpy(v + 1, "PC3\n200\n1\n0\n1\nt\n", 16);
    assert_int_equal(pc_envelope_decode(v + 1, 16 + 64 + 4, &env, scratch, sizeof scratch), 0);
    assert_int_equal(strlen(env.headers[0].name), 64);
    assert_string_equal(env.headers[0].value, "v");
    assert_memory_equal(env.body, "B", 1);
}

/* The text must fit the caller's scratch, and never more than PC_ENV_SCRATCH of it. */
static void test_decode_scratch(void **state)
{
    (void)state;
    static const char v[] = "PC3\n200\n1\n0\n2\nab\nX:12\nYz:\nbody";
    const size_t need = 3 + 2 + 3 + 3 + 1; /* "ab" "X" "12" "Yz" "" with their NULs */
    struct pc_envelope env = {.status = 7};
    char scratch[64];
    for (size_t n = 0; n < need; n++) {
        assert_int_equal(pc_envelope_decode(v, sizeof v - 1, &env, scratch, n), -1);
        assert_int_equal(env.status, 7);
    }
    assert_int_equal(pc_envelope_decode(v, sizeof v - 1, &env, NULL, 64), -1);
    assert_int_equal(pc_envelope_decode(v, sizeof v - 1, &env, scratch, need), 0);
    assert_string_equal(env.content_type, "ab");
    assert_int_equal(env.n_headers, 2);
    assert_string_equal(env.headers[0].name, "X");
    assert_string_equal(env.headers[0].value, "12");
    assert_string_equal(env.headers[1].name, "Yz");
    assert_string_equal(env.headers[1].value, "");
    assert_memory_equal(env.body, "body", 4);

    /* The call sites' char[256] (PC_CFG_STR): a value whose text does not fit is a clean
     * refusal, one that fits reads. */
    static char names[PC_ENV_MAX_HEADERS][8];
    static char vals[PC_ENV_MAX_HEADERS][PC_ENV_SCRATCH];
    struct pc_envelope in = {.status = 200, .content_type = "application/json"};
    struct pc_buf b;
    pc_buf_init(&b);
    char small[256];
    for (size_t text = 256; text <= 257; text++) {
        fill_text(&in, 3, text, names, vals);
        assert_int_equal(pc_envelope_encode(&in, &b), 0);
        struct pc_envelope out = {.status = 7};
        assert_int_equal(pc_envelope_decode(b.data, b.len, &out, small, sizeof small),
                         text == 256 ? 0 : -1);
        assert_int_equal(out.status, text == 256 ? 200 : 7);
        b.len = 0;
    }

    /* A bigger buffer than PC_ENV_SCRATCH still holds no more than encode writes: a PC1
     * type of PC_ENV_SCRATCH bytes is refused whatever the buffer. */
    char *big = malloc(PC_ENV_SCRATCH + 32);
    assert_non_null(big);
    memcpy(big, "PC1\n200\n1\n", 10);
    memset(big + 10, 't', PC_ENV_SCRATCH);
    big[10 + PC_ENV_SCRATCH] = '\n';
    char *huge = malloc(2 * PC_ENV_SCRATCH);
    assert_non_null(huge);
    assert_int_equal(
        pc_envelope_decode(big, 10 + PC_ENV_SCRATCH + 1, &env, huge, 2 * PC_ENV_SCRATCH), -1);
    big[10 + PC_ENV_SCRATCH - 1] = '\n';
    assert_int_equal(pc_envelope_decode(big, 10 + PC_ENV_SCRATCH, &env, huge, 2 * PC_ENV_SCRATCH),
                     0);
    assert_int_equal(strlen(env.content_type), PC_ENV_SCRATCH - 1);
    free(huge);
    free(big);
    pc_buf_release(&b);
}

/*
 * Every prefix of a valid PC3 value: refused while any line is cut, then the same fields with
 * the body cut to what is left. Each prefix is an exact-size copy, so ASan (make asan) and
 * valgrind see any read past len.
 */
static void test_pc3_truncation(void **state)
{
    (void)state;
    struct pc_envelope in = {.status = 203,
                             .stored_at_ms = 1700000000000,
                             .ttl_s = 86400,
                             .content_type = "application/octet-stream"};
    in.headers[0] = (struct pc_env_header){"Inference-Header-Content-Length", "27"};
    in.headers[1] = (struct pc_env_header){"Content-Encoding", "identity"};
    in.headers[2] = (struct pc_env_header){"X-E", ""};
    in.n_headers = 3;
    in.body = "{\"outputs\":[],\"id\":\"abc\"}\n\x00\x01PC3\n";
    in.body_len = 33;
    struct pc_buf b = encode_ok(&in);
    size_t head = b.len - in.body_len;
    for (size_t n = 0; n <= b.len; n++) {
        char *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, b.data, n);
        struct pc_envelope out = {.status = 7};
        char scratch[PC_ENV_SCRATCH];
        int rc = pc_envelope_decode(copy, n, &out, scratch, sizeof scratch);
        if (n < head) {
            assert_int_equal(rc, -1);
            assert_int_equal(out.status, 7);
        } else {
            assert_int_equal(rc, 0);
            struct pc_envelope cut = in;
            cut.body_len = n - head;
            assert_env_equal(&out, &cut);
            assert_ptr_equal(out.body, copy + head);
        }
        free(copy);
    }
    pc_buf_release(&b);
}

/* PC4: the key's tag (FNV-1a 64 vectors), written in 16 lowercase hex digits after the
 * magic, read back; PC3 when there is no tag; a bad tag line refused. */
static void test_key_tag(void **state)
{
    (void)state;
    /* FNV-1a 64 of "" and of "a" (the published vectors) */
    assert_true(pc_envelope_key_tag("", 0) == 0xcbf29ce484222325ULL);
    assert_true(pc_envelope_key_tag("a", 1) == 0xaf63dc4c8601ec8cULL);
    const char *key = "predcache:v2:{00ff}";
    uint64_t tag = pc_envelope_key_tag(key, strlen(key));
    assert_true(tag != pc_envelope_key_tag("predcache:v2:{00fe}", 19));
    struct pc_envelope in = {.key_tag = 0x00000000deadbeefULL,
                             .status = 200,
                             .stored_at_ms = 5,
                             .content_type = "t",
                             .body = "b",
                             .body_len = 1};
    struct pc_buf b = encode_ok(&in);
    const char want[] = "PC4\n00000000deadbeef\n200\n5\n0\n0\nt\nb";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.data, want, sizeof want - 1);
    struct pc_envelope out;
    char ctype[64];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_true(out.key_tag == 0x00000000deadbeefULL);
    assert_int_equal(out.status, 200);
    assert_memory_equal(out.body, "b", 1);
    pc_buf_release(&b);
    in.key_tag = 0; /* no tag: PC3 */
    b = encode_ok(&in);
    assert_memory_equal(b.data, "PC3\n200\n", 8);
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_true(out.key_tag == 0);
    pc_buf_release(&b);
    assert_rejected("PC4\n00000000DEADBEEF\n200\n5\n0\n0\nt\nb");  /* upper case */
    assert_rejected("PC4\n0000000deadbeef\n200\n5\n0\n0\nt\nb");   /* 15 digits */
    assert_rejected("PC4\n000000000deadbeef\n200\n5\n0\n0\nt\nb"); /* 17 digits */
    assert_rejected("PC4\n0000000000000000\n200\n5\n0\n0\nt\nb");  /* the tag 0 */
    assert_rejected("PC4\n00000000deadbeeg\n200\n5\n0\n0\nt\nb");
    assert_rejected("PC4\n00000000deadbeef\n");
    assert_rejected("PC4\n00000000dead");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_binary),
        cmocka_unit_test(test_ttl_round_trip),
        cmocka_unit_test(test_decode_rejects_ttl),
        cmocka_unit_test(test_empty_body_and_type),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_decode_rejects_header),
        cmocka_unit_test(test_decode_rejects_status),
        cmocka_unit_test(test_decode_rejects_time),
        cmocka_unit_test(test_decode_rejects_type),
        cmocka_unit_test(test_decode_rejects_truncation),
        cmocka_unit_test(test_headers_round_trip),
        cmocka_unit_test(test_encode_rejects_headers),
        cmocka_unit_test(test_decode_rejects_pc3),
        cmocka_unit_test(test_decode_scratch),
        cmocka_unit_test(test_pc3_truncation),
        cmocka_unit_test(test_key_tag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
