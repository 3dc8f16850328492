-- wrk script: POST /api/activities, each request with a unique idempotency
-- key (run tag + thread + counter) and a (tenant, commerce) drawn at random
-- from the Lua data file named by WRK_TARGETS (run.sh writes it from the
-- targets of `loadtool seed`). Counts responses by status, and prints one
-- JSON line (prefixed `WRK_JSON `) with them and the latency percentiles.
--
--   WRK_TARGETS=targets.lua WRK_RUN=tag wrk -t2 -c16 -d20s --latency -s create.lua http://127.0.0.1:18080

local threads = {}
local next_id = 0

-- Runs in the main state, once per thread: give each thread an id.
function setup(thread)
    next_id = next_id + 1
    thread:set("id", next_id)
    table.insert(threads, thread)
end

-- Runs in each thread's own state.
function init(args)
    targets = dofile(os.getenv("WRK_TARGETS"))
    run = os.getenv("WRK_RUN") or tostring(os.time())
    n = 0
    statuses = {}
    math.randomseed(os.time() * 1000 + id)
end

function request()
    n = n + 1
    local t = targets[math.random(#targets)]
    local body = '{"type":"MESSAGE","reason":"Monthly promotion","channel":"WHATSAPP","commerce_id":"'
        .. t.commerce .. '","idempotency_key":"wrk-' .. run .. '-' .. id .. '-' .. n
        .. '","scheduled_at":"2025-01-16T09:00:00.000Z","attribute_keys":["loyalty_tier"]}'
    return wrk.format("POST", "/api/activities", {
        ["Authorization"] = t.auth,
        ["x-tenant-id"] = t.tenant,
        ["Content-Type"] = "application/json",
    }, body)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local counts, parts = {}, {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            counts[status] = (counts[status] or 0) + count
        end
    end
    local non_2xx = 0
    for status, count in pairs(counts) do
        table.insert(parts, string.format('"%d": %d', status, count))
        if status < 200 or status > 299 then non_2xx = non_2xx + count end
    end
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests": %d, "duration_us": %d, "requests_per_sec": %.1f, "p50_ms": %.3f, "p90_ms": %.3f, '
            .. '"p99_ms": %.3f, "max_ms": %.3f, "non_2xx": %d, "created": %d, "statuses": {%s}, '
            .. '"socket_errors": %d}\n',
        summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
        latency.max / 1e3, non_2xx, counts[201] or 0, table.concat(parts, ", "),
        e.connect + e.read + e.write + e.timeout))
end
