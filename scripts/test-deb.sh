#!/usr/bin/env bash
# Builds the amd64 .deb, inspects it, then installs, reconfigures, removes and
# purges it in a scratch root (dpkg --root, maintainer scripts run chrootless
# with DPKG_ROOT) and checks files, the system user and conffile handling.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
pass() { echo "test-deb: ok: $*"; }

rm -f dist/fieldgate_*_amd64.deb
deb=$(./scripts/deb.sh amd64)
[[ -f $deb ]] || fail "no package built"

# 1. Inspection.
info=$(dpkg-deb -I "$deb")
grep -q '^ Package: fieldgate' <<<"$info" || fail "package name"
grep -q '^ Architecture: amd64' <<<"$info" || fail "architecture"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/fieldgate ./lib/systemd/system/fieldgate.service ./etc/fieldgate/config.toml ./var/lib/fieldgate/; do
	grep -q " $f\$" <<<"$contents" || fail "missing $f"
done
ctl=$(mktemp -d)
root=$(mktemp -d)
trap 'rm -rf "$ctl" "$root"' EXIT
dpkg-deb -e "$deb" "$ctl"
[[ $(cat "$ctl/conffiles") == /etc/fieldgate/config.toml ]] || fail "conffiles: $(cat "$ctl/conffiles")"
for s in preinst postinst prerm postrm; do [[ -x $ctl/$s ]] || fail "no $s"; done
pass "inspection (files, conffiles, maintainer scripts)"

# 2. A scratch root with an empty dpkg database and minimal account files.
mkdir -p "$root"/var/lib/dpkg/{info,updates} "$root"/etc "$root"/var/log "$root"/usr/sbin
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ngpio:x:997:\ni2c:x:998:\n' >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
printf 'root:*::\ngpio:!::\ni2c:!::\n' >"$root/etc/gshadow"
chmod 640 "$root/etc/shadow" "$root/etc/gshadow"
DPKG=(dpkg --root="$root" --force-script-chrootless --force-not-root --force-bad-path --force-depends --log=/dev/null)

"${DPKG[@]}" -i "$deb" >/dev/null || fail "install"
[[ -x $root/usr/bin/fieldgate ]] || fail "binary not installed"
"$root/usr/bin/fieldgate" version >/dev/null || fail "installed binary does not run"
grep -q '^fieldgate:' "$root/etc/passwd" || fail "user not created"
grep -q '^gpio:.*fieldgate' "$root/etc/group" && grep -q '^i2c:.*fieldgate' "$root/etc/group" || fail "user not in gpio/i2c"
gid=$(awk -F: '$1=="fieldgate"{print $3}' "$root/etc/group")
uid=$(awk -F: '$1=="fieldgate"{print $3}' "$root/etc/passwd")
[[ $(stat -c '%u:%g %a' "$root/etc/fieldgate/config.toml") == "0:$gid 640" ]] || fail "config owner/mode $(stat -c '%u:%g %a' "$root/etc/fieldgate/config.toml")"
[[ $(stat -c '%u:%g %a' "$root/var/lib/fieldgate") == "$uid:$gid 700" ]] || fail "state dir owner/mode"
[[ $(stat -c '%a' "$root/etc/fieldgate/credentials") == 700 ]] || fail "credentials dir mode"
pass "install (files, user fieldgate in gpio+i2c, owners and modes)"

# 3. A locally modified conffile survives reinstall and remove.
echo '# site edit' >>"$root/etc/fieldgate/config.toml"
"${DPKG[@]}" --force-confold -i "$deb" >/dev/null || fail "reinstall"
grep -q '# site edit' "$root/etc/fieldgate/config.toml" || fail "reinstall replaced the modified conffile"
echo state >"$root/var/lib/fieldgate/spool.db"
"${DPKG[@]}" -r fieldgate >/dev/null || fail "remove"
[[ ! -e $root/usr/bin/fieldgate ]] || fail "binary left after remove"
grep -q '# site edit' "$root/etc/fieldgate/config.toml" || fail "remove deleted the conffile"
[[ -f $root/var/lib/fieldgate/spool.db ]] || fail "remove deleted the state"
pass "remove keeps the modified config and the state"

# 4. Purge removes config, state and the user.
"${DPKG[@]}" -P fieldgate >/dev/null || fail "purge"
[[ ! -e $root/etc/fieldgate ]] || fail "purge left /etc/fieldgate"
[[ ! -e $root/var/lib/fieldgate ]] || fail "purge left /var/lib/fieldgate"
! grep -q '^fieldgate:' "$root/etc/passwd" || fail "purge left the user"
pass "purge removes config, state and user"
echo "test-deb: 4 passed, 0 failed"
