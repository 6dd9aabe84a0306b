-- wrk script of the endpoint benchmark: POST the activity with the bearer token.
-- Usage: wrk ... -s post.lua http://127.0.0.1:PORT/api/messages -- <token-file> <body-file>
-- At the end it prints one machine-readable RESULT line (latencies in microseconds).

local function slurp(path)
  local file = assert(io.open(path, "rb"))
  local text = file:read("*a")
  file:close()
  return (text:gsub("%s+$", ""))
end

function init(args)
  wrk.method = "POST"
  wrk.body = slurp(args[2])
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. slurp(args[1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
