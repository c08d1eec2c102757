#!/usr/bin/env bash
# run.sh — hardware-in-the-loop test in a VM (make hil). Not part of CI: it
# downloads a Debian kernel and its sources and takes a few minutes.
#
# qemu-system-x86_64 boots Debian's kernel with an initramfs holding a static
# fieldgate, busybox and gpio-sim (the kernel's GPIO simulator). Debian does
# not build gpio-sim (nor the irq_sim it needs), so both are compiled here
# from Debian's own kernel sources as one out-of-tree module. Inside the VM
# (init) fieldgate reads and drives simulated lines through the real Linux
# GPIO character device, /dev/gpiochip0, via periph's gpioioctl driver; the
# guest prints PASS/FAIL lines on the serial console and this script fails
# unless every check passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
TIMEOUT=${HIL_TIMEOUT:-300}

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[[ -x /bin/busybox && $(file -L /bin/busybox 2>/dev/null || true) == *static* ]] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc)
command -v xz >/dev/null || need+=(xz-utils)
command -v file >/dev/null || need+=(file)
kver() { ls /lib/modules 2>/dev/null | grep -E '^[0-9.]+-[0-9]+-amd64$' | sort -V | tail -1; }
[[ -n "$(kver)" && -e /boot/vmlinuz-$(kver) ]] || need+=(linux-image-amd64)
if ((${#need[@]})); then
	echo "hil: installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
KVER=$(kver)
series=$(echo "$KVER" | cut -d. -f1,2)
if [[ ! -d /usr/src/linux-headers-$KVER ]]; then
	echo "hil: installing linux-headers-$KVER"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "linux-headers-$KVER" >/dev/null
fi

work=$(mktemp -d)
[[ -n "${HIL_KEEP:-}" ]] || trap 'rm -rf "$work"' EXIT

# gpio-sim + irq_sim from Debian's kernel sources, as one module.
echo "hil: building gpio-sim for $KVER"
(cd "$work" && apt-get download -qq "linux-source-$series" 2>/dev/null)
dpkg-deb --fsys-tarfile "$work"/linux-source-"$series"_*.deb | tar -x -C "$work" "./usr/src/linux-source-$series.tar.xz"
tar -xJf "$work/usr/src/linux-source-$series.tar.xz" -C "$work" \
	"linux-source-$series/drivers/gpio/gpio-sim.c" "linux-source-$series/drivers/gpio/gpiolib.h" \
	"linux-source-$series/kernel/irq/irq_sim.c"
mkdir "$work/mod"
cp "$work/linux-source-$series"/drivers/gpio/{gpio-sim.c,gpiolib.h} "$work/linux-source-$series/kernel/irq/irq_sim.c" "$work/mod/"
# irq_to_desc is not exported to modules; generic_handle_irq does the same here.
sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$work/mod/irq_sim.c"
printf 'obj-m := gpio-sim-hil.o\ngpio-sim-hil-y := gpio-sim.o irq_sim.o\n' >"$work/mod/Kbuild"
make -s -C "/usr/src/linux-headers-$KVER" M="$work/mod" modules >"$work/mod/build.log" 2>&1 || {
	cat "$work/mod/build.log"
	exit 1
}

echo "hil: building fieldgate and fieldgate-emulator (static, amd64)"
for b in fieldgate fieldgate-emulator; do
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath -ldflags='-s -w' -o "$work/$b" "./cmd/$b"
done
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath -ldflags='-s -w' -o "$work/hil-svc" scripts/hil/svc.go

echo "hil: assembling the initramfs"
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,hil,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do [[ $app == busybox ]] || ln -sf busybox "$root/bin/$app"; done
cp "$work/fieldgate" "$work/fieldgate-emulator" "$work/hil-svc" "$root/bin/"
cp "$work/mod/gpio-sim-hil.ko" "$root/lib/modules/"
configfs=$(find "/lib/modules/$KVER" -name 'configfs.ko*' | head -1)
case "$configfs" in
*.xz) xz -dc "$configfs" >"$root/lib/modules/configfs.ko" ;;
*.zst) zstd -qdc "$configfs" >"$root/lib/modules/configfs.ko" ;;
*) cp "$configfs" "$root/lib/modules/configfs.ko" ;;
esac
for m in i2c-dev i2c-stub; do
	f=$(find "/lib/modules/$KVER" -name "$m.ko*" | head -1)
	case "$f" in
	*.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
	*.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
	*) cp "$f" "$root/lib/modules/$m.ko" ;;
	esac
done
cp scripts/hil/init "$root/init"
cp scripts/hil/*.toml "$root/hil/"
chmod 0755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.gz"

echo "hil: booting $KVER under qemu (TCG; up to ${TIMEOUT}s)"
start=$(date +%s)
set +e
timeout "$TIMEOUT" qemu-system-x86_64 -m 768 -smp 2 -nographic -no-reboot \
	-kernel "/boot/vmlinuz-$KVER" -initrd "$work/initramfs.gz" \
	-append "console=ttyS0 panic=-1 loglevel=4" | tee "$work/console.log" | grep --line-buffered -E '^(HIL|fieldgate)'
set -e
echo "hil: VM ran $(($(date +%s) - start)) s"
pass=$(grep -c '^HIL PASS' "$work/console.log" || true)
fail=$(grep -c '^HIL FAIL' "$work/console.log" || true)
if ! grep -q '^HIL DONE' "$work/console.log"; then
	echo "hil: the VM did not finish (timeout or crash); console:"
	tail -40 "$work/console.log"
	exit 1
fi
echo "hil: $pass passed, $fail failed"
((fail == 0 && pass > 0))
