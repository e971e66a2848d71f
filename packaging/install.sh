#!/bin/sh
# rbee-hive installer: what queen-rbee (or an operator) runs as root on a GPU host after copying the
# binary, SHA256SUMS and this script (README "Install on a GPU host"). POSIX sh. Idempotent: a
# second run with the same arguments changes nothing and restarts nothing. Every failure ends with
# one line on stderr, "rbee-hive install: <reason>", and a non-zero status (2: bad arguments).
# The token is read from a file or stdin, written only to the 0600 env file with shell builtins,
# and never printed or put on a command line.
set -eu

PROG="rbee-hive install"
UNIT=rbee-hive.service
UNIT_PATH=/etc/systemd/system/$UNIT
DROPIN_DIR=/etc/systemd/system/$UNIT.d
DROPIN_PATH=$DROPIN_DIR/keep-workers.conf
ENV_DIR=/etc/rbee
ENV_PATH=$ENV_DIR/hive.env
STATE_DIR=/var/lib/rbee-hive
ENV_HEADER1="# rbee-hive settings for $UNIT (mode 0600: it holds the token). Written by install.sh,"
ENV_HEADER2="# which manages RBEE_ADDR and LLORCH_API_TOKEN and keeps every other line."
HEALTH_WAIT_S=60
# Tests only: every file lands under this directory (like DESTDIR); the files keep the real paths inside.
ROOT=${RBEE_INSTALL_ROOT:-}

usage() {
	cat <<'EOF'
Usage: sh install.sh [options]          install or upgrade rbee-hive as a systemd service
       sh install.sh --uninstall [--purge]

  --binary FILE       the rbee-hive binary to install (default: rbee-hive-<target> beside this
                      script, for this host: linux-x64, linux-x64-baseline without AVX2, linux-arm64).
                      Checked against SHA256SUMS when that file lies beside it.
  --prefix DIR        install the binary as DIR/bin/rbee-hive (default /usr/local)
  --addr HOST         bind address, or HOST:PORT (default: as installed, else 127.0.0.1)
  --port N            bind port (default: as installed, else 9200)
  --token-file FILE   file holding LLORCH_API_TOKEN (16+ characters; "-" reads stdin). Required for a
                      non-loopback --addr; without it the installed token is kept.
  --user NAME         system user the service runs as (default rbee-hive)
  --keep-workers      workers outlive a stop or restart of the hive (KillMode=process drop-in);
                      without it, workers stop with the hive
  --uninstall         stop, disable and remove what this script installed; keeps the data
                      directory /var/lib/rbee-hive (models, catalog, logs) and the user
  --purge             with --uninstall: also remove the data directory and the user
  --dry-run           print what would change, change nothing
  --help              this text

Writes /etc/systemd/system/rbee-hive.service, /etc/rbee/hive.env (0600), and with --keep-workers
/etc/systemd/system/rbee-hive.service.d/keep-workers.conf; then reloads systemd, enables and
(re)starts the service when something changed, and waits for /v1/health.
EOF
}

die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}
usage_error() {
	printf '%s: %s (see --help)\n' "$PROG" "$*" >&2
	exit 2
}
say() { printf '%s\n' "$*"; }
first_line() { printf '%s\n' "$1" | head -n 1; }
# A line about a change: "would …" under --dry-run.
change() {
	if [ "$dry_run" = 1 ]; then say "would $*"; else say "$*"; fi
}

binary="" prefix=/usr/local addr="" port="" token_file="" user=rbee-hive
keep_workers=0 uninstall=0 purge=0 dry_run=0 install_only=""

while [ $# -gt 0 ]; do
	case $1 in
	--help | -h)
		usage
		exit 0
		;;
	--keep-workers) keep_workers=1 install_only=$1 ;;
	--uninstall) uninstall=1 ;;
	--purge) purge=1 ;;
	--dry-run) dry_run=1 ;;
	--binary | --prefix | --addr | --port | --token-file | --user | \
		--binary=* | --prefix=* | --addr=* | --port=* | --token-file=* | --user=*)
		case $1 in
		*=*)
			opt=${1%%=*}
			val=${1#*=}
			;;
		*)
			[ $# -ge 2 ] || usage_error "$1 needs a value"
			opt=$1
			val=$2
			shift
			;;
		esac
		[ -n "$val" ] || usage_error "$opt needs a value"
		case $opt in
		--binary) binary=$val install_only=$opt ;;
		--prefix) prefix=$val ;;
		--addr) addr=$val install_only=$opt ;;
		--port) port=$val install_only=$opt ;;
		--token-file) token_file=$val install_only=$opt ;;
		--user) user=$val ;;
		esac
		;;
	*) usage_error "unknown argument \"$1\"" ;;
	esac
	shift
