-- Each request carries the next token of tokens.txt (one access token per line), so that
-- the load is spread over many users and sessions like real traffic.
-- Usage: wrk -s bench/wrk.lua <url> -- <tokens file> <method> [body]
local tokens = {}
local counter = 0
local method, body

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  method = args[2] or "GET"
  body = args[3]
  counter = math.random(#tokens)
end

function request()
  counter = counter % #tokens + 1
  local headers = { ["Authorization"] = "Bearer " .. tokens[counter] }
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format(method, nil, headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("BENCH_RESULT {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, \"errors\": %d, \"non2xx_errors\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    summary.errors.status))
end
