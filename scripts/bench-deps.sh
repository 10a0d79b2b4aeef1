#!/usr/bin/env bash
# Reference servers the benchmarks compare against (Postfix + smtp-source, Dovecot) and the
# profiler used to find hot spots. Not needed by the test suite, so not in test-deps.sh.
# Run from the project root once `make` has created .venv. Idempotent. Postfix and Dovecot are
# installed but never used as system services: the benchmarks start private instances with
# their own configuration on free loopback ports.
set -euo pipefail
PACKAGES=(postfix dovecot-imapd)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi
# Debian starts the services on install; the benchmarks run their own instances.
$SUDO postfix stop >/dev/null 2>&1 || true
$SUDO doveadm stop >/dev/null 2>&1 || true
# The sampling profiler the docs' "where the time goes" figures come from.
if [ -x .venv/bin/pip ]; then
  .venv/bin/pip install -q py-spy
fi