done

[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || usage_error "--purge goes with --uninstall"
[ "$uninstall" = 0 ] || [ -z "$install_only" ] || usage_error "$install_only does not go with --uninstall"
case $prefix in
/*) ;;
*) usage_error "--prefix must be an absolute path, got \"$prefix\"" ;;
esac
case $prefix in
*[!A-Za-z0-9._/-]*) usage_error "--prefix may hold only letters, digits and . _ / -" ;;
esac
prefix=${prefix%/}
case $user in
[a-z_]*) ;;
*) usage_error "--user must start with a lowercase letter or _, got \"$user\"" ;;
esac
case $user in
*[!a-z0-9_-]*) usage_error "--user may hold only a-z 0-9 _ -, got \"$user\"" ;;
esac
if [ -n "$ROOT" ]; then
	case $ROOT in /*) ;; *) die "RBEE_INSTALL_ROOT must be an absolute path" ;; esac
	[ -d "$ROOT" ] || die "RBEE_INSTALL_ROOT $ROOT is not a directory"
fi
bin_path=$prefix/bin/rbee-hive

# Runs a command that changes the host, or only says it under --dry-run. Never with our stdin:
# under `sh -s` (README "Uninstall") stdin is this script.
act() {
	if [ "$dry_run" = 1 ]; then
		say "would run: $*"
	else
		"$@" </dev/null
	fi
}

is_loopback() {
	case $1 in
	127.* | localhost | \[::1\]) return 0 ;;
	*) return 1 ;;
	esac
}

# Value of KEY= in the installed env file (empty when absent). sed sees the key and the file name,
# never a value, so the token is read this way too (into a command substitution, not an argument).
installed_env() {
	[ -f "$ROOT$ENV_PATH" ] || return 0
	sed -n "s/^$1=//p" "$ROOT$ENV_PATH" | tail -n 1
}

need_root() {
	[ "$dry_run" = 1 ] || [ "$(id -u)" = 0 ] || die "must run as root (it writes /etc and manages $UNIT); try: sudo sh $0 …"
}

user_exists() { getent passwd "$1" >/dev/null 2>&1; }
group_exists() { getent group "$1" >/dev/null 2>&1; }
# Whether $1 is listed as a supplementary member of group $2.
in_group() {
	getent group "$2" | cut -d: -f4 | tr ',' '\n' | grep -qx "$1"
}

wait_for_health() {
	url=$1
	if command -v curl >/dev/null 2>&1; then
		fetch() { curl -fsS --max-time 2 "$url" 2>/dev/null; }
	elif command -v wget >/dev/null 2>&1; then
		fetch() { wget -q -T 2 -O - "$url" 2>/dev/null; }
	else
		die "cannot check $url: neither curl nor wget is installed"
	fi
	deadline=$(($(date +%s) + HEALTH_WAIT_S))
	while :; do
		body=$(fetch || true)
		case $body in *'"status":"alive"'*)
			say "health: $url answered $body"
			return 0
			;;
		esac
		if systemctl is-failed --quiet "$UNIT" </dev/null; then
			die "$UNIT failed to start; see: journalctl -u $UNIT"
		fi
		[ "$(date +%s)" -lt "$deadline" ] || die "$url did not answer within ${HEALTH_WAIT_S} s; see: journalctl -u $UNIT"
		sleep 0.1 2>/dev/null || sleep 1
	done
}

# ---------------------------------------------------------------------------------------------
# Uninstall: stop (kept workers included), disable, remove the unit, drop-in, env file and binary.
# ---------------------------------------------------------------------------------------------
if [ "$uninstall" = 1 ]; then
	need_root
	if [ -f "$ROOT$UNIT_PATH" ]; then
		# What was installed, whatever --prefix/--user this run got.
		installed_bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$ROOT$UNIT_PATH" | tail -n 1)
		installed_user=$(sed -n 's/^User=//p' "$ROOT$UNIT_PATH" | tail -n 1)
		[ -z "$installed_bin" ] || bin_path=$installed_bin
		[ -z "$installed_user" ] || user=$installed_user
	fi
	found=0
	for f in "$ROOT$UNIT_PATH" "$ROOT$DROPIN_PATH" "$ROOT$ENV_PATH" "$ROOT$bin_path"; do
		[ ! -e "$f" ] || found=1
	done
	if [ "$purge" = 1 ]; then
		[ ! -e "$ROOT$STATE_DIR" ] || found=1
		! user_exists "$user" || found=1
	fi
	if [ "$found" = 0 ]; then
		say "rbee-hive is not installed: nothing to do"
		exit 0
	fi
	if [ -f "$ROOT$DROPIN_PATH" ]; then
		# Back to KillMode=mixed first, so the stop takes the kept workers down too.
		change "remove $DROPIN_PATH"
		[ "$dry_run" = 1 ] || rm -f "$ROOT$DROPIN_PATH" || die "cannot remove $DROPIN_PATH"
		[ "$dry_run" = 1 ] || rmdir "$ROOT$DROPIN_DIR" 2>/dev/null || true
		act systemctl daemon-reload || die "systemctl daemon-reload failed"
	fi
	if [ -f "$ROOT$UNIT_PATH" ]; then
		act systemctl stop "$UNIT" || die "systemctl stop $UNIT failed"
		act systemctl disable "$UNIT" || die "systemctl disable $UNIT failed"
		change "remove $UNIT_PATH"
		[ "$dry_run" = 1 ] || rm -f "$ROOT$UNIT_PATH" || die "cannot remove $UNIT_PATH"
		act systemctl daemon-reload || die "systemctl daemon-reload failed"
		act systemctl reset-failed "$UNIT" 2>/dev/null || true
	fi
	if [ -f "$ROOT$ENV_PATH" ]; then
		change "remove $ENV_PATH"
		[ "$dry_run" = 1 ] || rm -f "$ROOT$ENV_PATH" || die "cannot remove $ENV_PATH"
		[ "$dry_run" = 1 ] || rmdir "$ROOT$ENV_DIR" 2>/dev/null || true
	fi
	if [ -e "$ROOT$bin_path" ]; then
		change "remove $bin_path"
		[ "$dry_run" = 1 ] || rm -f "$ROOT$bin_path" || die "cannot remove $bin_path"
	fi
	if [ "$purge" = 1 ]; then
		if [ -e "$ROOT$STATE_DIR" ]; then
			change "remove $STATE_DIR (models, catalog, logs)"
			[ "$dry_run" = 1 ] || rm -rf "$ROOT$STATE_DIR" || die "cannot remove $STATE_DIR"
		fi
		if user_exists "$user"; then
			change "remove user $user"
			act userdel "$user" || die "userdel $user failed"
		fi
	else
		say "kept $STATE_DIR (models, catalog, logs) and user $user; --purge removes them"
	fi
	[ "$dry_run" = 1 ] || say "rbee-hive uninstalled"
	exit 0
fi

# ---------------------------------------------------------------------------------------------
# Install or upgrade.
# ---------------------------------------------------------------------------------------------
need_root

# Address: flags > what is installed > defaults.
old_addr=$(installed_env RBEE_ADDR)
old_host=${old_addr%:*}
old_port=${old_addr##*:}
[ -n "$old_addr" ] || old_host=127.0.0.1 old_port=9200
host=$old_host
addr_port=""
case $addr in
"") ;;
\[*\]:*) host=${addr%:*} addr_port=${addr##*:} ;;
\[*\]) host=$addr ;;
*:*:*) usage_error "an IPv6 --addr goes in brackets, e.g. [::1], got \"$addr\"" ;;
*:*) host=${addr%:*} addr_port=${addr##*:} ;;
*) host=$addr ;;
esac
bare_host=${host#\[}
bare_host=${bare_host%\]}
case $bare_host in
"" | *[!A-Za-z0-9.:_-]*) usage_error "--addr: not a host name or address: \"$addr\"" ;;
esac
port=${port:-${addr_port:-$old_port}}
case $port in
"" | *[!0-9]* | ??????*) usage_error "--port must be 1..65535, got \"$port\"" ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
	usage_error "--port must be 1..65535, got \"$port\""
fi
rbee_addr=$host:$port

if ! is_loopback "$host" && [ -z "$token_file" ] && [ -z "$(installed_env LLORCH_API_TOKEN)" ]; then
	usage_error "--addr $host is not loopback: the hive needs a token to bind it; give --token-file"
fi

if [ -z "$binary" ]; then
	case $(uname -s)-$(uname -m) in
	Linux-x86_64) if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then target=linux-x64; else target=linux-x64-baseline; fi ;;
	Linux-aarch64 | Linux-arm64) target=linux-arm64 ;;
	*) die "no rbee-hive build for $(uname -s) $(uname -m)" ;;
	esac
	binary=$(dirname "$0")/rbee-hive-$target
	[ -f "$binary" ] || die "no --binary given and $binary is not there"
fi
[ -f "$binary" ] || die "--binary $binary: no such file"

sums=$(dirname "$binary")/SHA256SUMS
if [ -f "$sums" ]; then
	name=$(basename "$binary")
	expected=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1 }' "$sums")
	[ -n "$expected" ] || die "$name is not listed in $sums"
	command -v sha256sum >/dev/null 2>&1 || die "sha256sum is not installed; cannot check $name against $sums"
	actual=$(sha256sum <"$binary" | cut -d' ' -f1)
	[ "$actual" = "$expected" ] || die "checksum mismatch: $binary does not match $sums (damaged or a different build); nothing was changed"
	say "checksum: $name matches $sums"
else
	say "checksum: no SHA256SUMS beside $binary, not verified"
fi

# Token: --token-file > the installed one. Held in a shell variable and written with printf (a
# builtin): it never reaches a command line, the output or a file other than the env file.
token=""
token_source=""
if [ -n "$token_file" ]; then
	if [ "$token_file" = - ]; then
		token=$(cat) || die "cannot read the token from stdin"
	else
		[ -r "$token_file" ] || die "--token-file $token_file: not readable"
		token=$(cat -- "$token_file") || die "cannot read --token-file $token_file"
	fi
	token_source="from --token-file"
else
	token=$(installed_env LLORCH_API_TOKEN)
	[ -z "$token" ] || token_source="kept from $ENV_PATH"
fi
if [ -n "$token_source" ]; then
	case $token in *[!A-Za-z0-9._~+/=-]*)
		die "the token ($token_source) may hold only letters, digits and . _ ~ + / = -"
		;;
	esac
	[ "${#token}" -ge 16 ] || die "the token ($token_source) is shorter than 16 characters"
fi
work=$(mktemp -d) || die "mktemp -d failed"
staged=""
trap 'rm -rf "$work"; [ -z "$staged" ] || rm -f "$staged"' EXIT
trap 'exit 1' HUP INT TERM

# The unit (packaging/rbee-hive.service, with this run's binary path and user).
sed -e "s|^ExecStart=/usr/local/bin/rbee-hive |ExecStart=$bin_path |" -e "s|^User=rbee-hive\$|User=$user|" >"$work/unit" <<'UNIT_EOF' || die "cannot write $work/unit"
# rbee-hive: the host agent of an rbee LLM cluster, as a system service.
# packaging/install.sh writes this file (with its --prefix and --user) to
# /etc/systemd/system/rbee-hive.service; settings and the token live in /etc/rbee/hive.env.
# systemd allows comments only on their own line.

[Unit]
Description=rbee-hive (rbee GPU host agent)
Wants=network-online.target
After=network-online.target
# Restart=on-failure gives up after 5 failed starts within 5 minutes; then the unit stays failed
# until "systemctl reset-failed rbee-hive" or a new start.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=exec
# Its own system user (created by install.sh, home /var/lib/rbee-hive, in the groups video and
# render where they exist: those own the GPU device nodes /dev/dri/*, /dev/kfd).
User=rbee-hive
# Defaults; /etc/rbee/hive.env (mode 0600) overrides them and holds LLORCH_API_TOKEN.
Environment=RBEE_ADDR=127.0.0.1:9200
Environment=RBEE_DATA_DIR=%S/rbee-hive
EnvironmentFile=/etc/rbee/hive.env
ExecStart=/usr/local/bin/rbee-hive daemon --addr ${RBEE_ADDR}
# /var/lib/rbee-hive: catalog, models, worker logs. Created and owned for User= by systemd, and
# the one writable path under ProtectSystem=strict.
StateDirectory=rbee-hive
StateDirectoryMode=0750

# Exit policy (README "Exit codes"): 1 = failure, retried; 2 = wrong command line or
# configuration, retrying cannot help.
Restart=on-failure
RestartSec=2
RestartPreventExitStatus=2
# Workers live and die with the hive: SIGTERM goes to the hive alone, which stops its workers in
# order within [shutdown] total_timeout_s (30) and exits 0. When the hive is gone, systemd
# SIGKILLs whatever is left in the cgroup. TimeoutStopSec stays above total_timeout_s with a
# margin (the hive's own SIGKILL of late workers, exit and journal flush): raise both together.
# install.sh --keep-workers adds rbee-hive.service.d/keep-workers.conf with KillMode=process.
KillMode=mixed
TimeoutStopSec=45

# Hardening that keeps GPU access working. No PrivateDevices=, DeviceAllow= or DevicePolicy=:
# the GPU nodes differ per vendor and driver (/dev/nvidia0..N, nvidiactl, nvidia-uvm with a
# dynamic major number, nvidia-caps/*, /dev/dri/renderD*, /dev/kfd) and a list that misses one
# breaks model loading in workers; device access is left to file permissions and the groups
# above. For the same reason no ProtectClock= (it implies DeviceAllow=char-rtc r, which closes
# every other device). No MemoryDenyWriteExecute=: the JavaScript JIT needs W+X memory. No
# RemoveIPC=: kept workers (--keep-workers) would lose their IPC objects at a stop. No
# SystemCallFilter=: a syscall a GPU runtime needs and the filter lacks kills the worker (SIGSYS).
# No ProcSubset=pid: the hive reads /proc/net/tcp and CUDA reads /proc/driver/nvidia.
# NoNewPrivileges= blocks the setuid nvidia-modprobe: the NVIDIA nodes must exist at boot
# (nvidia-persistenced or the driver's udev rules create them).
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
PrivateMounts=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
CapabilityBoundingSet=
UMask=0027

[Install]
WantedBy=multi-user.target
UNIT_EOF

cat >"$work/dropin" <<'DROPIN_EOF' || die "cannot write $work/dropin"
# Written by install.sh --keep-workers: workers outlive a stop or restart of the hive (an upgrade).
# Only the hive gets SIGTERM and nothing else in the cgroup is killed; the hive leaves its workers
# running (RBEE_KEEP_WORKERS_ON_EXIT, [workers] keep_workers_on_exit) and the next one adopts them.
# install.sh without --keep-workers removes this file; --uninstall removes it before stopping.
[Service]
KillMode=process
Environment=RBEE_KEEP_WORKERS_ON_EXIT=true
DROPIN_EOF

# The env file: our two keys first, then every other line the operator added.
(
	umask 077
	{
		printf '%s\n%s\n' "$ENV_HEADER1" "$ENV_HEADER2"
		printf 'RBEE_ADDR=%s\n' "$rbee_addr"
		[ -z "$token" ] || printf 'LLORCH_API_TOKEN=%s\n' "$token"
		if [ -f "$ROOT$ENV_PATH" ]; then
			grep -v -x -F -e "$ENV_HEADER1" -e "$ENV_HEADER2" "$ROOT$ENV_PATH" |
				grep -v -e '^RBEE_ADDR=' -e '^LLORCH_API_TOKEN=' || true
		fi
	} >"$work/env"
) || die "cannot write $work/env"

same() { [ -f "$2" ] && cmp -s "$1" "$2"; }

changed=0
reload=0
user_new=0
groups_add=""
gpu_groups=""
for g in video render; do
	! group_exists "$g" || gpu_groups="$gpu_groups $g"
done
if user_exists "$user"; then
	for g in $gpu_groups; do
		in_group "$user" "$g" || groups_add="$groups_add $g"
	done
else
	user_new=1
fi
binary_same=0
! same "$binary" "$ROOT$bin_path" || binary_same=1
unit_same=0
! same "$work/unit" "$ROOT$UNIT_PATH" || unit_same=1
dropin_state=same
if [ "$keep_workers" = 1 ]; then
	same "$work/dropin" "$ROOT$DROPIN_PATH" || dropin_state="write"
elif [ -e "$ROOT$DROPIN_PATH" ]; then
	dropin_state=remove
fi
env_same=0
! same "$work/env" "$ROOT$ENV_PATH" || env_same=1

# Stage the binary beside its final path and make sure it runs on this host before changing anything.
if [ "$binary_same" = 0 ]; then
	if [ "$dry_run" = 1 ]; then
		if [ -x "$binary" ]; then
			version=$("$binary" --version 2>&1) || die "$binary does not run on this host: $(first_line "$version")"
		else
			version="(not executable as it is; the install would check that it runs)"
		fi
	else
		mkdir -p "$ROOT$prefix/bin" || die "cannot create $prefix/bin"
		staged=$ROOT$prefix/bin/.rbee-hive.new
		{ cp "$binary" "$staged" && chmod 0755 "$staged"; } || die "cannot copy $binary to $prefix/bin"
		version=$("$staged" --version 2>&1) || die "$binary does not run on this host: $(first_line "$version")"
	fi
else
	version=$("$ROOT$bin_path" --version 2>&1) || die "$bin_path does not run on this host: $(first_line "$version")"
fi

if [ "$user_new" = 1 ]; then
	shell=/usr/sbin/nologin
	[ -x "$shell" ] || shell=/sbin/nologin
	[ -x "$shell" ] || shell=/bin/false
	change "create system user $user (home $STATE_DIR, groups:${gpu_groups:- none})"
	act useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell "$shell" "$user" ||
		die "useradd $user failed"
	groups_add=$gpu_groups
	changed=1
fi
for g in $groups_add; do
	change "add user $user to group $g (GPU device nodes)"
	act usermod -a -G "$g" "$user" || die "usermod -a -G $g $user failed"
	changed=1
done

if [ "$binary_same" = 0 ]; then
	change "install $bin_path: $version"
	# rename(2): the unit never sees a half-written file, a running hive keeps its old inode.
	if [ "$dry_run" = 0 ]; then
		mv -f "$staged" "$ROOT$bin_path" || die "cannot move the new binary to $bin_path"
		staged=""
	fi
	changed=1
fi

# Writes $1 (a file in $work) to $2 (a path on the host) with mode $3, atomically.
install_file() {
	change "write $2 (mode $3)"
	[ "$dry_run" = 0 ] || return 0
	mkdir -p "$ROOT$(dirname "$2")" || die "cannot create $(dirname "$2")"
	tmp=$ROOT$(dirname "$2")/.$(basename "$2").new
	{ cp "$1" "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$ROOT$2"; } || die "cannot write $2"
}

if [ "$env_same" = 0 ]; then
	install_file "$work/env" "$ENV_PATH" 0600
	changed=1
fi
if [ "$unit_same" = 0 ]; then
	install_file "$work/unit" "$UNIT_PATH" 0644
	reload=1 changed=1
fi
case $dropin_state in
write)
	install_file "$work/dropin" "$DROPIN_PATH" 0644
	reload=1 changed=1
	;;
remove)
	change "remove $DROPIN_PATH (workers stop with the hive again)"
	[ "$dry_run" = 1 ] || rm -f "$ROOT$DROPIN_PATH" || die "cannot remove $DROPIN_PATH"
	[ "$dry_run" = 1 ] || rmdir "$ROOT$DROPIN_DIR" 2>/dev/null || true
	reload=1 changed=1
	;;
esac

if [ "$reload" = 1 ]; then
	act systemctl daemon-reload || die "systemctl daemon-reload failed"
fi
if ! systemctl is-enabled --quiet "$UNIT" </dev/null 2>/dev/null; then
	act systemctl enable "$UNIT" || die "systemctl enable $UNIT failed"
fi
if [ "$changed" = 1 ]; then
	act systemctl restart "$UNIT" || die "systemctl restart $UNIT failed; see: journalctl -u $UNIT"
elif ! systemctl is-active --quiet "$UNIT" </dev/null; then
	act systemctl start "$UNIT" || die "systemctl start $UNIT failed; see: journalctl -u $UNIT"
else
	say "nothing changed: $UNIT is up to date and running"
fi

case $host in
0.0.0.0) check_host=127.0.0.1 ;;
\[::\]) check_host='[::1]' ;;
*) check_host=$host ;;
esac
if [ "$dry_run" = 1 ]; then
	say "would wait for http://$check_host:$port/v1/health"
	exit 0
fi
wait_for_health "http://$check_host:$port/v1/health"
say "rbee-hive installed: $version, $UNIT on $rbee_addr$([ "$keep_workers" = 0 ] || printf ', workers kept across restarts')"
