/*
 * jobs: asynchronous prediction jobs (202 + job id, results by id), durable in a Redis
 * Stream with a consumer group. Owns the job queue, the consumer loop of this process
 * and the job result records. Runs each job through predcache's own data port, so a job
 * takes the same cache path as a synchronous request. Never touches hiredis or curl
 * directly: Redis through store.h, the loopback requests through upstream.h.
 *
 * Credentials (Authorization, Proxy-Authorization, Cookie, [cache] credential_headers) never
 * reach Redis or a log: a job request carrying one is refused (400, [jobs] credentials =
 * refuse) or is a local job (credentials = local): only its record is in Redis, and the
 * process that accepted it keeps the job, credentials included, in memory and runs it; no
 * other process ever sees, claims or runs it. Such a job that its process cannot finish
 * (SIGTERM before it ran, the drain deadline, a kill) ends failed, never queued forever.
 *
 * Redis layout (<p> is [cache] key_prefix):
 *     [jobs] stream (default <p>jobs:<namespace>)   queued and running jobs, one entry each:
 *         id, method, target, headers (JSON [[name, value], ...], never a credential),
 *         body, submitted_at
 *         consumer group "predcache"; entries are XACKed and XDELed once finished
 *     <p>job:<id>   hash: state (queued|running|done|failed), attempts, submitted_at,
 *                   started_at, finished_at, consumer, cache, key, result (an envelope);
 *                   a local job's also runs_in (the consumer that holds it) and
 *                   credential_scope (pc_creds_scope of its request: a digest, no value)
 *     <p>job:<id>:lease   string, PX claim_after_ms, renewed by the holder of a local job
 *                   until it finishes; a poll that finds it gone fails the job
 */
#ifndef PREDCACHE_JOBS_H
#define PREDCACHE_JOBS_H

#include <stddef.h>

struct pc_jobs;
struct pc_http_req;
struct pc_worker;

/* Marker header on the requests a job sends to predcache's own data port. */
#define PC_JOBS_MARKER "X-Predcache-Job"

/*
 * Builds the jobs module of w and starts its consumer (unless [jobs] concurrency is 0).
 * Borrows w (event base, cfg, store, metrics, key parameters, data listener) for its
 * lifetime: call once the listeners and the store exist. NULL with a reason in err.
 */
struct pc_jobs *pc_jobs_new(struct pc_worker *w, char *err, size_t errlen);

/*
 * Called first for every data-port request. Returns 1 when req is a job request
 * (submit, poll, or a compat alias) and has been or will be answered by the jobs module;
 * 0 when the proxy should handle it as usual.
 */
int pc_jobs_handle(struct pc_jobs *jobs, struct pc_http_req *req);

/* SIGTERM: takes no more jobs from the queue; the jobs running now go on. Local jobs not
 * started yet are failed (no other process can run them). */
void pc_jobs_drain(struct pc_jobs *jobs);

/* Jobs this process holds (taken from the queue, not yet finished or handed back), and the
 * local jobs it has accepted and not started. */
size_t pc_jobs_held(const struct pc_jobs *jobs);

/*
 * Drain deadline: stops the jobs still running and hands them back to the queue, where
 * another process takes them over at once; local jobs are failed instead. Call before the
 * proxy's own transfers are aborted (a job must not record the proxy's "shutting down"
 * answer as its result).
 */
void pc_jobs_abort(struct pc_jobs *jobs);

/*
 * Frees the module; jobs not finished stay pending in the stream and are reclaimed by
 * another process after claim_after_ms (local jobs: failed by a poll once their lease is
 * gone). Call before the worker's store is freed: what
 * still waits on it is let go when the store fails its callbacks. Accepts NULL.
 */
void pc_jobs_free(struct pc_jobs *jobs);
/* The sentinels switched the master: the consumer's own connection follows (store.h). */
void pc_jobs_master_moved(struct pc_jobs *jobs, const char *host, int port);

#endif
