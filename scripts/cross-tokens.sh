#!/usr/bin/env bash
# cross-tokens.sh [BIN_DIR] — proves that the arm64, armv7 and armv6 builds of
# fieldgate print byte-identical tokens and derived keys to the host build for
# the same inputs, and reproduce the published vectors
# (shared/docs/azure-iot-protocol.md §1.6, §1.7). The ARM binaries run under
# qemu-user with the CPU of a real board, so an armv7 instruction in the armv6
# build fails here. It also checks that "version --json" reports the platform
# and, when VERSION/COMMIT are set (make does), the -ldflags -X values.
#
# Expects BIN_DIR/fieldgate, fieldgate-linux-arm64, -armv7, -armv6 (make
# check-cross-tokens builds them).
set -euo pipefail

bin=${1:-bin}
: "${QEMU_ARM64:=qemu-aarch64-static -cpu cortex-a53}"
: "${QEMU_ARMV7:=qemu-arm-static -cpu cortex-a7}"
: "${QEMU_ARMV6:=qemu-arm-static -cpu arm1176}"

targets=(host arm64 armv7 armv6)

# set_cmd TARGET: sets the array cmd to the command line that runs TARGET.
set_cmd() {
	local q
	case $1 in
	host) cmd=("$bin/fieldgate") ;;
	arm64) read -ra q <<<"$QEMU_ARM64" && cmd=("${q[@]}" "$bin/fieldgate-linux-arm64") ;;
	armv7) read -ra q <<<"$QEMU_ARMV7" && cmd=("${q[@]}" "$bin/fieldgate-linux-armv7") ;;
	armv6) read -ra q <<<"$QEMU_ARMV6" && cmd=("${q[@]}" "$bin/fieldgate-linux-armv6") ;;
	esac
}

