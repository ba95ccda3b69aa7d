# Sourced by setup.sh and test.sh: apt-get that waits while another apt or dpkg process (unattended-upgrades,
# a second setup) holds the package lock, saying so, instead of failing at once; it gives up after
# APT_LOCK_WAIT seconds (600) with one line naming the process that holds it.
apt_get() {
  local waited=0 limit="${APT_LOCK_WAIT:-600}" poll="${APT_LOCK_POLL:-10}" out holder
  while true; do
    # shellcheck disable=SC2086  # APT_GET may be "sudo apt-get"
    if out=$(DEBIAN_FRONTEND=noninteractive ${APT_GET:-${SUDO:-} apt-get} -o DPkg::Lock::Timeout=30 "$@" 2>&1); then
      [ -z "$out" ] || printf '%s\n' "$out"
      return 0
    fi
    if ! grep -qE "Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock directory" <<<"$out"; then
      printf '%s\n' "$out" >&2
      return 1
    fi
    holder=$(grep -oE "held by process [0-9]+( \([^)]*\))?" <<<"$out" | head -1 || true)
    if [ "$waited" -ge "$limit" ]; then
      echo "apt-get $*: the package lock is still ${holder:-held by another process} after ${waited}s; let it finish (or stop it), then rerun" >&2
      return 1
    fi
    echo "apt-get $*: the package lock is ${holder:-held by another process}; waiting (${waited}s of ${limit}s)" >&2
    sleep "$poll"
    waited=$((waited + poll))
  done
}
