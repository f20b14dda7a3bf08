#!/usr/bin/env bash
# Generates the man pages and shell completions that the packages ship, from
# the built binaries' own CLI definitions.
#
#   packaging/gen-docs.sh BIN_DIR [OUT_DIR]
#
# BIN_DIR holds the built `berth-agent` and `berth`; OUT_DIR defaults to
# packaging/generated. Writes:
#   OUT_DIR/man/berth-agent.1.gz, OUT_DIR/man/berth.1.gz
#       help2man from `--help`/`--version`, with every subcommand's `--help`
#       in a COMMANDS section, plus FILES, ENVIRONMENT and EXIT STATUS;
#   OUT_DIR/completions/{NAME.bash,_NAME,NAME.fish} for both binaries
#       from `NAME completions bash|zsh|fish` when the binary has that
#       subcommand (clap_complete), else derived from the `--help` output of
#       every subcommand (subcommands and long options; file names after
#       options that take a value).
#
# Needs help2man (apt-get install help2man; packaging/install-build-deps.sh
# installs it) and gzip. Exits 1 naming the step that failed, 2 on bad usage.
# The completion renderers print shell code: $ in single quotes is meant.
# shellcheck disable=SC2016
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
fail() {
    echo "gen-docs.sh: step '$1' failed: $2" >&2
    exit 1
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
[ $# -le 2 ] || { echo "gen-docs.sh: too many arguments" >&2; exit 2; }

bin_dir=$1
here=$(cd "$(dirname "$0")" && pwd)
out=${2:-$here/generated}

for b in berth-agent berth; do
    [ -x "$bin_dir/$b" ] || fail "find binaries" "$bin_dir/$b is missing or not executable (build it first: cargo build --release --bin $b)"
done
command -v help2man >/dev/null 2>&1 || fail "find help2man" "help2man not found: apt-get install help2man (or run packaging/install-build-deps.sh)"

mkdir -p "$out/man" "$out/completions"
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-gen-docs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the command tree, from --help ------------------------------------------
# subcommands BIN [SUB…]: the subcommand names of that command (not `help`).
subcommands() {
    "$@" --help 2>/dev/null | awk '
        /^Commands:/ { on = 1; next }
        on && /^[^ ]/ { on = 0 }
        on && /^  [a-z]/ { if ($1 != "help") print $1 }'
}
# The flag column of an option line of clap's help: "  -c, --config <PATH>  Text
# that may mention --other" gives "-c, --config <PATH>".
flags_awk='function flags(line) { sub(/^ +/, "", line); sub(/  .*/, "", line); return line }'
# options BIN [SUB…]: its long options, one a line.
options() {
    "$@" --help 2>/dev/null | awk '
        /^Options:/ { on = 1; next }
        on && /^[^ ]/ { on = 0 }
        on { print flags($0) }
        '"$flags_awk"' ' | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^--[a-z0-9-]+,?$/) { sub(/,$/, "", $i); print $i } }'
}
# value_options BIN [SUB…]: the long options that take a value (`--x <V>`).
value_options() {
    "$@" --help 2>/dev/null | awk '
        /^Options:/ { on = 1; next }
        on && /^[^ ]/ { on = 0 }
        on { print flags($0) }
        '"$flags_awk"' ' | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^--[a-z0-9-]+$/ && $(i + 1) ~ /^</) print $i }'
}

# walk BIN PREFIX…: prints "PATH|SUBCOMMANDS|OPTIONS" for the command
# and every subcommand under it (PATH is space-separated, empty at the top),
# and collects the value options in $work/value-options.
walk() {
    local bin=$1
    shift
    local path="$*" subs opts sub
    subs=$(subcommands "$bin" "$@" | tr '\n' ' ')
    opts=$(options "$bin" "$@" | tr '\n' ' ')
    value_options "$bin" "$@" >>"$work/value-options"
    printf '%s|%s|%s\n' "$path" "${subs% }" "${opts% }"
    for sub in $subs; do
        walk "$bin" "$@" "$sub"
    done
}

# --- man pages ----------------------------------------------------------------
man_page() {
    local name=$1 description=$2 extra=$3
    local bin="$bin_dir/$name" include="$work/$name.h2m" path
    {
        echo "[COMMANDS]"
        walk "$bin" | while IFS='|' read -r path _ _; do
            [ -n "$path" ] || continue
            echo ".SS \"$name $path\""
            echo ".nf"
            # shellcheck disable=SC2086 # the path is words on purpose
            "$bin" $path --help 2>&1 | sed -e 's/\\/\\\\/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\\&'/"
            echo ".fi"
        done
        cat "$extra"
    } >"$include"
    : >"$work/value-options"
    help2man --no-info --no-discard-stderr --section 1 --name "$description" \
        --include "$include" --output "$work/$name.1" "$bin" ||
        fail "man page $name" "help2man $bin failed"
    gzip -9 -n -c "$work/$name.1" >"$out/man/$name.1.gz"
}

cat >"$work/agent-extra" <<'EOF'
[FILES]
.TP
.I /etc/berth/agent.toml
Configuration; every key is listed, commented out with its default, in the
file the package installs. Each key can be overridden by the environment
variable BERTH_<KEY> in upper case.
.TP
.I /var/lib/berth
Identity (agent.key, agent.crt, ca.crt, identity.json) and state (state.json),
mode 0700.
.TP
.I /usr/lib/systemd/system/berth-agent.service
The systemd unit (Type=notify with a watchdog). It starts once the host is
enrolled.
.TP
.I /usr/share/berth-agent/enroll.sh
Fleet enrollment script: installs Docker and this package, enrolls, starts
the service; also \-\-uninstall.
[ENVIRONMENT]
.TP
.B BERTH_AGENT_CONFIG
Path of the configuration file (default /etc/berth/agent.toml).
.TP
.B BERTH_<KEY>
Overrides the configuration key <key>, e.g. BERTH_RESERVED_MEMORY_MIB=512.
.TP
.B BERTH_LOG
Log filter (default info).
[EXIT STATUS]
0 on success, 1 on failure (the message on stderr names what is wrong), 2 on
bad usage.
[SEE ALSO]
.BR berth (1),
.BR systemctl (1),
.BR journalctl (1)
EOF

cat >"$work/server-extra" <<'EOF'
[FILES]
.TP
.I /var/lib/berth-server
Data of the control plane: the fleet CA, the SQLite store, server.json; mode
0700, owned by the system user berth.
.TP
.I /etc/berth/server.env
BERTH_SERVER_* settings read by berth-server.service.
.TP
.I /usr/lib/systemd/system/berth-server.service
The systemd unit of the control plane.
[ENVIRONMENT]
.TP
.B BERTH_ADDR
Admin API address the CLI talks to (default 127.0.0.1:7421).
.TP
.B BERTH_SERVER_*
Each flag of `berth server`, e.g. BERTH_SERVER_LISTEN, BERTH_SERVER_ADVERTISE.
[EXIT STATUS]
0 on success, 1 on failure (the message on stderr names what is wrong), 2 on
bad usage.
[SEE ALSO]
.BR berth-agent (1)
EOF

man_page berth-agent "berth node agent: runs ECS task groups on the local Docker Engine" "$work/agent-extra"
man_page berth "berth control plane and operator CLI" "$work/server-extra"

# --- completions ------------------------------------------------------------
# render_bash NAME TREE_FILE VALUE_OPTIONS
render_bash() {
    local name=$1 tree=$2 value_opts=$3 fn path subs opts
    fn="_$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')"
    echo "# bash completion for $name, generated from its --help by packaging/gen-docs.sh"
    echo "$fn() {"
    echo '    local cur prev path word i words'
    echo '    cur=${COMP_WORDS[COMP_CWORD]}'
    echo '    prev=${COMP_WORDS[COMP_CWORD-1]}'
    echo '    path='
    echo '    for ((i = 1; i < COMP_CWORD; i++)); do'
    echo '        word=${COMP_WORDS[i]}'
    echo '        case "$path/$word" in'
    while IFS='|' read -r path subs _; do
        for s in $subs; do
            printf '            "%s/%s") path="$path/$word" ;;\n' "$(echo "$path" | sed 's/^\(.\)/\/\1/; s/ /\//g')" "$s"
        done
    done <"$tree"
    echo '        esac'
    echo '    done'
    if [ -n "$value_opts" ]; then
        echo '    case "$prev" in'
        echo "        $(echo "$value_opts" | tr ' ' '|'))"
        echo '            mapfile -t COMPREPLY < <(compgen -f -- "$cur")'
        echo '            return ;;'
        echo '    esac'
    fi
    echo '    case "$path" in'
    while IFS='|' read -r path subs opts; do
        printf '        "%s") words="%s" ;;\n' "$(echo "$path" | sed 's/^\(.\)/\/\1/; s/ /\//g')" "$(echo "$subs $opts" | sed 's/^ //')"
    done <"$tree"
    echo '        *) words= ;;'
    echo '    esac'
    echo '    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")'
    echo '}'
    echo "complete -F $fn $name"
}

render_zsh() {
    local name=$1 tree=$2 value_opts=$3 path subs opts
    echo "#compdef $name"
    echo "# zsh completion for $name, generated from its --help by packaging/gen-docs.sh"
    echo 'local cmdpath= w i'
    echo 'for (( i = 2; i < CURRENT; i++ )); do'
    echo '    w=${words[i]}'
    echo '    case "$cmdpath/$w" in'
    while IFS='|' read -r path subs _; do
        for s in $subs; do
            printf '        ("%s/%s") cmdpath="$cmdpath/$w" ;;\n' "$(echo "$path" | sed 's/^\(.\)/\/\1/; s/ /\//g')" "$s"
        done
    done <"$tree"
    echo '    esac'
    echo 'done'
    if [ -n "$value_opts" ]; then
        echo 'case "${words[CURRENT-1]}" in'
        echo "    ($(echo "$value_opts" | tr ' ' '|')) _files; return ;;"
        echo 'esac'
    fi
    echo 'case "$cmdpath" in'
    while IFS='|' read -r path subs opts; do
        printf '    ("%s") compadd -- %s ;;\n' "$(echo "$path" | sed 's/^\(.\)/\/\1/; s/ /\//g')" "$(echo "$subs $opts" | sed 's/^ //')"
    done <"$tree"
    echo 'esac'
}

render_fish() {
    local name=$1 tree=$2 value_opts=$3 path subs opts fn cond
    fn="__$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')_at"
    echo "# fish completion for $name, generated from its --help by packaging/gen-docs.sh"
    echo "# $fn PATH: true when the words typed so far are the subcommand PATH."
    echo "function $fn"
    echo '    set -l path ""'
    echo '    for w in (commandline -opc)[2..-1]'
    echo '        switch "$path/$w"'
    while IFS='|' read -r path subs _; do
        for s in $subs; do
            printf "            case '%s/%s'\n                set path \"\$path/\$w\"\n" "$(echo "$path" | sed 's/^\(.\)/\/\1/; s/ /\//g')" "$s"
        done
    done <"$tree"
    echo '        end'
    echo '    end'
    echo '    test "$path" = "$argv[1]"'
    echo 'end'
    echo "complete -c $name -f"
    while IFS='|' read -r path subs opts; do
        cond="$fn '$(echo "$path" | sed 's/^\(.\)/\/\1/; s/ /\//g')'"
        for s in $subs; do
            echo "complete -c $name -n \"$cond\" -a $s"
        done
        for o in $opts; do
            case " $value_opts " in
                *" $o "*) echo "complete -c $name -n \"$cond\" -l ${o#--} -r -F" ;;
                *) echo "complete -c $name -n \"$cond\" -l ${o#--}" ;;
            esac
        done
    done <"$tree"
}

completions() {
    local name=$1 bin="$bin_dir/$1" shell
    if "$bin" completions bash >/dev/null 2>&1; then
        "$bin" completions bash >"$out/completions/$name.bash" || fail "completions $name" "$name completions bash failed"
        "$bin" completions zsh >"$out/completions/_$name" || fail "completions $name" "$name completions zsh failed"
        "$bin" completions fish >"$out/completions/$name.fish" || fail "completions $name" "$name completions fish failed"
        return
    fi
    : >"$work/value-options"
    walk "$bin" >"$work/$name.tree" || fail "completions $name" "cannot read $name --help"
    local value_opts
    value_opts=$(sort -u "$work/value-options" | tr '\n' ' ' | sed 's/ $//')
    for shell in bash zsh fish; do
        case $shell in
            bash) render_bash "$name" "$work/$name.tree" "$value_opts" >"$out/completions/$name.bash" ;;
            zsh) render_zsh "$name" "$work/$name.tree" "$value_opts" >"$out/completions/_$name" ;;
            fish) render_fish "$name" "$work/$name.tree" "$value_opts" >"$out/completions/$name.fish" ;;
        esac
    done
}

completions berth-agent
completions berth

echo "gen-docs.sh: wrote $out/man and $out/completions"
