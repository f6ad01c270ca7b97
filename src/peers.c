/* peers: whether a worker shares its done channel (see the header). */
#include "predcache/peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct pc_peers {
    char greeting[PC_PEERS_GREETING_MAX];
    size_t id_len;     /* the id's length, after the announce prefix */
    uint64_t own_us;   /* its own greeting last heard back (0: never) */
    uint64_t other_us; /* another's last heard (0: never) */
    uint64_t others;
};

/* 64 bits no other worker is likely to draw: the kernel's, else the clock's and pid's. */
static uint64_t random_id(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v && v != 0)
        return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 40) ^
        (uint64_t)(uintptr_t)&ts;
    return v;
}

struct pc_peers *pc_peers_new(void)
{
    struct pc_peers *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    int n = snprintf(p->greeting, sizeof p->greeting, "%s%016llx", PC_PEERS_ANNOUNCE,
                     (unsigned long long)random_id());
    p->id_len = (size_t)n - strlen(PC_PEERS_ANNOUNCE);
    return p;
}

void pc_peers_free(struct pc_peers *p)
{
    free(p);
}

const char *pc_peers_greeting(const struct pc_peers *p)
{
    return p->greeting;
}

void pc_peers_heard(struct pc_peers *p, const char *id, size_t len, uint64_t now_us)
{
    if (p == NULL)
        return;
    if (len == p->id_len && memcmp(id, p->greeting + strlen(PC_PEERS_ANNOUNCE), len) == 0) {
        p->own_us = now_us;
        return;
    }
    p->other_us = now_us;
    p->others++;
}

int pc_peers_alone(const struct pc_peers *p, uint64_t listening_us, uint64_t now_us)
{
    const uint64_t quiet = (uint64_t)PC_PEERS_QUIET_MS * 1000;
    if (p == NULL || listening_us == 0 || now_us < listening_us + quiet)
        return 0; /* not listening, or not for long enough to have heard everyone */
    /* Its own greeting within the last quiet period: through this subscription, which has
     * lasted longer. Else its greetings do not come back: the channel is not proven. */
    if (p->own_us == 0 || now_us - p->own_us > quiet)
        return 0;
    return p->other_us == 0 || now_us - p->other_us > quiet;
}

uint64_t pc_peers_others(const struct pc_peers *p)
{
    return p != NULL ? p->others : 0;
}
