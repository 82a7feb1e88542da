#!/usr/bin/env bash
# System services the tests start themselves: Mosquitto (the MQTT broker of the messaging tests,
# from Debian's packages). The S3 server (moto) is a Python package that setup.sh installs.
# Installs only what is missing; the tests start the broker on a free loopback port.
# `services.sh chromium` installs Debian's Chromium instead (the console's browser test).
set -euo pipefail
if [ "${1:-}" = chromium ]; then
  command -v chromium >/dev/null && exit 0
  if [ "$(id -u)" != 0 ]; then
    echo "services: chromium is missing; install it as root: apt-get install -y chromium" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
  exit 0
fi
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "services: mosquitto is missing; install it as root: apt-get install -y mosquitto" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mosquitto
  # Debian enables the packaged broker on port 1883; the tests run their own.
  if command -v systemctl >/dev/null && systemctl is-active -q mosquitto 2>/dev/null; then
    systemctl disable --now mosquitto || true
  fi
fi
