#!/usr/bin/env bash
# Installs the Debian tools the integration and end-to-end tests run for real:
# docker-registry (CNCF Distribution, the upstream), skopeo and containerd (real clients).
# Idempotent; a tool that is still missing afterwards is an error, never a skip.
set -euo pipefail

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v ctr >/dev/null 2>&1 || need+=(containerd)

if [ ${#need[@]} -eq 0 ]; then
  echo "test tools present: docker-registry, skopeo, containerd"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "missing ${need[*]}: run as root or install them with apt-get" >&2
    exit 1
  fi
fi

echo "installing test tools with apt-get: ${need[*]}"
# Debian's policy-rc.d stops packages from starting system services; the tests start
# their own registry on random loopback ports.
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

for tool in docker-registry skopeo containerd ctr; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is still missing after apt-get" >&2; exit 1; }
done
echo "installed: ${need[*]}"
