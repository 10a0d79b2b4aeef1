#!/usr/bin/env bash
# System packages the test suite drives as real peers (openssl, swaks, chromium, mbsync …).
# Idempotent: installs only what is missing. Run by `make test` (and so by .ci/run).
set -euo pipefail
PACKAGES=(
  openssl
  curl
  isync
  offlineimap3
  chromium
  swaks
  libnet-ssleay-perl  # swaks's STARTTLS/TLS (only "Recommends", which we do not install)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    echo "test-deps: please install: ${missing[*]}" >&2
    exit 0
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
