-- wrk script: GET /api/v1/products/{id}, the ids taken round-robin from PRODUCTS
-- (comma-separated, from the environment), so every product is read in turn.
local paths = {}
for id in string.gmatch(os.getenv("PRODUCTS") or "", "[^,]+") do
  paths[#paths + 1] = "/api/v1/products/" .. id
end
if #paths == 0 then
  error("PRODUCTS (comma-separated product ids) is empty")
end

local requests = {}
local next_index = 0

-- Formatted once per thread, after wrk has set the Host header.
init = function(args)
  for i, path in ipairs(paths) do
    requests[i] = wrk.format("GET", path)
  end
end

request = function()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
