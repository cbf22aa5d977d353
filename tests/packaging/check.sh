#!/usr/bin/env bash
# Builds the scanbridge-agent and scanbridge-relay Debian packages (cargo-deb, release), INSTALLS
# THEM ON THIS MACHINE with dpkg, checks what they installed, and purges them again:
#
#   sudo ./tests/packaging/check.sh        # tests/run.sh runs it; SCANBRIDGE_SKIP_PACKAGING=1 skips
#
# It changes the machine while it runs: it installs the two packages, which create the system
# users `scanbridge` (added to dialout) and `scanbridge-relay`, /etc/scanbridge,
# /etc/scanbridge-relay, /var/lib/scanbridge-agent, /var/lib/scanbridge-relay and the enablement
# symlinks of the two units (nothing is started). On exit, also on failure, it purges both
# packages and deletes the two users when it created them, leaving the machine as it found it.
# It refuses to run where either package is already installed or its directories already exist
# (a real installation is never touched). Needs root (re-runs itself with sudo when available).
#
# Installs its tools when missing: cargo-deb (pinned, from crates.io), dpkg-dev (dpkg-shlibdeps),
# systemd (systemd-analyze), adduser, shellcheck (Debian packages).
#
# Checks: the packaging scripts pass shellcheck; package contents and conffiles; after install:
# binaries, units, directory and key owners and modes, users and groups, units enabled and not
# started, `systemd-analyze verify` and the offline sandbox exposure score of both units; the
# installed example configs pass check-config as the service users once a CA made by
# `scanbridge-relay ca init/issue` is in place (and fail before), while another user cannot read
# them; a reinstall (upgrade path) keeps an edited conffile and the modes; purge leaves nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CARGO_TARGET_DIR "$0" "$@"
    fi
    echo "tests/packaging/check.sh: needs root (it installs and purges Debian packages)" >&2
    exit 1
fi

CARGO_DEB_VERSION=3.8.0
# Highest accepted `systemd-analyze security --offline` exposure (0 = locked down, 10 = none).
MAX_EXPOSURE=2.5
export DEBIAN_FRONTEND=noninteractive

# shellcheck source=cross/lib.sh
. cross/lib.sh

failures=0
checks=0
pass() { checks=$((checks + 1)); }
fail() {
    checks=$((checks + 1))
    failures=$((failures + 1))
    echo "FAIL: $*" >&2
}
# expect DESCRIPTION COMMAND...: the command must succeed.
expect() {
    local what=$1
    shift
    if "$@"; then pass; else fail "$what"; fi
}
# refuse DESCRIPTION COMMAND...: the command must fail.
refuse() {
    local what=$1
    shift
    if "$@"; then fail "$what"; else pass; fi
}
# stat_is PATH OWNER:GROUP MODE [TYPE]
stat_is() {
    local got
    if ! got=$(stat -c '%U:%G %a %F' "$1" 2>/dev/null); then
        fail "$1 is missing"
        return
    fi
    local want="$2 $3 ${4:-regular file}"
    if [ "$got" = "$want" ]; then pass; else fail "$1: want '$want', got '$got'"; fi
}
step_started=$SECONDS
step_name=""
step() {
    [ -z "$step_name" ] || echo "   ($step_name: $((SECONDS - step_started)) s)"
    echo "== packaging: $*"
    step_name=$1
    step_started=$SECONDS
}

PKGS=(scanbridge-agent scanbridge-relay)
USERS=(scanbridge scanbridge-relay)
DIRS=(/etc/scanbridge /etc/scanbridge-relay /var/lib/scanbridge-agent /var/lib/scanbridge-relay)

# ---- one run at a time on a machine (two would install and purge under each other)
exec 9>/run/lock/scanbridge-packaging-check.lock
if ! flock -n 9; then
    echo "== packaging: another tests/packaging/check.sh runs on this machine; waiting for it"
    flock 9
fi

# ---- refuse to touch a real installation
for p in "${PKGS[@]}"; do
    state=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [ -n "$state" ] && [ "$state" != not-installed ]; then
        echo "tests/packaging/check.sh: $p is installed on this machine; refusing to replace and purge it" \
            "(purge it first: apt purge $p)" >&2
        exit 1
    fi
done
for d in "${DIRS[@]}"; do
    if [ -e "$d" ]; then
        echo "tests/packaging/check.sh: $d exists on this machine; refusing to install over it" >&2
        exit 1
    fi
done

created_users=()
for u in "${USERS[@]}"; do
    getent passwd "$u" >/dev/null || created_users+=("$u")
