"""schemathesis hooks for bazaar (loaded by scripts/schemathesis.sh via SCHEMATHESIS_HOOKS).

They only steer generated orders towards checkout; every check still judges every
response. Without them a generated `POST /api/v1/orders` almost never got past its
422s, and reserve, charge, confirm or fail never ran under the fuzzer:

- A product id is only valid if the catalog has it, which no schema can say. Each
  string `product_id` becomes one of the seeded products that scripts/schemathesis.sh
  listed in BAZAAR_PRODUCT_IDS.
- The fuzzer draws the same few short Idempotency-Key values again and again, each
  time with another body, and DESIGN.md rightly answers such a repeat with 422. A
  valid key gets a digest of the body appended, so a key is repeated only with the
  same body: replays are still exercised, and they must return the first response.

Quantities, addresses, payment tokens, invalid keys and every negative case (wrong
types, missing fields) are left as generated.
"""

import hashlib
import json
import os
import re

import schemathesis

PRODUCT_IDS = [p for p in os.environ.get("BAZAAR_PRODUCT_IDS", "").split(",") if p]
VALID_KEY = re.compile(r"[!-~]{1,255}")


# map_case rather than map_body: it also sees the coverage phase's cases.
@schemathesis.hook.apply_to(name="POST /api/v1/orders")
def map_case(context, case):
    body = case.body
    if not isinstance(body, dict):
        return case
    items = body.get("items")
    if PRODUCT_IDS and isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("product_id"), str):
                # Deterministic, as the run's seed is: the generated id picks one.
                pick = sum(item["product_id"].encode()) % len(PRODUCT_IDS)
                item["product_id"] = PRODUCT_IDS[pick]
    headers = case.headers or {}
    for name, key in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(key, str) and VALID_KEY.fullmatch(key):
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
            headers[name] = f"{key[:200]}-{digest}"
    return case
