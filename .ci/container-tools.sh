#!/usr/bin/env bash
# Podman on these machines, for the image test (tests/test_docker_image.py) and by hand.
#
#   container-tools.sh install    apt-get the Debian tools if any is missing (idempotent)
#   container-tools.sh base IMG [PREFIX]
#                                 write the engine config and make IMG (e.g. python:3.11-slim)
#                                 from a debootstrapped Debian bookworm, unless it exists. With
#                                 PREFIX (sys.base_prefix of a CPython built from source, such as
#                                 pyenv's), that Python goes to /usr/local with pip, as in the
#                                 official image; without, Debian's python3 (3.11.2) stands in
#   container-tools.sh env        print the exports that point podman at the private store
#   container-tools.sh netclean   remove the CNI bridge, its iptables chains and ip_forward,
#                                 if (and only if) the bridge did not exist before `base`
#   container-tools.sh purge      remove every container and image of the private store
#
# Why each setting: runc because crun refuses this cgroup layout;
# ulimits capped at the hard limits; the host's CA certificates in the base; a private
# graphroot so cleanup never touches anyone else's containers. The stand-in base image
# carries this machine's CA certificates: it is for local tests only, never push it.
# Work dir: $NB2SVC_CTR_DIR (default /tmp/nb2svc-ctr); it is kept so reruns take seconds.
set -euo pipefail
W=${NB2SVC_CTR_DIR:-/tmp/nb2svc-ctr}
TOOLS=(podman runc debootstrap)

have_tools() {
  local tool
  for tool in "${TOOLS[@]}"; do command -v "$tool" >/dev/null || return 1; done
}

install_tools() {
  have_tools && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "container-tools: podman/runc/debootstrap missing and cannot apt-get them here" >&2
    return 0  # the image test then skips with this reason
  fi
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
    podman buildah runc conmon fuse-overlayfs slirp4netns uidmap catatonit \
    containernetworking-plugins golang-github-containers-common iptables debootstrap >/dev/null
}

print_env() {
  echo "export CONTAINERS_STORAGE_CONF=$W/storage.conf CONTAINERS_CONF=$W/containers.conf"
}

write_config() {
  mkdir -p "$W"
  local hn hu
  hn=$(ulimit -Hn); hu=$(ulimit -Hu)
  [ "$hn" = unlimited ] && hn=65536
  { [ "$hu" = unlimited ] || [ "$hu" -gt 32768 ]; } && hu=32768
  printf '[storage]\ndriver = "overlay"\nrunroot = "%s/run"\ngraphroot = "%s/storage"\n' "$W" "$W" \
    >"$W/storage.conf"
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n[engine]\nruntime = "runc"\n' \
    "$hn" "$hn" "$hu" "$hu" >"$W/containers.conf"
}

# Copy the CPython at $1 (its stdlib, not its site-packages) to /usr/local of rootfs $2, add pip.
copy_python() {
  local prefix=$1 root=$2 ver
  ver=$("$prefix/bin/python3" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/python$ver/site-packages"
  cp -a "$prefix/bin/python$ver" "$root/usr/local/bin/"
  cp -a "$prefix"/lib/libpython"$ver"*.so* "$root/usr/local/lib/" 2>/dev/null || true
  tar -C "$prefix/lib" --exclude="python$ver/site-packages" --exclude=__pycache__ \
    --exclude="python$ver/test" --exclude="python$ver/idlelib" --exclude="python$ver/tkinter" \
    -c "python$ver" | tar -C "$root/usr/local/lib" -x
  ln -sf "python$ver" "$root/usr/local/bin/python3"
  ln -sf python3 "$root/usr/local/bin/python"
  chroot "$root" ldconfig
  # pip verifies with its own certifi bundle; make it trust what the host trusts (TLS is intercepted here)
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  timeout 300 chroot "$root" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null 2>&1
}

make_base() {
  local image=$1 prefix=${2:-} full mirror root include
  case "$image" in */*) full=$image ;; *) full=docker.io/library/$image ;; esac
  write_config
  eval "$(print_env)"
  # Note whether the CNI bridge is someone else's before any container of ours exists.
  if [ ! -e "$W/net-before" ]; then
    { ip link show cni-podman0 >/dev/null 2>&1 && echo bridge=present || echo bridge=absent
      echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"; } >"$W/net-before"
  fi
  timeout 60 podman image exists "$full" && return 0
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  root=$W/rootfs
  rm -rf "$root"
  if [ -n "$prefix" ]; then  # the libraries a CPython build links (as python:*-slim has them)
    include=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g
    include=$include,libncursesw6,libreadline8,libuuid1,libexpat1,libgdbm6,libdb5.3
  else
    include=python3,python3-venv,python3-pip,ca-certificates
  fi
  timeout 900 debootstrap --variant=minbase --include="$include" \
    bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >"$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; return 1; }
  [ -z "$prefix" ] || copy_python "$prefix" "$root"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  timeout 120 chroot "$root" update-ca-certificates >/dev/null 2>&1
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED "$root/etc/resolv.conf"
  [ -n "$prefix" ] || ln -sf python3 "$root/usr/bin/python"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | timeout 600 podman import -q --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$full" >/dev/null
  rm -rf "$root"
}

net_clean() {
  [ -e "$W/net-before" ] || return 0
  # shellcheck disable=SC1091
  . "$W/net-before"
  # Leave the bridge to anyone else whose containers are attached to it right now.
  if [ "${bridge:-present}" = absent ] && [ -z "$(ip link show master cni-podman0 2>/dev/null)" ]; then
    ip link del cni-podman0 2>/dev/null || true
    local chain
    for table in filter nat; do
      for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-/ {print $2}'); do
        iptables -t "$table" -F "$chain" 2>/dev/null || true
      done
      iptables -t "$table" -S 2>/dev/null | awk '$1 == "-A" && /-j CNI-/ {sub(/^-A/, "-D"); print}' \
        | while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done
      for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-/ {print $2}'); do
        iptables -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  fi
  sysctl -qw "net.ipv4.ip_forward=${ip_forward:-0}" 2>/dev/null || true
  rm -f "$W/net-before"
}

purge() {
  [ -e "$W/storage.conf" ] || return 0
  eval "$(print_env)"
  timeout 120 podman rm -af -t 5 >/dev/null 2>&1 || true
  timeout 120 podman rmi -af >/dev/null 2>&1 || true
  net_clean
}

case "${1:-}" in
  install) install_tools ;;
  base) have_tools || { echo "container-tools: podman/runc/debootstrap missing" >&2; exit 3; }
        make_base "${2:?usage: container-tools.sh base IMAGE [PYTHON_PREFIX]}" "${3:-}" ;;
  env) print_env ;;
  netclean) net_clean ;;
  purge) purge ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
