/* resp: one Redis command's bytes (see resp.h). */
#include "predcache/resp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/buf.h"

/* Digits of v in decimal. */
static size_t digits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Writes c, the decimal v and CRLF at p; returns the end. */
static char *put_line(char *p, char c, size_t v)
{
    char d[PC_U64_TEXT];
    size_t n = pc_u64_text(v, d);
    *p++ = c;
    memcpy(p, d, n);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

long pc_resp_command(char **out, int argc, const char *const *argv, const size_t *lens)
{
    *out = NULL;
    if (argc < 1)
        return -1;
    size_t total = 1 + digits((size_t)argc) + 2;
    for (int i = 0; i < argc; i++)
        total += 1 + digits(lens[i]) + 2 + lens[i] + 2;
    char *buf = malloc(total + 1);
    if (buf == NULL)
        return -1;
    char *p = put_line(buf, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        p = put_line(p, '$', lens[i]);
        if (lens[i] > 0)
            memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';
    *out = buf;
    return (long)total;
}
