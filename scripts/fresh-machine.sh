#!/usr/bin/env bash
# Run the README's commands on a fresh Debian 12, on this machine: a debootstrap
# chroot (only python3, git, ca-certificates, make, procps, iproute2) in a network
# namespace of its own (slirp4netns gives it outbound network), so it sees
# none of this machine's packages, services or ports. The repository's HEAD is
# cloned into it. Each run starts like a new machine (the Debian packages it
# installed stay) and its processes end with it.
# Usage: scripts/fresh-machine.sh [COMMANDS]   (default: the demo twice, then the tests)
#        DCOR_FRESH_ROOT=/var/tmp/dcor-fresh   where the chroot lives (remove it to start over)
#        DCOR_FRESH_KEEP=1   keep the clone and the service state (Ceph's block file
#                            holds GiBs) after the run; by default they are removed
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=${DCOR_FRESH_ROOT:-/var/tmp/dcor-fresh}
commands=${1:-"bash scripts/demo.sh --once && bash scripts/demo.sh --once && bash scripts/test.sh; \
rc=\$?; bash scripts/demo.sh stop; exit \$rc"}
netns=dcor-fresh

apt_install debootstrap slirp4netns git
if [ ! -x "$root/usr/bin/python3" ]; then
    say "debootstrap Debian 12 into $root"
    debootstrap --variant=minbase --include=python3,git,ca-certificates,make,procps,iproute2 \
        bookworm "$root" http://deb.debian.org/debian >/dev/null
fi
# certificate authorities this machine adds (e.g. of a TLS-inspecting proxy), for pip
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
# a new machine: no earlier clone, virtualenvs or service state (Debian's packages stay)
rm -rf "$root/root/project" "$root/var/lib/dcor-depot-dev"
git clone -q "$REPO_DIR" "$root/root/project"
say "Cloned $(git -C "$REPO_DIR" rev-parse --short HEAD) into $root/root/project"

if ! ip netns list | grep -q "^$netns\b"; then
    ip netns add "$netns"
    ip netns exec "$netns" ip link set lo up
fi
if ! ip netns exec "$netns" ip link show tap0 >/dev/null 2>&1; then
    nohup slirp4netns --configure --mtu=65520 --netns-type=path "/var/run/netns/$netns" tap0 \
        >"$root/slirp4netns.log" 2>&1 &
    wait_for 10 "slirp4netns" ip netns exec "$netns" ip link show tap0
fi
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"   # slirp4netns's DNS
# what Debian's installer writes: debootstrap leaves no /etc/hosts, and without
# it the name localhost (the development gateway's second name) does not resolve
[ -e "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$root/etc/hosts"

# a PID namespace of its own: every service started inside ends with the run
rc=0
ip netns exec "$netns" unshare --mount --pid --fork bash -c "
    set -e
    mount --bind /dev '$root/dev'
    mount -t devpts devpts '$root/dev/pts' -o newinstance,ptmxmode=0666
    mount -t tmpfs tmpfs '$root/dev/shm'
    mount -t proc proc '$root/proc'
    mount -t sysfs sysfs '$root/sys'
    mount -t tmpfs tmpfs '$root/tmp'
    exec chroot '$root' /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -c 'cd /root/project && { $commands; }'
" || rc=$?
if [ "${DCOR_FRESH_KEEP:-0}" != 1 ]; then
    rm -rf "$root/root/project" "$root/var/lib/dcor-depot-dev"
    say "Removed the clone and the service state of the run (DCOR_FRESH_KEEP=1 keeps them)"
fi
say "Fresh machine: exit $rc"
exit $rc
