#!/usr/bin/env bash
# Builds dist/fieldgate_<version>_<arch>.deb for the given architectures
# (default: arm64 armhf amd64) with nfpm pinned at v2.44.2.
# armhf uses GOARM=6 so the package also runs on Pi Zero / Pi 1 with
# Raspberry Pi OS (whose armhf userland is ARMv6-compatible).
set -euo pipefail
cd "$(dirname "$0")/.."
NFPM=(go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.44.2)
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
# Debian versions must start with a digit.
DEBVERSION=$VERSION
[[ $DEBVERSION =~ ^[0-9] ]] || DEBVERSION="0.0.0~git${VERSION//[^A-Za-z0-9.+~]/.}"
archs=("$@")
((${#archs[@]})) || archs=(arm64 armhf amd64)
mkdir -p dist bin
for arch in "${archs[@]}"; do
	case $arch in
	arm64) goarch=arm64 goarm= ;;
	armhf) goarch=arm goarm=6 ;;
	amd64) goarch=amd64 goarm= ;;
	*) echo "deb.sh: unknown arch $arch (arm64, armhf, amd64)" >&2; exit 2 ;;
	esac
	bin=bin/fieldgate-deb # the path packaging/nfpm.yaml packs
	CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath \
		-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT" -o "$bin" ./cmd/fieldgate
	out=dist/fieldgate_${DEBVERSION}_${arch}.deb
	NFPM_ARCH=$arch NFPM_VERSION=$DEBVERSION \
		"${NFPM[@]}" package --config packaging/nfpm.yaml --packager deb --target "$out" >/dev/null
	echo "$out"
done
