#!/usr/bin/env sh
# Install kgweave's APOC trigger: ./install.sh KGWEAVE_HOST [DATABASE]
# Needs cypher-shell on PATH and NEO4J_ADDRESS / NEO4J_USERNAME / NEO4J_PASSWORD in the
# environment (an admin user: triggers are installed from the system database).
set -eu
host="${1:?usage: install.sh KGWEAVE_HOST [DATABASE]}"
database="${2:-neo4j}"
case "$host$database" in
  *"'"*|*'"'*|*' '*) echo "host and database must not contain quotes or spaces" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
sed -e "s/KGWEAVE_HOST/$host/" -e "s/^  'neo4j',$/  '$database',/" \
  "$here/kgweave-trigger.cypher" | cypher-shell -d system
echo "installed; APOC activates it within apoc.trigger.refresh (default 60 s)"
