-- wrk script for bench/api.py: POST one endorsement per request, each with a new email.
-- BENCH_ORIGIN (an allowlisted origin) and BENCH_RUN (unique per run) come from the env.
-- Each request comes from its own client address (X-Forwarded-For, trusted from loopback),
-- as the many visitors of allied sites would; see client_address in bench/api.py.

local next_id = 1
local origin = os.getenv("BENCH_ORIGIN") or "https://ally.example"
local run = os.getenv("BENCH_RUN") or tostring(os.time())
local net = tonumber(os.getenv("BENCH_NET") or "0")

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

local counter = 0

function request()
  counter = counter + 1
  local body = string.format(
    '{"name":"Bench %d","email":"bench-%s-%d-%d@example.org","consent":true}',
    counter, run, thread_id, counter
  )
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Origin"] = origin,
    ["X-Forwarded-For"] = string.format(
      "10.%d.%d.%d", (net + thread_id) % 256, math.floor(counter / 256) % 256, counter % 256
    ),
  }, body)
end
