-- wrk load for scripts/bench: TF Serving predict bodies, {"instances":[[floats...]]}.
--
--   wrk ... -s load.lua URL -- BASE_FILE cycle N [START]
--       the body of input i is {"instances":[[i,<base>]]}; requests cycle over i = 0..N-1
--       (from START), so after one pass every request is a cache hit.
--   wrk ... -s load.lua URL -- BASE_FILE unique NONCE
--       {"instances":[[NONCE,T,C,<base>]]}: T the thread, C a counter, so every request is
--       new (a miss); pass a fresh NONCE to every run.
--
-- BASE_FILE holds <base>, the comma-separated floats written by scripts/bench (which builds
-- the same bodies in Python to fill the cache). done() prints one line,
-- "BENCH-JSON {...}": requests, duration and latency in microseconds, errors; non2xx is
-- wrk's count of statuses >= 400.
--
-- With BENCH_RECORD=PREFIX in the environment, each thread also writes every answer it
-- gets to PREFIX.<thread>, one record each: a line "T C STATUS XCACHE LEN" (T the thread,
-- C the counter of the request it answers, XCACHE "-" when absent), then LEN bytes of
-- body and a newline. scripts/bench rebuilds each request from T and C and checks its
-- answer (wrong answers: N). The bench runs such loads with one connection per thread,
-- so that a thread's answers come in the order of its requests. Without BENCH_RECORD
-- there is no response() and wrk reads no bodies: the hit runs pay nothing for it.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local base, mode, n, nonce, counter, last, record
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  local f = assert(io.open(args[1], "rb"))
  base = f:read("*a")
  f:close()
  mode = args[2] or "cycle"
  if mode == "cycle" then
    n = tonumber(args[3] or "1000")
    counter = tonumber(args[4] or "0") + tid * 7919
  else
    nonce = args[3] or "0"
    counter = 0
  end
  local prefix = os.getenv("BENCH_RECORD")
  if prefix then
    record = assert(io.open(prefix .. "." .. tid, "wb"))
  end
end

function request()
  local body
  if mode == "cycle" then
    body = '{"instances":[[' .. (counter % n) .. "," .. base .. "]]}"
  else
    body = '{"instances":[[' .. nonce .. "," .. tid .. "," .. counter .. "," .. base .. "]]}"
  end
  last = counter
  counter = counter + 1
  return wrk.format("POST", nil, headers, body)
end

if os.getenv("BENCH_RECORD") then
  -- One connection per thread and no pipelining: this answers the last request made.
  function response(status, hdrs, body)
    local xcache = hdrs["X-Cache"] or "-"
    record:write(string.format("%d %d %d %s %d\n", tid, last, status, xcache, #body), body, "\n")
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"non2xx":%d,' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
