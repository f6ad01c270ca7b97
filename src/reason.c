/*
 * reason: the list of reasons (see the header).
 */
#include "predcache/reason.h"

static const char *const tokens[] = {
#define PC_X(name, token, words) token,
    PC_REASONS(PC_X)
#undef PC_X
};

static const char *const words[] = {
#define PC_X(name, token, w) w,
    PC_REASONS(PC_X)
#undef PC_X
};

const char *pc_reason_token(enum pc_reason r)
{
    return (unsigned)r < PC_REASON_COUNT ? tokens[r] : "";
}

const char *pc_reason_words(enum pc_reason r)
{
    return (unsigned)r < PC_REASON_COUNT ? words[r] : "";
}

int pc_reason_is_store(enum pc_reason r)
{
    return r == PC_REASON_REDIS_UNAVAILABLE || r == PC_REASON_REDIS_ERROR ||
           r == PC_REASON_GENERATION_UNKNOWN;
}