for f in fieldgate fieldgate-linux-arm64 fieldgate-linux-armv7 fieldgate-linux-armv6; do
	[[ -x $bin/$f ]] || { echo "cross-tokens: $bin/$f is missing; run: make check-cross-tokens" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

v6key='18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=='
groupkey='8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=='
regid='sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6'
derived='Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc='
keyfile=$tmp/device.key
(umask 077 && printf '%s\n' "$derived" >"$keyfile")

passed=0
failed=0

# check NAME WANT STDIN ARGS... — runs "fieldgate ARGS..." with STDIN on every
# target; the outputs must be identical to the host's and, when WANT is not
# empty, equal to WANT plus a newline.
check() {
	local name=$1 want=$2 stdin=$3 t status
	shift 3
	if [[ -n $want ]]; then printf '%s\n' "$want" >"$tmp/want"; fi
	for t in "${targets[@]}"; do
		set_cmd "$t"
		status=0
		printf '%s' "$stdin" | "${cmd[@]}" "$@" >"$tmp/$t.out" 2>"$tmp/$t.err" || status=$?
		if ((status != 0)); then
			echo "FAIL $name [$t]: exit status $status: $(head -c 300 "$tmp/$t.err")"
			failed=$((failed + 1))
		elif ! cmp -s "$tmp/host.out" "$tmp/$t.out"; then
			echo "FAIL $name [$t]: output differs from the host build:"
			diff "$tmp/host.out" "$tmp/$t.out" || true
			failed=$((failed + 1))
		elif [[ -n $want ]] && ! cmp -s "$tmp/want" "$tmp/$t.out"; then
			echo "FAIL $name [$t]: output differs from the expected vector:"
			diff "$tmp/want" "$tmp/$t.out" || true
			failed=$((failed + 1))
		else
			passed=$((passed + 1))
		fi
	done
	echo "cross-tokens: $name: checked on ${targets[*]}"
}

check "V5 hub policy token (published)" \
	'SharedAccessSignature sr=test.azure-devices.net&sig=uux4PSAK1s9efNcBHin0pm7O5oENedTWkhqGp8JAyFY%3D&se=1546308061&skn=owner' '' \
	token --resource test.azure-devices.net --key c2VjcmV0 --key-name owner --expiry 1546308061
check "V6 hub device token (published)" \
	'SharedAccessSignature sr=MyExampleHub.azure-devices.net%2Fdevices%2Fmy-symkey-device&sig=f%2BwW8XOKeJOtiPc9Iwjc4OpExvPM7NlhM9qxN2a1aAM%3D&se=1663119026' '' \
	token --hub MyExampleHub.azure-devices.net --device my-symkey-device --key "$v6key" --expiry 1663119026
check "derived device key (published)" "$derived" "$groupkey"$'\n' \
	derive-key --group-key-file - --registration-id "$regid"
check "DPS registration token from a key file" \
	'SharedAccessSignature sr=0ne00000000%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=UcaBdA4L3Se7NlFQZcBFRndkqyymINWtRUmVT5QYWng%3D&se=1700000000&skn=registration' '' \
	token --dps-scope 0ne00000000 --registration-id "$regid" --key-file "$keyfile" --expiry 1700000000
check "hub module token, key on stdin" \
	'SharedAccessSignature sr=example-hub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1&sig=Zaz%2B8KWlY4qtVMWSzuJS6wFTR6hH%2BL%2BSqgIY6qC%2F2zs%3D&se=1700000000' "$derived"$'\n' \
	token --hub example-hub.azure-devices.net --device dev1 --module mod1 --key - --expiry 1700000000
check "model repository token" \
	'SharedAccessSignature sr=repo.azureiotrepository.com&sig=f24QMW4fClr7DXzULfeKMxp0QvJIgcyIX7K%2FNKYSXis%3D&se=1700000000&skn=reader&rid=a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d' '' \
	token --model-repo repo.azureiotrepository.com --repo-id a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d --key-name reader --key c2VjcmV0 --expiry 1700000000
check "Service Bus token with a UTF-8 key" \
	'SharedAccessSignature sr=sb%3A%2F%2Fmyns.servicebus.windows.net%2Fmyqueue&sig=ooZedCSMrnuBgxsEfGHCwSfV0kPbU%2FYqGH%2Fq7Y%2FmsaU%3D&se=1700000000&skn=RootManageSharedAccessKey' '' \
	token --resource sb://myns.servicebus.windows.net/myqueue --key-name RootManageSharedAccessKey --key my-utf8-secret-value --key-encoding utf8 --expiry 1700000000
check "expiry after 2038 (64-bit se on 32-bit ARM)" '' '' \
	token --hub example-hub.azure-devices.net --device "$regid" --key-file "$keyfile" --expiry 4102444800
check "non-ASCII resource" '' '' \
	token --resource 'hub.example/devices/dëv ice+%/x' --key c2VjcmV0 --expiry 1700000000

# version --json: platform, and the link-time version and commit.
declare -A want_platform=([arm64]='"arch":"arm64"' [armv7]='"goarm":"7"' [armv6]='"goarm":"6"')
for t in "${targets[@]}"; do
	set_cmd "$t"
	status=0
	out=$("${cmd[@]}" version --json 2>&1) || status=$?
	ok=1
	((status == 0)) || ok=0
	if [[ $t != host && $out != *"${want_platform[$t]}"* ]]; then ok=0; fi
	if [[ -n ${VERSION:-} && $out != *"\"version\":\"$VERSION\""* ]]; then ok=0; fi
	if [[ -n ${COMMIT:-} && $out != *"\"commit\":\"$COMMIT\""* ]]; then ok=0; fi
	if ((ok)); then
		passed=$((passed + 1))
	else
		echo "FAIL version --json [$t]: exit status $status: $out"
		failed=$((failed + 1))
	fi
done
echo "cross-tokens: version --json: checked on ${targets[*]}"

echo "cross-tokens: $passed passed, $failed failed"
((failed == 0))
