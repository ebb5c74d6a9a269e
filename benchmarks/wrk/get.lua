-- wrk script: plain GETs of the URL's path, with the JSON summary of send.lua at the end.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "mean_ms": %.2f, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, '
      .. '"non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency.mean / 1000, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
