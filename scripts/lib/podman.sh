# Podman as the container scripts use it (sourced after common.sh, never run).
#
# Two settings this sandbox needs, kept in a config file of our own (CONTAINERS_CONF) instead of
# the machine's /etc/containers/containers.conf: podman's default nproc/nofile ulimits exceed the
# sandbox's hard limits, and there is no systemd to manage cgroups. runc, because crun refuses
# the hybrid cgroup layout here. Logs in files (k8s-file), since without systemd podman's
# journald default keeps nothing for `podman logs`. All harmless on an ordinary Linux host.
PODMAN_CONF="$CACHE/podman/containers.conf"

podman_prerequisites() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  # Each played pod's network (podman kube play --network slirp4netns:allow_host_loopback=true).
  command -v slirp4netns >/dev/null || missing+=(slirp4netns)
  # The init of each pod's infra container; only recommended by podman, and apt_install leaves
  # recommendations out.
  [[ -x /usr/libexec/podman/catatonit || -x /usr/bin/catatonit ]] || missing+=(catatonit)
  # Podman's network backend (even slirp4netns pods and `podman import` ask for it); another
  # recommendation only, with CNI plugins satisfying the dependency instead (seen on a fresh
  # machine: 'could not find "netavark"').
  [[ -x /usr/lib/podman/netavark || -x /usr/libexec/podman/netavark ]] || missing+=(netavark)
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
  [[ $EUID -eq 0 ]] || die "the container scripts run rootful podman: run them as root"
  mkdir -p "$(dirname "$PODMAN_CONF")"
  cat >"$PODMAN_CONF" <<'CONF'
[containers]
default_ulimits = []
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
[network]
network_backend = "netavark"
CONF
}

pod() { CONTAINERS_CONF="$PODMAN_CONF" podman "$@"; }