done
work=$(mktemp -d)
cleanup() {
    local status=$?
    set +e
    for p in "${PKGS[@]}"; do
        state=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
        if [ -n "$state" ] && [ "$state" != not-installed ]; then
            dpkg --purge "$p" >/dev/null 2>&1 || echo "cleanup: dpkg --purge $p failed" >&2
        fi
    done
    for u in "${created_users[@]}"; do
        if getent passwd "$u" >/dev/null; then userdel "$u" 2>/dev/null; fi
        if getent group "$u" >/dev/null; then groupdel "$u" 2>/dev/null; fi
    done
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# ---- tools
step "tools"
cross_need_pkgs dpkg-dev systemd adduser shellcheck file
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "== packaging: installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

step "shellcheck of the packaging scripts"
expect "shellcheck" shellcheck -x cross/*.sh tests/packaging/*.sh deploy/debian/*/post*

step "static checks of the container build file"
expect "deploy/container/check.sh" ./deploy/container/check.sh

# ---- build
step "building the packages (cargo deb, release)"
# Both binaries in one cargo build: the two share most dependencies, and one build compiles them
# once (two `cargo deb` builds compiled ~35 crates twice, ~2 CPU-minutes). cargo deb then only
# packages. SCANBRIDGE_PACKAGING_NO_BUILD=1 packages the release binaries already in
# target/release without building.
if [ "${SCANBRIDGE_PACKAGING_NO_BUILD:-0}" != 1 ]; then
    cargo build --release --locked -p scanbridge-agent -p scanbridge-relay --bins
fi
agent_deb=$(cargo deb --locked -p scanbridge-agent --quiet --no-build --output "$work/")
relay_deb=$(cargo deb --locked -p scanbridge-relay --quiet --no-build --output "$work/")
echo "$agent_deb ($(stat -c %s "$agent_deb") bytes)"
echo "$relay_deb ($(stat -c %s "$relay_deb") bytes)"

step "package contents"
contents() { dpkg-deb -c "$1" | awk '{ print $2, $1, $6 }'; }
agent_list=$(contents "$agent_deb")
relay_list=$(contents "$relay_deb")
has() {
    # has LISTING "0/0 -rwxr-xr-x ./usr/bin/x" (uid/gid, mode, path)
    if grep -qxF -- "$2" <<<"$1"; then pass; else fail "package lacks '$2'"; fi
}
has "$agent_list" "0/0 -rwxr-xr-x ./usr/bin/scanbridge-agent"
has "$agent_list" "0/0 -rw-r----- ./etc/scanbridge/agent.toml"
has "$agent_list" "0/0 -rw-r--r-- ./usr/lib/systemd/system/scanbridge-agent.service"
has "$relay_list" "0/0 -rwxr-xr-x ./usr/bin/scanbridge-relay"
has "$relay_list" "0/0 -rw-r----- ./etc/scanbridge-relay/relay.toml"
has "$relay_list" "0/0 -rw-r--r-- ./usr/lib/systemd/system/scanbridge-relay.service"
expect "agent conffiles" grep -qx /etc/scanbridge/agent.toml <(dpkg-deb -I "$agent_deb" conffiles)
expect "relay conffiles" grep -qx /etc/scanbridge-relay/relay.toml <(dpkg-deb -I "$relay_deb" conffiles)
for deb in "$agent_deb" "$relay_deb"; do
    dpkg-deb -I "$deb" postinst >"$work/postinst"
    # Enabled on install, never started: the only start-like action is try-restart on upgrade.
    expect "$deb postinst enables the unit" grep -q 'deb-systemd-helper enable' "$work/postinst"
    refuse "$deb postinst starts the unit" grep -Eq 'deb-systemd-invoke (start|restart)' "$work/postinst"
    expect "$deb depends on adduser" grep -q 'adduser' <(dpkg-deb -f "$deb" Depends)
done

# ---- install
step "installing both packages with dpkg"
dpkg -i "$agent_deb" "$relay_deb" </dev/null

step "installed files, owners and modes"
stat_is /usr/bin/scanbridge-agent root:root 755
stat_is /usr/bin/scanbridge-relay root:root 755
stat_is /usr/lib/systemd/system/scanbridge-agent.service root:root 644
stat_is /usr/lib/systemd/system/scanbridge-relay.service root:root 644
stat_is /etc/scanbridge root:scanbridge 750 directory
stat_is /etc/scanbridge/agent.toml root:scanbridge 640
stat_is /etc/scanbridge/site scanbridge:scanbridge 700 directory
stat_is /var/lib/scanbridge-agent scanbridge:scanbridge 750 directory
stat_is /etc/scanbridge-relay root:scanbridge-relay 750 directory
stat_is /etc/scanbridge-relay/relay.toml root:scanbridge-relay 640
stat_is /etc/scanbridge-relay/ca scanbridge-relay:scanbridge-relay 700 directory
stat_is /var/lib/scanbridge-relay scanbridge-relay:scanbridge-relay 750 directory
expect "agent binary runs" /usr/bin/scanbridge-agent --version
expect "relay binary runs" /usr/bin/scanbridge-relay --version
expect "agent conffile registered" grep -q '/etc/scanbridge/agent.toml' \
    <(dpkg-query -W -f='${Conffiles}' scanbridge-agent)
expect "relay conffile registered" grep -q '/etc/scanbridge-relay/relay.toml' \
    <(dpkg-query -W -f='${Conffiles}' scanbridge-relay)

step "users and groups"
user_is() {
    # user_is NAME HOME: a system user with no login shell, its own group, that home.
    local entry uid
    if ! entry=$(getent passwd "$1"); then
        fail "user $1 missing"
        return
    fi
    uid=$(cut -d: -f3 <<<"$entry")
    expect "$1 is a system user (uid $uid)" [ "$uid" -lt 1000 ]
    expect "$1 has no login shell" grep -qE ':/usr/sbin/nologin$|:/bin/false$' <<<"$entry"
    expect "$1 home is $2" [ "$(cut -d: -f6 <<<"$entry")" = "$2" ]
    expect "$1 primary group is $1" [ "$(id -gn "$1")" = "$1" ]
}
user_is scanbridge /var/lib/scanbridge-agent
user_is scanbridge-relay /var/lib/scanbridge-relay
expect "scanbridge is in dialout" grep -qx dialout <(id -nG scanbridge | tr ' ' '\n')
refuse "scanbridge-relay is in dialout" grep -qx dialout <(id -nG scanbridge-relay | tr ' ' '\n')

step "units enabled, not started"
for u in scanbridge-agent scanbridge-relay; do
    link=/etc/systemd/system/multi-user.target.wants/$u.service
    # deb-systemd-helper links to /lib/systemd/system (the same directory on merged-/usr Debian).
    expect "$u enabled ($link)" [ "$(readlink -f "$link")" = "$(readlink -f "/usr/lib/systemd/system/$u.service")" ]
    refuse "$u running" pgrep -f "^/usr/bin/$u( |$)"
done

step "systemd-analyze verify and sandbox exposure"
units=(/usr/lib/systemd/system/scanbridge-agent.service /usr/lib/systemd/system/scanbridge-relay.service)
if out=$(systemd-analyze verify "${units[@]}" 2>&1) && [ -z "$out" ]; then
    pass
else
    fail "systemd-analyze verify: $out"
fi
for unit in "${units[@]}"; do
    score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "$(basename "$unit"): exposure $score (systemd-analyze security --offline; accepted <= $MAX_EXPOSURE)"
    expect "$(basename "$unit") exposure $score <= $MAX_EXPOSURE" \
        awk -v s="${score:-99}" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
done
for setting in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
    CapabilityBoundingSet= AmbientCapabilities= SystemCallFilter=@system-service; do
    for unit in "${units[@]}"; do
        expect "$(basename "$unit") has $setting" grep -qx "$setting" "$unit"
    done
done
expect "agent unit has SupplementaryGroups=dialout" grep -qx SupplementaryGroups=dialout "${units[0]}"

step "installed example configs pass check-config as the service users"
# Before a CA exists both configs must fail, naming the missing certificate: the check reads them.
fails_reading() {
    # fails_reading WHAT DIR COMMAND...: the command fails, saying it cannot read a file in DIR.
    local what=$1 dir=$2 out
    shift 2
    if out=$("$@" 2>&1); then
        fail "$what passed"
    elif grep -q "cannot read $dir" <<<"$out"; then
        pass
    else
        fail "$what failed for another reason: $out"
    fi
}
fails_reading "agent check-config without a site bundle" /etc/scanbridge/site/ \
    runuser -u scanbridge -- scanbridge-agent check-config /etc/scanbridge/agent.toml
fails_reading "relay check-config without a CA" /etc/scanbridge-relay/ \
    runuser -u scanbridge-relay -- scanbridge-relay check-config /etc/scanbridge-relay/relay.toml
# The documented flow: the CA is made as the relay's user; a site bundle is issued and installed
# for the agent's user alone; the Odoo API key is readable by the relay's group.
runuser -u scanbridge-relay -- scanbridge-relay ca init --dir /etc/scanbridge-relay/ca \
    --server-name relay.example.com >/dev/null
scanbridge-relay ca issue --dir /etc/scanbridge-relay/ca --site WH01 --out "$work/wh01" >/dev/null
install -o scanbridge -g scanbridge -m 0600 "$work"/wh01/{ca.pem,site.pem,site.key} /etc/scanbridge/site/
# Secrets the example configs name (`*_file = "/etc/..."`: the Odoo API key, the admin token, ...),
# readable by the service's group only. 32 hex digits also parse as a revoked-serials list.
secrets_made=()
dummy_secrets() {
    local config=$1 group=$2 path
    while read -r path; do
        [ -e "$path" ] && continue
        od -An -N16 -tx1 /dev/urandom | tr -d ' \n' | install -o root -g "$group" -m 0640 /dev/stdin "$path"
        secrets_made+=("$path")
    done < <(sed -n 's/^[[:space:]]*[a-z_]*_file[[:space:]]*=[[:space:]]*"\(\/etc\/[^"]*\)".*/\1/p' "$config")
}
dummy_secrets /etc/scanbridge-relay/relay.toml scanbridge-relay
dummy_secrets /etc/scanbridge/agent.toml scanbridge
echo "made dummy secrets: ${secrets_made[*]:-none}"
stat_is /etc/scanbridge-relay/ca/server.key scanbridge-relay:scanbridge-relay 600
stat_is /etc/scanbridge-relay/ca/ca.key scanbridge-relay:scanbridge-relay 600
expect "agent check-config as scanbridge" \
    runuser -u scanbridge -- scanbridge-agent check-config /etc/scanbridge/agent.toml
expect "relay check-config as scanbridge-relay" \
    runuser -u scanbridge-relay -- scanbridge-relay check-config /etc/scanbridge-relay/relay.toml
# Nobody else reads the configuration or the keys.
refuse "nobody reads the agent config" runuser -u nobody -- cat /etc/scanbridge/agent.toml 2>/dev/null
refuse "nobody reads the site key" runuser -u nobody -- cat /etc/scanbridge/site/site.key 2>/dev/null
refuse "nobody reads the relay config" runuser -u nobody -- cat /etc/scanbridge-relay/relay.toml 2>/dev/null
refuse "nobody reads the relay server key" runuser -u nobody -- cat /etc/scanbridge-relay/ca/server.key 2>/dev/null
refuse "the relay user reads the agent's site key" \
    runuser -u scanbridge-relay -- cat /etc/scanbridge/site/site.key 2>/dev/null
refuse "the agent user reads the relay's server key" \
    runuser -u scanbridge -- cat /etc/scanbridge-relay/ca/server.key 2>/dev/null
refuse "nobody passes agent check-config" \
    runuser -u nobody -- scanbridge-agent check-config /etc/scanbridge/agent.toml 2>/dev/null

step "reinstall (upgrade path) keeps an edited conffile and the modes"
echo "# edited by tests/packaging/check.sh" >>/etc/scanbridge/agent.toml
dpkg -i "$agent_deb" "$relay_deb" </dev/null >/dev/null
expect "edited agent.toml kept" grep -q 'edited by tests/packaging/check.sh' /etc/scanbridge/agent.toml
stat_is /etc/scanbridge/agent.toml root:scanbridge 640
stat_is /etc/scanbridge-relay/relay.toml root:scanbridge-relay 640
stat_is /etc/scanbridge/site/site.key scanbridge:scanbridge 600
expect "agent check-config after reinstall" \
    runuser -u scanbridge -- scanbridge-agent check-config /etc/scanbridge/agent.toml

step "purge leaves nothing behind"
# The operator's keys are not the package's: remove them as an operator would before purging.
rm -f /etc/scanbridge/site/* /etc/scanbridge-relay/ca/* "${secrets_made[@]}"
dpkg --purge scanbridge-agent scanbridge-relay </dev/null >/dev/null
for p in "${PKGS[@]}"; do
    refuse "$p still known to dpkg" dpkg-query -W "$p" 2>/dev/null
done
for path in "${DIRS[@]}" /usr/bin/scanbridge-agent /usr/bin/scanbridge-relay \
    /usr/lib/systemd/system/scanbridge-agent.service /usr/lib/systemd/system/scanbridge-relay.service \
    /etc/systemd/system/multi-user.target.wants/scanbridge-agent.service \
    /etc/systemd/system/multi-user.target.wants/scanbridge-relay.service \
    /usr/share/doc/scanbridge-agent /usr/share/doc/scanbridge-relay; do
    refuse "$path left after purge" [ -e "$path" -o -L "$path" ]
done
refuse "statoverrides left after purge" grep -q scanbridge <(dpkg-statoverride --list)

step "done"
echo "packaging: $((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
