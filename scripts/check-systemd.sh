#!/usr/bin/env bash
# Checks systemd/fieldgate.service: `systemd-analyze verify` must be clean and
# the offline security exposure must be at most MAX_EXPOSURE (2.0).
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
unit=systemd/fieldgate.service
command -v systemd-analyze >/dev/null || { echo "check-systemd: systemd-analyze not found (apt-get install -y systemd)" >&2; exit 1; }
[[ -x bin/fieldgate ]] || { echo "check-systemd: bin/fieldgate missing; run make build" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify checks that ExecStart exists: point it at the freshly built binary.
sed "s#/usr/bin/fieldgate#$PWD/bin/fieldgate#" "$unit" >"$tmp/fieldgate.service"
out=$(systemd-analyze verify "$tmp/fieldgate.service" 2>&1) || { echo "$out" >&2; echo "check-systemd: verify failed" >&2; exit 1; }
if [[ -n $out ]]; then
	echo "$out" >&2
	echo "check-systemd: verify printed warnings" >&2
	exit 1
fi
echo "check-systemd: systemd-analyze verify clean"

line=$(systemd-analyze security --offline=true "$unit" | tail -n 1)
score=$(sed -n 's/.*exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$line")
[[ -n $score ]] || { echo "check-systemd: could not read the exposure score from: $line" >&2; exit 1; }
echo "check-systemd: exposure $score (limit $MAX_EXPOSURE)"
awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' || { echo "check-systemd: exposure $score is above $MAX_EXPOSURE" >&2; exit 1; }
