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

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local base, mode, n, nonce, counter
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
end

function request()
  local body
  if mode == "cycle" then
    body = '{"instances":[[' .. (counter % n) .. "," .. base .. "]]}"
  else
    body = '{"instances":[[' .. nonce .. "," .. tid .. "," .. counter .. "," .. base .. "]]}"
  end
  counter = counter + 1
  return wrk.format("POST", nil, headers, body)
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
