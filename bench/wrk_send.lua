-- wrk -s bench/wrk_send.lua: closed-loop load with a new number per request ({to} in WRK_PATH
-- or WRK_BODY), and one JSON line at the end (prefixed WRKJSON) for bench/sustained.py.
-- WRK_METHOD (POST), WRK_PATH, WRK_BODY, WRK_AUTH (an Authorization header) from the environment.
local method = os.getenv("WRK_METHOD") or "POST"
local path = os.getenv("WRK_PATH") or "/"
local body = os.getenv("WRK_BODY")
local auth = os.getenv("WRK_AUTH")
local threads = 0
local n = 0
local step = 1

function setup(thread)
  thread:set("n", threads)
  threads = threads + 1
end

function init(args)
  step = 64
  if body then
    wrk.headers["Content-Type"] = "application/json"
  end
  if auth and auth ~= "" then
    wrk.headers["Authorization"] = auth
  end
end

function request()
  n = n + step
  local to = string.format("38050%07d", n % 10000000)
  local p = (path:gsub("{to}", to))
  if body then
    return wrk.format(method, p, nil, (body:gsub("{to}", to)))
  end
  return wrk.format(method, p, nil, nil)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
