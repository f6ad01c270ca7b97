/*
 * grpcwire: gRPC's wire pieces over HTTP/2 (pure): the length-prefixed message, the status
 * codes and their names, the grpc-timeout header, and grpc-message's percent-encoding.
 * Owns no state and does no I/O.
 */
#ifndef PREDCACHE_GRPCWIRE_H
#define PREDCACHE_GRPCWIRE_H

#include <stddef.h>
#include <stdint.h>

#define PC_GRPC_PREFIX 5 /* compressed flag (1 byte), length (4 bytes, big-endian) */

enum pc_grpc_status {
    PC_GRPC_OK = 0,
    PC_GRPC_CANCELLED = 1,
    PC_GRPC_UNKNOWN = 2,
    PC_GRPC_INVALID_ARGUMENT = 3,
    PC_GRPC_DEADLINE_EXCEEDED = 4,
    PC_GRPC_NOT_FOUND = 5,
    PC_GRPC_ALREADY_EXISTS = 6,
    PC_GRPC_PERMISSION_DENIED = 7,
    PC_GRPC_RESOURCE_EXHAUSTED = 8,
    PC_GRPC_FAILED_PRECONDITION = 9,
    PC_GRPC_ABORTED = 10,
    PC_GRPC_OUT_OF_RANGE = 11,
    PC_GRPC_UNIMPLEMENTED = 12,
    PC_GRPC_INTERNAL = 13,
    PC_GRPC_UNAVAILABLE = 14,
    PC_GRPC_DATA_LOSS = 15,
    PC_GRPC_UNAUTHENTICATED = 16,
};

/* "OK", "CANCELLED", ... ; "UNKNOWN" for a code outside 0..16. */
const char *pc_grpc_status_name(int code);

/* The gRPC status an HTTP status maps to when a server answers without grpc-status (the
 * gRPC spec's table: 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404
 * UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, else UNKNOWN). */
int pc_grpc_status_from_http(int http_status);

/*
 * One message at the start of buf[0..n): 1 when whole (*compressed, *msg, *len set, *used
 * the bytes it takes with its prefix); 0 when more bytes are needed; -1 when its length is
 * over max (the caller answers RESOURCE_EXHAUSTED) or the flag byte is not 0 or 1.
 */
int pc_grpc_frame_parse(const uint8_t *buf, size_t n, size_t max, int *compressed,
                        const uint8_t **msg, size_t *len, size_t *used);
/* The 5-byte prefix of a message of len bytes. */
void pc_grpc_frame_prefix(uint8_t out[PC_GRPC_PREFIX], int compressed, uint32_t len);

/*
 * grpc-timeout ("TimeoutValue TimeoutUnit": 1 to 8 ASCII digits, then H, M, S, m, u or n)
 * in microseconds (a positive value under a microsecond rounds up to 1); -1 when it is not
 * one.
 */
int64_t pc_grpc_timeout_parse(const char *v);
/* us (> 0) as a grpc-timeout value: the finest unit whose value fits 8 digits, rounded up.
 * Returns the length written (out holds at least 12 bytes). */
size_t pc_grpc_timeout_format(int64_t us, char out[12]);

/*
 * grpc-message: bytes outside 0x20..0x7E, and '%', percent-encoded (%XX). Writes at most
 * len - 1 bytes and a NUL, never cutting an escape; returns the length written.
 */
size_t pc_grpc_message_encode(const char *msg, char *out, size_t len);

/* Does a health check's answer message say serving? grpc.health.v1's HealthCheckResponse
 * (status, field 1: SERVING is 1) and KServe v2's ServerLive / ServerReady / ModelReady
 * answers (live / ready, field 1: true is 1) all put it in field 1 as a varint: 1 when
 * field 1 is 1; 0 when it is anything else, absent (proto3 writes neither false nor
 * UNKNOWN), or the message does not parse. */
int pc_grpc_health_serving(const uint8_t *msg, size_t len);

#endif
