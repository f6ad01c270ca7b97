/*
 * fuzz_config: the conf file parser, the setters and the validation on arbitrary input.
 *
 * config.c reads only files, so the input is written to a memfd (no disk, no temp file)
 * and loaded through /proc/self/fd/N. The same input split at NUL bytes is also fed to
 * pc_config_set as (section, key, value) triples, and to pc_config_split_hostport.
 *
 * Invariants:
 *   - load: on success pc_config_validate passes; on failure err is NUL-terminated, starts
 *     with the file name, and the caller's struct is byte for byte as it was
 *   - a loaded (or set and valid) configuration dumped with pc_config_dump reads back to
 *     the same configuration (the password, which the dump masks, excepted): the dump
 *     exists so that the effective configuration can be written back as a file
 *   - set: on failure err is NUL-terminated and not empty and the struct is unchanged
 *   - split_hostport: on success the host is NUL-terminated within its buffer and the port
 *     is 0..65535
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include "fuzz.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "predcache/buf.h"
#include "predcache/config.h"

static int memfd = -1;
static char memfd_path[64];

/* Replaces the memfd's content with data[0..n). */
static void put_file(const void *data, size_t n)
{
    if (memfd < 0) {
        memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
        FUZZ_CHECK(memfd >= 0);
        snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
    }
    FUZZ_CHECK(ftruncate(memfd, 0) == 0);
    FUZZ_CHECK(n == 0 || pwrite(memfd, data, n, 0) == (ssize_t)n);
}

static void check_err(const char *err, size_t errlen)
{
    FUZZ_CHECK(memchr(err, '\0', errlen) != NULL);
    FUZZ_CHECK(err[0] != '\0');
}

static void emit_line(const char *line, void *arg)
{
    struct pc_buf *b = arg;
    FUZZ_CHECK(strchr(line, '\n') == NULL);
    FUZZ_CHECK(pc_buf_append_str(b, line) == 0 && pc_buf_append_char(b, '\n') == 0);
}

/* The dump of a valid cfg, loaded over the defaults, gives cfg back (password aside). */
static void check_dump_reads_back(const struct pc_config *cfg)
{
    struct pc_buf dump;
    pc_buf_init(&dump);
    pc_config_dump(cfg, emit_line, &dump);
    put_file(dump.data, dump.len);

    struct pc_config *back = malloc(sizeof *back);
    FUZZ_CHECK(back != NULL);
    pc_config_defaults(back);
    char err[1024] = "";
    int rc = pc_config_load(back, memfd_path, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "dump does not read back: %s\n%s", err, dump.data);
    FUZZ_CHECK(rc == 0);
    memcpy(back->redis_password, cfg->redis_password, sizeof back->redis_password);
    FUZZ_CHECK(memcmp(back, cfg, sizeof *cfg) == 0);
    free(back);
    pc_buf_release(&dump);
}

static void fuzz_load(const uint8_t *data, size_t size)
{
    struct pc_config *cfg = malloc(sizeof *cfg), *before = malloc(sizeof *before);
    FUZZ_CHECK(cfg != NULL && before != NULL);
    pc_config_defaults(cfg);
    memcpy(before, cfg, sizeof *cfg);
    put_file(data, size);

    char err[512];
    memset(err, 'x', sizeof err);
    if (pc_config_load(cfg, memfd_path, err, sizeof err) == 0) {
        char verr[512];
        FUZZ_CHECK(pc_config_validate(cfg, verr, sizeof verr) == 0);
        check_dump_reads_back(cfg);
    } else {
        check_err(err, sizeof err);
        FUZZ_CHECK(strncmp(err, memfd_path, strlen(memfd_path)) == 0); /* "FILE:LINE: ..." */
        FUZZ_CHECK(memcmp(cfg, before, sizeof *cfg) == 0);
    }
    free(before);
    free(cfg);
}

/* Triples "section\0key\0value\0" from the input; the last one may end at the input's end. */
static void fuzz_set(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';

    struct pc_config *cfg = malloc(sizeof *cfg), *before = malloc(sizeof *before);
    FUZZ_CHECK(cfg != NULL && before != NULL);
    pc_config_defaults(cfg);
    const char *part[3];
    size_t i = 0;
    int any_set = 0;
    while (i <= size) {
        for (int j = 0; j < 3; j++) {
            part[j] = copy + (i <= size ? i : size);
            i += strlen(part[j]) + 1;
        }
        memcpy(before, cfg, sizeof *cfg);
        char err[256];
        memset(err, 'x', sizeof err);
        if (pc_config_set(cfg, part[0], part[1], part[2], err, sizeof err) == 0) {
            any_set = 1;
        } else {
            check_err(err, sizeof err);
            FUZZ_CHECK(memcmp(cfg, before, sizeof *cfg) == 0);
        }
    }
    char verr[512];
    if (any_set && pc_config_validate(cfg, verr, sizeof verr) == 0)
        check_dump_reads_back(cfg);
    free(before);
    free(cfg);

    char host[64];
    int port = -1;
    memset(host, 'x', sizeof host);
    if (pc_config_split_hostport(copy, host, sizeof host, &port) == 0) {
        FUZZ_CHECK(memchr(host, '\0', sizeof host) != NULL);
        FUZZ_CHECK(port >= 0 && port <= 65535);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_load(data, size);
    fuzz_set(data, size);
    return 0;
}
