-- wrk script: POST a text to one of 10 sessions (s0..s9) per request, with the API key from $ZGKEY
-- (../shared/bench/send.lua), and a JSON summary at the end for benchmarks/http_send.py.
local n = 0
local key = os.getenv("ZGKEY") or ""
local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = key}

request = function()
  n = n + 1
  local body = '{"sessionId":"s' .. (n % 10) .. '","to":"5511990001234","message":"bench message ' .. n .. '"}'
  return wrk.format("POST", wrk.path, headers, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "mean_ms": %.2f, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, '
      .. '"non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency.mean / 1000, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
