-- wrk script: each request places a one-line order for a random product.
-- TOKEN and PRODUCTS (comma-separated ids) come from the environment.
local token = os.getenv("TOKEN")
local products = {}
for id in string.gmatch(os.getenv("PRODUCTS") or "", "[^,]+") do
  products[#products + 1] = id
end
local address = '{"name":"Bench","line1":"1 Load St","city":"Testville","postal_code":"12345","country":"US"}'

request = function()
  local id = products[math.random(#products)]
  local body = '{"items":[{"product_id":"' .. id .. '","quantity":1}],"shipping_address":' .. address .. ',"payment_token":"tok_visa"}'
  return wrk.format("POST", "/api/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
