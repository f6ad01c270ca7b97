/*
 * grpcwire: gRPC's wire pieces (see the header). The gRPC over HTTP/2 protocol
 * (PROTOCOL-HTTP2.md of grpc/grpc) is the reference for every rule here.
 */
#include "predcache/grpcwire.h"

#include <stdio.h>
#include <string.h>

static const char *const names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const char *pc_grpc_status_name(int code)
{
    return code >= 0 && code <= PC_GRPC_UNAUTHENTICATED ? names[code] : "UNKNOWN";
}

int pc_grpc_status_from_http(int s)
{
    switch (s) {
    case 400:
        return PC_GRPC_INTERNAL;
    case 401:
        return PC_GRPC_UNAUTHENTICATED;
    case 403:
        return PC_GRPC_PERMISSION_DENIED;
    case 404:
        return PC_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return PC_GRPC_UNAVAILABLE;
    default:
        return PC_GRPC_UNKNOWN;
    }
}

int pc_grpc_frame_parse(const uint8_t *buf, size_t n, size_t max, int *compressed,
                        const uint8_t **msg, size_t *len, size_t *used)
{
    if (n < 1)
        return 0;
    if (buf[0] > 1)
        return -1;
    if (n < PC_GRPC_PREFIX)
        return 0;
    uint32_t l =
        (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | (uint32_t)buf[4];
    if (l > max)
        return -1;
    if (n - PC_GRPC_PREFIX < l)
        return 0;
    *compressed = buf[0];
    *msg = buf + PC_GRPC_PREFIX;
    *len = l;
    *used = PC_GRPC_PREFIX + (size_t)l;
    return 1;
}

void pc_grpc_frame_prefix(uint8_t out[PC_GRPC_PREFIX], int compressed, uint32_t len)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

/* Microseconds per unit: H M S m u; n is handled apart (1000 per microsecond). */
static int64_t unit_us(char u)
{
    switch (u) {
    case 'H':
        return INT64_C(3600000000);
    case 'M':
        return INT64_C(60000000);
    case 'S':
        return INT64_C(1000000);
    case 'm':
        return 1000;
    case 'u':
        return 1;
    default:
        return 0;
    }
}

int64_t pc_grpc_timeout_parse(const char *v)
{
    size_t nd = 0;
    int64_t x = 0;
    while (v[nd] >= '0' && v[nd] <= '9') {
        if (nd == 8)
            return -1;
        x = x * 10 + (v[nd] - '0');
        nd++;
    }
    if (nd == 0 || v[nd] == '\0' || v[nd + 1] != '\0')
        return -1;
    if (v[nd] == 'n')
        return x == 0 ? 0 : (x + 999) / 1000;
    int64_t u = unit_us(v[nd]);
    return u == 0 ? -1 : x * u;
}

size_t pc_grpc_timeout_format(int64_t us, char out[12])
{
    static const struct {
        char unit;
        int64_t us;
    } units[] = {{'u', 1},
                 {'m', 1000},
                 {'S', 1000000},
                 {'M', INT64_C(60000000)},
                 {'H', INT64_C(3600000000)}};
    if (us < 1)
        us = 1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        int64_t v = us / units[i].us + (us % units[i].us != 0); /* rounded up, no overflow */
        if (v <= 99999999 || i + 1 == sizeof units / sizeof units[0]) {
            if (v > 99999999)
                v = 99999999;
            int n = snprintf(out, 12, "%lld%c", (long long)v, units[i].unit);
            return n > 0 ? (size_t)n : 0;
        }
    }
    return 0;
}

size_t pc_grpc_message_encode(const char *msg, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (len == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
        if (*p >= 0x20 && *p <= 0x7E && *p != '%') {
            if (o + 1 >= len)
                break;
            out[o++] = (char)*p;
        } else {
            if (o + 3 >= len)
                break;
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return o;
}

/* A base-128 varint at *p (before end): 0 read into *v, -1 truncated or too long. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

int pc_grpc_health_serving(const uint8_t *msg, size_t len)
{
    const uint8_t *p = msg, *end = msg + len;
    int serving = 0; /* proto3 writes no false, no 0 (UNKNOWN): absent is not serving */
    while (p < end) {
        uint64_t tag, v;
        if (varint(&p, end, &tag) != 0)
            return 0;
        switch (tag & 7) {
        case 0:
            if (varint(&p, end, &v) != 0)
                return 0;
            if (tag >> 3 == 1)
                serving = v == 1; /* the last one counts, as protobuf reads it */
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return 0;
            p += 8;
            break;
        case 2:
            if (varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return 0;
            p += v;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return 0;
            p += 4;
            break;
        default:
            return 0;
        }
    }
    return serving;
}
