#!/usr/bin/env bash
# make demo: the emulator (IoT Hub + DPS) and the agent with simulated sensors,
# telemetry visibly flowing, until Ctrl-C. State lives in ./demo (created once
# by `fieldgate-emulator init`; delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEMO_DIR:-demo}
BIN=bin

if [[ ! -f "$DIR/emulator.toml" ]]; then
	echo "demo: creating $DIR (keys, throwaway CA, emulator.toml, agent.toml)"
	"$BIN/fieldgate-emulator" init "$DIR"
fi

pids=()
cleanup() {
	trap - EXIT INT TERM
	echo
	echo "demo: stopping"
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "demo: logs are in $DIR/emulator.log and $DIR/agent.log"
}
trap cleanup EXIT INT TERM

"$BIN/fieldgate-emulator" run --config "$DIR/emulator.toml" 2>"$DIR/emulator.log" &
pids+=($!)

# Wait (bounded) for the emulator's HTTPS listener before starting the agent.
https=$(sed -n 's/^https_addr *= *"\([^"]*\)".*/\1/p' "$DIR/emulator.toml")
https=${https:-127.0.0.1:8443}
for _ in $(seq 1 100); do
	if (exec 3<>"/dev/tcp/${https%:*}/${https##*:}") 2>/dev/null; then break; fi
	sleep 0.1
done

"$BIN/fieldgate" run --config "$DIR/agent.toml" 2>"$DIR/agent.log" &
pids+=($!)

echo "demo: emulator and agent running; telemetry below (Ctrl-C to stop)"
echo "demo: agent log: tail -f $DIR/agent.log   emulator log: tail -f $DIR/emulator.log"
"$BIN/fieldgate-emulator" watch --config "$DIR/emulator.toml" &
pids+=($!)
wait "${pids[-1]}"
