#!/usr/bin/env sh
# Install kgweave's APOC trigger: ./install.sh [--print] [--phase after] KGWEAVE_HOST[:HTTP_PORT] [DATABASE]
# KGWEAVE_HOST[:HTTP_PORT]: where kgweave serve's HTTP port answers (port 8080 when left out).
# Needs cypher-shell on PATH and NEO4J_ADDRESS / NEO4J_USERNAME / NEO4J_PASSWORD in the
# environment (an admin user: triggers are installed from the system database).
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
address="${1:?usage: install.sh [--print] KGWEAVE_HOST[:HTTP_PORT] [DATABASE]}"
database="${2:-neo4j}"
case "$address$database" in
  *"'"*|*'"'*|*' '*|*/*|*'&'*|*'\'*)
    echo "host and database must not contain quotes, spaces, '/', '&' or '\\'" >&2; exit 2 ;;
esac
case "$address" in
  *:[0-9]*) ;;
  *) address="$address:8080" ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
render() {
  sed -e "s/KGWEAVE_HOST:8080/$address/" -e "s/^  'neo4j',$/  '$database',/" \
    -e "s/^  {phase: 'afterAsync'},$/  {phase: '$phase'},/" \
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
echo "installed; APOC activates it within apoc.trigger.refresh (default 60 s)"
