#!/usr/bin/env sh
# Install kgweave's APOC trigger: ./install.sh KGWEAVE_HOST|KGWEAVE_URL [DATABASE]
# (a bare host means http://HOST:8080; give https://host:port for a kgweave serving TLS).
# Needs cypher-shell on PATH and NEO4J_ADDRESS / NEO4J_USERNAME / NEO4J_PASSWORD in the
# environment (an admin user: triggers are installed from the system database); with auth on
# in kgweave, KGWEAVE_TOKEN (its admin token: change events are an admin operation).
set -eu
host="${1:?usage: install.sh KGWEAVE_HOST|KGWEAVE_URL [DATABASE]}"
database="${2:-neo4j}"
token="${KGWEAVE_TOKEN:-}"
case "$host$database$token" in
  *"'"*|*'"'*|*' '*|*'|'*|*'\'*|*'&'*)
    echo "host, database and token must not contain quotes, spaces, |, & or \\" >&2; exit 2 ;;
esac
case "$host" in
  *://*) url="${host%/}" ;;
  *) url="http://$host:8080" ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
sed -e "s|KGWEAVE_URL|$url|" -e "s|KGWEAVE_TOKEN|$token|" -e "s/^  'neo4j',$/  '$database',/" \
  "$here/kgweave-trigger.cypher" | cypher-shell -d system
echo "installed; APOC activates it within apoc.trigger.refresh (default 60 s)"
