#!/usr/bin/env bash
# Installs the Debian tools `npm run bench` runs for real, beside the test tools:
# docker-registry (the upstream, and Distribution in proxy mode), skopeo (a real
# client), nginx (the warm-hit physical reference: sendfile from the same files) and
# wrk (the load generator). Idempotent; a tool still missing afterwards is an error.
# CI does not run benchmarks, so nothing else calls this.
set -euo pipefail

declare -A package_of=(
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [nginx]=nginx
  [wrk]=wrk
)
need=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("${package_of[$tool]}")
done

if [ ${#need[@]} -eq 0 ]; then
  echo "bench tools present: ${!package_of[*]}"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "missing ${need[*]}: run as root or install them with apt-get" >&2
    exit 1
  fi
fi

echo "installing bench tools with apt-get: ${need[*]}"
# Debian's policy-rc.d keeps packages from starting system services (nginx on :80);
# the bench starts its own processes on ephemeral loopback ports.
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "$tool is still missing after apt-get" >&2; exit 1; }
done
echo "installed: ${need[*]}"
