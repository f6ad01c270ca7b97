/*
 * done: the done channel (see done.h).
 */
#include "done.h"

#include <stdio.h>
#include <string.h>

#include "predcache/config.h"
#include "predcache/generations.h"
#include "predcache/l1.h"
#include "predcache/peers.h"
#include "predcache/purges.h"

int pc_done_channel(const struct pc_config *cfg, char *out, size_t len)
{
    return snprintf(out, len, "%sdone:%s", cfg->key_prefix, cfg->namespace_) < (int)len ? 0 : -1;
}

int pc_done_publish(struct pc_worker *w, const char *msg)
{
    char chan[PC_CHANNEL_MAX];
    if (pc_done_channel(w->cfg, chan, sizeof chan) != 0)
        return -1;
    const char *argv[] = {"PUBLISH", chan, msg};
    size_t lens[] = {7, strlen(chan), strlen(msg)};
    return pc_store_command(w->store, 0, NULL, NULL, 3, argv, lens) == 0 ? 0 : -1;
}

int pc_done_purge(struct pc_worker *w, const char *key, pc_store_cmd_cb cb, void *arg)
{
    pc_l1_del(w->l1, key);     /* this process's tier at once; the others hear it below */
    uint64_t at = pc_now_us(); /* this worker's answers fetched before it stay out (purges.h) */
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, strlen(key)};
    if (pc_store_command(w->store, 0, cb, arg, 2, argv, lens) != 0) {
        pc_purges_add(w->purges, key, at);
        return -1;
    }
    /* After the DEL on the same connection: a process that hears it reads Redis anew. */
    char msg[PC_CFG_STR * 2 + sizeof PC_PURGE_ANNOUNCE];
    int announced =
        (size_t)snprintf(msg, sizeof msg, "%s%s", PC_PURGE_ANNOUNCE, key) < sizeof msg &&
        pc_done_publish(w, msg) == 0;
    if (announced) /* its echo is not heard again */
        pc_purges_add_own(w->purges, key, at);
    else
        pc_purges_add(w->purges, key, at);
    return 0;
}

int pc_done_message(struct pc_worker *w, const char *msg, size_t len, char *out, size_t outlen)
{
    if (len >= outlen)
        return -1;
    memcpy(out, msg, len);
    out[len] = '\0';
    size_t al = strlen(PC_GEN_ANNOUNCE);
    if (len > al && memcmp(out, PC_GEN_ANNOUNCE, al) == 0) {
        pc_generations_forget(w->generations, out + al); /* an invalidation of that namespace */
        return 1;
    }
    al = strlen(PC_PEERS_ANNOUNCE);
    if (len > al && memcmp(out, PC_PEERS_ANNOUNCE, al) == 0) {
        pc_peers_heard(w->peers, out + al, len - al, pc_now_us()); /* a worker's greeting */
        return 1;
    }
    al = strlen(PC_PURGE_ANNOUNCE);
    if (len > al && memcmp(out, PC_PURGE_ANNOUNCE, al) == 0) {
        pc_l1_del(w->l1, out + al); /* a purge by another process (or worker) */
        pc_purges_heard(w->purges, out + al, pc_now_us());
        return 1;
    }
    return 0;
}
