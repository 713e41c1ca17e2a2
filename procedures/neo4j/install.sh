#!/usr/bin/env bash
# Install kgweave's APOC trigger:
#   ./install.sh [--print] [--phase after] KGWEAVE_HOST[:HTTP_PORT]|KGWEAVE_URL [DATABASE]
# KGWEAVE_HOST[:HTTP_PORT]: where kgweave serve's HTTP port answers (http, port 8080 when left
# out); or a URL (https://kgweave.internal:8080 for a kgweave serving TLS).
# Needs cypher-shell on PATH and NEO4J_ADDRESS / NEO4J_USERNAME / NEO4J_PASSWORD in the
# environment (an admin user: triggers are installed from the system database); with auth on in
# kgweave, KGWEAVE_TOKEN (its admin token: change events are an admin operation).
# --print writes the statement to stdout instead (run it against the system database with a
# driver or Neo4j Browser; kgweave's tests do that with the official Python driver).
# --phase after posts in the committing thread, after the commit (see README.md: APOC's default
# afterAsync phase can drop a transaction's changes; with after, each commit waits for the POST
# and, when kgweave is unreachable, clients see an error for writes that did commit).
set -eu
print=no
phase=afterAsync
while :; do
  case "${1:-}" in
    --print) print=yes; shift ;;
    --phase) phase="${2:?--phase needs after or afterAsync}"; shift 2 ;;
    *) break ;;
  esac
done
case "$phase" in after|afterAsync) ;; *) echo "--phase: after or afterAsync" >&2; exit 2 ;; esac
address="${1:?usage: install.sh [--print] [--phase after] KGWEAVE_HOST[:HTTP_PORT]|KGWEAVE_URL [DATABASE]}"
database="${2:-neo4j}"
token="${KGWEAVE_TOKEN:-}"
case "$address$database$token" in
  *"'"*|*'"'*|*' '*|*'|'*|*'&'*|*'\'*)
    echo "host, database and token must not contain quotes, spaces, |, & or \\" >&2; exit 2 ;;
esac
case "$address" in
  *://*) url="${address%/}" ;;
  *:[0-9]*) url="http://$address" ;;
  *) url="http://$address:8080" ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
render() {
  sed -e "s|KGWEAVE_URL|$url|" -e "s|KGWEAVE_TOKEN|$token|" \
    -e "s/^  'neo4j',$/  '$database',/" -e "s/^  {phase: 'afterAsync'},$/  {phase: '$phase'},/" \
    "$here/kgweave-trigger.cypher"
}
if [ "$print" = yes ]; then
  render
  exit 0
fi
if ! command -v cypher-shell >/dev/null 2>&1; then
  echo "cypher-shell not found on PATH: install it, or use --print and run the statement yourself" >&2
  exit 2
fi
render | cypher-shell -d system
