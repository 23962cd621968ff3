#!/usr/bin/env bash
# Installs the Debian tools the integration and end-to-end tests run for real:
# docker-registry (CNCF Distribution, the upstream) and the real clients: skopeo,
# containerd + ctr, podman, and dockerd with Debian's docker CLI (docker.io); plus what
# the harness needs: socat and iproute2 (dockerd's network namespace), openssl (test CA),
# mount (a small tmpfs for the disk-full tests) and script (a pseudo-terminal for warm);
# tinyproxy (a real forward proxy for the egress proxy tests); promtool (Debian's
# prometheus package) for the alert rule tests and to check a real /metrics scrape; and
# nginx (nginx-light) to run the deploy/nginx/ layouts. The Kubernetes
# manifests are rendered with `kubectl kustomize`, which needs kustomize v4 or later
# (components): Debian 12's kubernetes-client (1.20, kustomize v2) is too old, so kubectl
# is checked below rather than installed.
# Idempotent; a tool that is still missing afterwards is an error, never a skip.
set -euo pipefail

# tool (a command, or an absolute path) → the Debian package that provides it.
# /usr/bin/docker is Debian's CLI: another docker earlier in PATH does not count.
tools=(
  docker-registry:docker-registry
  skopeo:skopeo
  containerd:containerd
  ctr:containerd
  podman:podman
  dockerd:docker.io
  /usr/bin/docker:docker.io
  socat:socat
  ip:iproute2
  openssl:openssl
  unshare:util-linux
  nsenter:util-linux
  mount:mount
  script:bsdutils
  promtool:prometheus
  tinyproxy:tinyproxy
  nginx:nginx-light
)

have() {
  if [[ $1 == /* ]]; then [ -x "$1" ]; else command -v "$1" >/dev/null 2>&1; fi
}

need=()
for entry in "${tools[@]}"; do
  tool=${entry%%:*} package=${entry#*:}
  if ! have "$tool" && [[ " ${need[*]} " != *" $package "* ]]; then need+=("$package"); fi
done

# kubectl with kustomize v4+, for test/unit/deploy-kubernetes.test.ts.
kustomize_version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
if [ -z "$kustomize_version" ] || [ "$kustomize_version" -lt 4 ]; then
  echo "kubectl with kustomize v4 or later is missing (found: ${kustomize_version:-none}); install kubectl 1.21 or later" >&2
  exit 1
fi

if [ ${#need[@]} -eq 0 ]; then
  echo "test tools present: ${tools[*]%%:*} kubectl"
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
# No package may start a system service (dockerd, containerd, the registry, prometheus): the tests
# start their own, privately, on loopback. Debian images ship a policy-rc.d that says
# so; where there is none, one is in place for the install only.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
  trap '"${sudo[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

for entry in "${tools[@]}"; do
  tool=${entry%%:*}
  have "$tool" || { echo "$tool is still missing after apt-get" >&2; exit 1; }
done
echo "installed: ${need[*]}"
