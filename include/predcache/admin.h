/*
 * admin: the admin port, served by worker 0: /health, /ready, /metrics, /stats, purges and
 * invalidations (see admin.c).
 */
#ifndef PREDCACHE_ADMIN_H
#define PREDCACHE_ADMIN_H

struct pc_http_req;

/* The admin port's handler (arg is the worker). */
void pc_admin_handle(struct pc_http_req *req, void *arg);

#endif
