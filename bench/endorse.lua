-- wrk script for bench/api.py: POST one endorsement per request, each with a new email and
-- its own pre-solved proof of work (one line of BENCH_PAYLOADS per request; thread t of n
-- takes lines t, t + n, t + 2n, ...). BENCH_ORIGIN (an allowlisted origin), BENCH_RUN
-- (unique per run), BENCH_NET and BENCH_THREADS come from the env.
-- Each request comes from its own client address in its own /24 (X-Forwarded-For, trusted
-- from loopback), as the many visitors of allied sites would: the client and network
-- tiers count every request and refuse none.

local next_id = 1
local origin = os.getenv("BENCH_ORIGIN") or "https://ally.example"
local run = os.getenv("BENCH_RUN") or tostring(os.time())
local net = tonumber(os.getenv("BENCH_NET") or "0")
local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
local payload_file = os.getenv("BENCH_PAYLOADS")

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

local payloads = {}

function init(args)
  if payload_file then
    local n = 0
    for line in io.lines(payload_file) do
      if n % threads == thread_id - 1 then payloads[#payloads + 1] = line end
      n = n + 1
    end
  end
end

local counter = 0

function request()
  counter = counter + 1
  local altcha = ""
  if #payloads > 0 then
    altcha = string.format(',"altcha":"%s"', payloads[(counter - 1) % #payloads + 1])
  end
  local body = string.format(
    '{"name":"Bench %d","email":"bench-%s-%d-%d@example.org","consent":true%s}',
    counter, run, thread_id, counter, altcha
  )
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Origin"] = origin,
    ["X-Forwarded-For"] = string.format(
      "%d.%d.%d.1", 11 + (net + thread_id) % 200, math.floor(counter / 256) % 256, counter % 256
    ),
  }, body)
end
