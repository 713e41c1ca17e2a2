#!/usr/bin/env bash
# Load kgweave's Cypher functions into a FalkorDB server (GRAPH.UDF LOAD REPLACE kgweave ...).
# kgweave does this itself on every write-back; use this for a server it does not write to.
#   procedures/falkordb/install.sh [HOST] [PORT]      (default 127.0.0.1 6379; REDISCLI_AUTH for a password)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
script="$here/../../server/kgweave/graph/udf/kgweave.js"
host="${1:-127.0.0.1}"
port="${2:-6379}"
# the library reads the default mapping's names; kgweave substitutes its own at write-back
body="$(sed -e 's/__EMBEDDING__/embedding/g' -e 's/__SEARCH__/kgweave_search/g' \
            -e 's/__RELATION__/KGWEAVE_Relation/g' "$script")"
redis-cli -h "$host" -p "$port" GRAPH.UDF LOAD REPLACE kgweave "$body"
