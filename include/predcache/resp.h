/*
 * resp: the Redis protocol's command encoding, pure. Owns the bytes of one command as
 * Redis reads it (an array of bulk strings: "*<argc>\r\n" then "$<len>\r\n<arg>\r\n" for
 * each argument), the same bytes hiredis's redisFormatCommandArgv writes, in one pass and
 * one allocation, without printf. Never touches a connection; replies are hiredis's
 * reader's (store).
 */
#ifndef PREDCACHE_RESP_H
#define PREDCACHE_RESP_H

#include <stddef.h>

/* The command argv[0..argc) (lens[i] bytes each; arguments may hold any byte) in *out,
 * malloc'd (the caller frees it). Returns its length, or -1 (argc < 1, out of memory;
 * *out is then NULL). */
long pc_resp_command(char **out, int argc, const char *const *argv, const size_t *lens);

#endif
