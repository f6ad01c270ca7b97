/*
 * reason: why a request was not answered from the cache, or its answer not stored. Owns
 * the list of reasons, each with its token (X-Cache-Reason, the access log's reason=, the
 * label of predcache_uncached_total) and its words for the debug log, and which X-Cache
 * each goes with. Pure: no I/O.
 *
 *   X-Cache: BYPASS  the store could not be used (Redis down, failed, a generation unread)
 *   X-Cache: PASS    the request cannot be cached (credentials, version unknown, ...)
 *   X-Cache: MISS    with a reason: the model's answer was not stored (private, too large)
 */
#ifndef PREDCACHE_REASON_H
#define PREDCACHE_REASON_H

#define PC_REASONS(X)                                                                              \
    X(NONE, "", "")                                                                                \
    X(REDIS_UNAVAILABLE, "redis-unavailable", "Redis not connected (down, reconnecting)")          \
    X(REDIS_ERROR, "redis-error", "the Redis lookup failed (timed out, an error reply, dropped)")  \
    X(GENERATION_UNKNOWN, "generation-unknown",                                                    \
      "the namespace's invalidation generations could not be read from Redis")                     \
    X(CREDENTIALS, "credentials", "the request carries credentials")                               \
    X(TOO_MANY_INSTANCES, "too-many-instances", "more instances than [cache] max_batch_instances") \
    X(VERSION_UNKNOWN, "version-unknown", "model version unknown")                                 \
    X(PATH_TOO_LONG, "path-too-long", "model path too long")                                       \
    X(NOT_CACHEABLE, "not-cacheable", "not cacheable")                                             \
    X(STREAMED, "streamed", "a streamed answer is passed on as it comes, not stored")              \
    X(NON_DETERMINISTIC, "non-deterministic",                                                      \
      "a generation that samples (temperature not 0, or more than one choice)")                    \
    X(REQUEST_ENCODING, "request-encoding",                                                        \
      "the request body's Content-Encoding is neither gzip nor deflate")                           \
    X(INPUT_BUDGET, "input-budget",                                                                \
      "its decoded body would take request memory past [server] max_input_bytes")                  \
    X(RESPONSE_COOKIE, "response-cookie", "response sets a cookie")                                \
    X(VARY_NAME_TOO_LONG, "vary-name-too-long", "response varies by a header name too long")       \
    X(VARY_STAR, "vary-star", "response Vary: *")                                                  \
    X(VARY_CREDENTIALS, "vary-credentials", "response varies by credentials")                      \
    X(VARY_UNKEYED, "vary-unkeyed", "response varies by a header the key lacked")                  \
    X(CLIENT_ERROR, "client-error", "a client error")                                              \
    X(RESPONSE_PRIVATE, "response-private", "response no-store/private")                           \
    X(RESPONSE_NO_CACHE, "response-no-cache", "response no-cache")                                 \
    X(RESPONSE_MAX_AGE_0, "response-max-age-0", "response max-age=0")                              \
    X(STATUS, "status", "status not 2xx")                                                          \
    X(TOO_LARGE, "too-large", "larger than max_value_bytes")                                       \
    X(STREAM_CUT, "stream-cut", "the streamed answer ended before its end")                        \
    X(RESPONSE_ENCODED, "response-encoded", "response is content-encoded")                         \
    X(CONTENT_TYPE_TOO_LONG, "content-type-too-long", "content type too long to store")            \
    X(REQUEST_NO_STORE, "request-no-store", "request no-store")

enum pc_reason {
#define PC_X(name, token, words) PC_REASON_##name,
    PC_REASONS(PC_X)
#undef PC_X
        PC_REASON_COUNT
};

/* The token ("" for NONE); the words for a log line. Any value: out of range reads as NONE. */
const char *pc_reason_token(enum pc_reason r);
const char *pc_reason_words(enum pc_reason r);
/* 1 for the reasons that are the store's trouble (X-Cache: BYPASS). */
int pc_reason_is_store(enum pc_reason r);

#endif
