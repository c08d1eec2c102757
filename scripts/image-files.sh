#!/usr/bin/env bash
# Lays out fieldgate's files for an OS image build (a pi-gen stage's files/
# directory, or a chroot): one image for a whole fleet, no per-device step.
# Each board derives its registration id from its serial (gw-{serial}); its
# key comes from /etc/fieldgate/credentials/device-key, written by the
# factory line (recommended, see docs/deployment.md) — or, with
# --group-key FILE, the enrollment-group key is baked in and every device
# derives its own key at start.
#
# usage: scripts/image-files.sh DESTDIR [--arch arm64|armhf] [--id-scope SCOPE] [--group-key FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: scripts/image-files.sh DESTDIR [--arch arm64|armhf] [--id-scope SCOPE] [--group-key FILE]}
shift
arch=arm64 scope=0ne00000000 groupkey=
while (($#)); do
	case $1 in
	--arch) arch=$2; shift 2 ;;
	--id-scope) scope=$2; shift 2 ;;
	--group-key) groupkey=$2; shift 2 ;;
	*) echo "image-files: unknown argument $1" >&2; exit 2 ;;
	esac
done
case $arch in
arm64) goarch=arm64 goarm= ;;
armhf) goarch=arm goarm=6 ;;
*) echo "image-files: --arch must be arm64 or armhf" >&2; exit 2 ;;
esac
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
install -d -m 0755 "$dest/usr/bin" "$dest/lib/systemd/system" "$dest/etc/systemd/system/multi-user.target.wants" \
	"$dest/usr/lib/sysusers.d" "$dest/usr/lib/tmpfiles.d" "$dest/usr/share/doc/fieldgate"
install -d -m 0750 "$dest/etc/fieldgate"
install -d -m 0700 "$dest/etc/fieldgate/credentials"
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath \
	-ldflags "-s -w -X main.version=$VERSION" -o "$dest/usr/bin/fieldgate" ./cmd/fieldgate
install -m 0644 systemd/fieldgate.service "$dest/lib/systemd/system/fieldgate.service"
install -m 0644 systemd/step-clock.conf configs/fieldgate.toml "$dest/usr/share/doc/fieldgate/"
ln -sf /lib/systemd/system/fieldgate.service "$dest/etc/systemd/system/multi-user.target.wants/fieldgate.service"
# The user and directories exist at first boot without maintainer scripts.
cat >"$dest/usr/lib/sysusers.d/fieldgate.conf" <<'SYSUSERS'
g fieldgate - -
u fieldgate - "fieldgate agent" /var/lib/fieldgate /usr/sbin/nologin
m fieldgate gpio
m fieldgate i2c
SYSUSERS
cat >"$dest/usr/lib/tmpfiles.d/fieldgate.conf" <<'TMPFILES'
d /etc/fieldgate 0750 root fieldgate -
z /etc/fieldgate/config.toml 0640 root fieldgate -
d /etc/fieldgate/credentials 0700 root root -
TMPFILES
if [[ -n $groupkey ]]; then
	install -m 0600 "$groupkey" "$dest/etc/fieldgate/credentials/group-key"
	attestation='group_key_file = "/etc/fieldgate/credentials/group-key"'
	echo "image-files: WARNING: the group key is baked into the image; any device can derive every device key. Prefer factory derivation (docs/deployment.md)." >&2
else
	attestation='key_credential = "fieldgate_device-key"   # /etc/fieldgate/credentials/device-key, written by the factory line'
fi
cat >"$dest/etc/fieldgate/config.toml" <<CONFIG
# fieldgate fleet image configuration (docs/deployment.md).
[state]
dir = "/var/lib/fieldgate"

[provisioning]
source = "dps"
id_scope = "$scope"
registration_id = "gw-{serial}"

[provisioning.attestation]
method = "symmetric_key"
$attestation

[[sensor]]
name = "gateway"
kind = "simulated"
values = ["temperature_c"]
CONFIG
chmod 0640 "$dest/etc/fieldgate/config.toml"
echo "image-files: laid out in $dest ($arch)"
