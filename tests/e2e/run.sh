#!/usr/bin/env bash
# End-to-end: `chatwarden dev` and Microsoft's local Teams client (npm
# @microsoft/m365agentsplayground), driven headless through the client's own HTTP API.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatwarden-target}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/chatwarden/e2e"
mkdir -p "$cache"
cp "$here/package.json" "$here/package-lock.json" "$here/drive.mjs" "$cache/"
(cd "$cache" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
(cd "$root" && cargo build --locked --quiet)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
work="$(mktemp -d)"
bot_port="$(free_port)"
pg_port="$(free_port)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Two of the local client's users are admins (Alex Wilber, the signed-in user, and Megan Bowen);
# the others are channel members who may only look. Every decision needs a reason, as in `serve`.
CHATWARDEN_BIND="127.0.0.1:$bot_port" CHATWARDEN_DATABASE_URL="sqlite://$work/chatwarden.db" \
  CHATWARDEN_ADMINS="00000000-0000-0000-0000-0000000000020,00000000-0000-0000-0000-0000000000021" \
  CHATWARDEN_REQUIRE_REASON=true \
  "$CARGO_TARGET_DIR/debug/chatwarden" dev >"$work/chatwarden.log" 2>&1 &
pids+=($!)
(cd "$work" && TEAMSAPPTESTER_BROWSER=none exec node "$cache/node_modules/@microsoft/m365agentsplayground/cli.js" \
  -e "http://127.0.0.1:$bot_port/api/messages" -c msteams -p "$pg_port" --disable-telemetry >"$work/playground.log" 2>&1) &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:$bot_port/healthz" >/dev/null && curl -fs "http://127.0.0.1:$pg_port/_debug/ping" >/dev/null; then break; fi
  sleep 0.2
done

status=0
(cd "$cache" && BOT="http://127.0.0.1:$bot_port" PG="http://127.0.0.1:$pg_port" node "$cache/drive.mjs") || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- chatwarden log"; tail -n 60 "$work/chatwarden.log"
  echo "--- playground log"; tail -n 30 "$work/playground.log"
fi
exit "$status"
