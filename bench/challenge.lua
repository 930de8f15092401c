-- wrk script for bench/api.py: GET a proof-of-work challenge, each request from its own
-- client address (X-Forwarded-For, trusted from loopback), as visitors' browsers would.

local next_id = 1
local net = tonumber(os.getenv("BENCH_NET") or "0")

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

local counter = 0

function request()
  counter = counter + 1
  return wrk.format("GET", nil, {
    ["X-Forwarded-For"] = string.format(
      "%d.%d.%d.%d", 11 + (net + thread_id) % 200, math.floor(counter / 65536) % 256,
      math.floor(counter / 256) % 256, counter % 256
    ),
  })
end
