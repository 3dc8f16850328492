#!/usr/bin/env bash
# Against a running `reten serve` (README, first command): provisions a tenant
# and a commerce through the API, then creates the seed's example activity
# with curl and prints the 201.
#
#   RETEN_JWT_SECRET must be the secret the server was started with.
#   RETEN_URL defaults to http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

url=${RETEN_URL:-http://127.0.0.1:8080}
: "${RETEN_JWT_SECRET:=dev-only-secret-change-me-0123456789}"
export RETEN_JWT_SECRET
reten() { cargo run --release --quiet --bin reten -- "$@"; }

root=$(reten token --sub quickstart --role SUPER_ADMIN --ttl 10m)
slug="quickstart-$(date +%s)"
tenant=$(curl -sf -X POST "$url/api/tenant/setup" \
    -H "Authorization: Bearer $root" -H "Content-Type: application/json" \
    -d "{\"name\": \"Quickstart\", \"slug\": \"$slug\"}" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
echo "tenant:   $tenant"

token=$(reten token --sub quickstart --tenant "$tenant" --role ADMIN --ttl 1h)
curl -sf -X POST "$url/api/commerces/sync" \
    -H "Authorization: Bearer $token" -H "x-tenant-id: $tenant" -H "Content-Type: application/json" \
    -d @examples/commerce.json >/dev/null
commerce=$(curl -sf "$url/api/commerces?external_id=c-1" \
    -H "Authorization: Bearer $token" -H "x-tenant-id: $tenant" | sed -n 's/.*"data":\[{"id":"\([^"]*\)".*/\1/p')
echo "commerce: $commerce"
echo

curl -s -X POST "$url/api/activities" \
    -H "Authorization: Bearer $token" \
    -H "x-tenant-id: $tenant" \
    -H "Content-Type: application/json" \
    -d "{
  \"type\": \"MESSAGE\",
  \"reason\": \"Monthly promotion\",
  \"channel\": \"WHATSAPP\",
  \"commerce_id\": \"$commerce\",
  \"idempotency_key\": \"msg-2025-01-15-001\",
  \"scheduled_at\": \"2025-01-16T09:00:00.000Z\",
  \"attribute_keys\": [\"commerce_info\"]
}"
echo
