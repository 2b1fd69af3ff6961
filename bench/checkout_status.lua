-- wrk script: bench/checkout.lua's requests (one-line orders for random products),
-- plus a tally of the answers by class, printed by done() as one line:
--
--   STATUS 201_confirmed=N 201_failed=N 201_other=N 202=N 4xx=N 5xx=N other=N
--
-- 201 means the order reached a terminal state within checkout_wait_ms (its body says
-- whether it was confirmed or failed); 202 means it was still pending. TOKEN and
-- PRODUCTS come from the environment (see checkout.lua); BENCH_DIR is where
-- checkout.lua lives (default: bench, relative to the working directory).
dofile((os.getenv("BENCH_DIR") or "bench") .. "/checkout.lua")

-- Globals, so that done() (in wrk's main Lua state) can read each thread's counts.
c201_confirmed, c201_failed, c201_other, c202, c4xx, c5xx, cother = 0, 0, 0, 0, 0, 0, 0

local threads = {}
setup = function(thread)
  threads[#threads + 1] = thread
end

response = function(status, headers, body)
  if status == 201 then
    if body and string.find(body, '"status":"confirmed"', 1, true) then
      c201_confirmed = c201_confirmed + 1
    elseif body and string.find(body, '"status":"failed"', 1, true) then
      c201_failed = c201_failed + 1
    else
      c201_other = c201_other + 1
    end
  elseif status == 202 then
    c202 = c202 + 1
  elseif status >= 400 and status < 500 then
    c4xx = c4xx + 1
  elseif status >= 500 and status < 600 then
    c5xx = c5xx + 1
  else
    cother = cother + 1
  end
end

done = function(summary, latency, requests)
  local names = { "c201_confirmed", "c201_failed", "c201_other", "c202", "c4xx", "c5xx", "cother" }
  local labels = { "201_confirmed", "201_failed", "201_other", "202", "4xx", "5xx", "other" }
  local totals = {}
  for i = 1, #names do totals[i] = 0 end
  for _, thread in ipairs(threads) do
    for i, name in ipairs(names) do
      totals[i] = totals[i] + (tonumber(thread:get(name)) or 0)
    end
  end
  local parts = {}
  for i, label in ipairs(labels) do
    parts[#parts + 1] = label .. "=" .. totals[i]
  end
  io.write("STATUS " .. table.concat(parts, " ") .. "\n")
end
