#!/usr/bin/env bash
#
# scripts/services.sh - start and check the real servers Switchboard's tests
# use: PostgreSQL, RabbitMQ, NATS (with JetStream) and Mosquitto (MQTT).
#
# Usage:
#   scripts/services.sh start [postgres|rabbitmq|nats|mosquitto|all]...   (default: all)
#   scripts/services.sh check [postgres|rabbitmq|nats|mosquitto|all]...   (default: all)
#   ("amqp" is accepted for rabbitmq, "pg"/"postgresql" for postgres, "mqtt" for mosquitto.)
#
# Server addresses - the same variables, defaults and meaning as in
# internal/testenv (an empty variable means the default):
#   SWITCHBOARD_TEST_POSTGRES  postgres://postgres@127.0.0.1:5432/switchboard_test?sslmode=disable
#   SWITCHBOARD_TEST_AMQP      amqp://guest:guest@127.0.0.1:5672/
#   SWITCHBOARD_TEST_NATS      nats://127.0.0.1:4222
#   SWITCHBOARD_TEST_MQTT      mqtt://127.0.0.1:1883
# Tuning:
#   SWITCHBOARD_SERVICES_TIMEOUT  seconds to wait for each server to come up (default 60)
#   SWITCHBOARD_SERVICES_LOCK_TIMEOUT  seconds to wait for a test's outage to end (default 120)
#
# check: prints one "OK" line per reachable server and, for each unreachable
#   one, its name, address and the command that starts it; exits 1 if any
#   server is unreachable.
#
# start: for each server that does not accept TCP connections and whose
#   address is its local default (127.0.0.1 or localhost, default port), it
#   installs the Debian package if the server is missing (only as root on
#   Debian: postgresql, rabbitmq-server, nats-server, mosquitto), starts it without
#   systemd and waits until it accepts connections. A server at any other
#   address is only checked. Then, for servers on this host, it makes sure the
#   tests can use them: the database exists (created with createdb), the AMQP
#   user from the URL (guest) can log in and open its vhost, NATS runs with
#   JetStream, and Mosquitto answers an MQTT v5 CONNECT. It exits 1 if any server is not usable. When everything is
#   already running it only checks, which takes well under a second.
#
# Outages: internal/testenv takes the server away for restart tests while
# holding an exclusive flock on $TMPDIR/switchboard-test-<name>.lock (name:
# postgres, amqp, nats, mqtt). Before starting (or declaring unreachable) a server,
# this script takes a shared lock on that file, so it waits for an outage to
# end instead of racing the test that restores the server. The lock fds are
# closed for every server process this script starts.

set -euo pipefail

PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export LC_ALL=C

readonly SELF=scripts/services.sh
readonly ALL_SERVICES=(postgres rabbitmq nats mosquitto)
readonly WAIT=${SWITCHBOARD_SERVICES_TIMEOUT:-60}
readonly LOCK_WAIT=${SWITCHBOARD_SERVICES_LOCK_TIMEOUT:-120}
readonly LOCK_DIR=${TMPDIR:-/tmp}
readonly NATS_START=(start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server
	-- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log)
# Debian's configuration file: persistence on (/var/lib/mosquitto); without a
# listener in it, Mosquitto 2 listens on localhost:1883 only and accepts
# anonymous clients, as the tests connect.
readonly MOSQUITTO_CONF=/etc/mosquitto/mosquitto.conf
readonly MOSQUITTO_START=(mosquitto -d -c "$MOSQUITTO_CONF")

declare -rA ENV_VAR=([postgres]=SWITCHBOARD_TEST_POSTGRES [rabbitmq]=SWITCHBOARD_TEST_AMQP [nats]=SWITCHBOARD_TEST_NATS [mosquitto]=SWITCHBOARD_TEST_MQTT)
declare -rA DEFAULT_URL=(
	[postgres]='postgres://postgres@127.0.0.1:5432/switchboard_test?sslmode=disable'
	[rabbitmq]='amqp://guest:guest@127.0.0.1:5672/'
	[nats]='nats://127.0.0.1:4222'
	[mosquitto]='mqtt://127.0.0.1:1883'
)
declare -rA DEFAULT_PORT=([postgres]=5432 [rabbitmq]=5672 [nats]=4222 [mosquitto]=1883)
declare -rA PACKAGE=([postgres]=postgresql [rabbitmq]=rabbitmq-server [nats]=nats-server [mosquitto]=mosquitto)
declare -rA LOCK_NAME=([postgres]=postgres [rabbitmq]=amqp [nats]=nats [mosquitto]=mqtt) # internal/testenv's names
declare -rA LOCK_FD=([postgres]=7 [rabbitmq]=8 [nats]=9 [mosquitto]=5)                 # 6: serializes "start"
declare -A LOCKED=() INSTALLED=()
APT_UPDATED=

# ---------------------------------------------------------------- output

ok() { printf 'OK   %-8s %s\n' "$1" "$2"; }
fail() { printf 'FAIL %-8s %s\n' "$1" "$2" >&2; }
more() { printf '              %s\n' "$@" >&2; } # continuation lines of a FAIL
say() { printf 'services.sh: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 2
}

usage() {
	sed -n '3,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

# ---------------------------------------------------------------- helpers

have() { command -v "$1" >/dev/null 2>&1; }

# detach CMD...: runs a command that may leave a server running, then shows
# its output. The server must inherit neither this script's lock fds (it would
# hold the outage locks forever) nor its stdout/stderr (a CI pipe would never
# reach end-of-file), so the command writes to a file and gets /dev/null.
detach() {
	local log rc=0
	log=$(mktemp "$LOCK_DIR/switchboard-services.XXXXXX")
	"$@" </dev/null >"$log" 2>&1 5<&- 6<&- 7<&- 8<&- 9<&- || rc=$?
	sed 's/^/    | /' "$log" >&2
	rm -f "$log"
	return "$rc"
}

# reachable HOST PORT: does anything accept TCP connections there?
reachable() {
	# shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# wait_until SECONDS CMD...: polls CMD until it succeeds or SECONDS pass.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

urldecode() { printf '%b' "${1//%/\\x}"; }

# redact URL: hides a password.
redact() {
	if [[ $1 =~ ^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@(.*)$ ]]; then
		printf '%s:xxxxx@%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
	else
		printf '%s' "$1"
	fi
}

# load SERVICE: sets S_* from the service's URL.
#   S_URL S_VAR (env var name) S_SCHEME S_USER S_PASS S_HOST S_PORT S_PATH
#   S_ADDR (host:port) S_LOCAL (1: this host) S_MANAGED (1: the local default
#   address, which this script may install and start)
load() {
	local svc=$1 rest userinfo
	S_VAR=${ENV_VAR[$svc]}
	S_URL=${!S_VAR:-${DEFAULT_URL[$svc]}}
	[[ $S_URL == *://* ]] || die "\$$S_VAR=$(redact "$S_URL") is not a URL (scheme://host:port/...)"
	S_SCHEME=${S_URL%%://*}
	rest=${S_URL#*://}
	rest=${rest%%#*}
	rest=${rest%%\?*}
	S_PATH=
	if [[ $rest == */* ]]; then
		S_PATH=/${rest#*/}
		rest=${rest%%/*}
	fi
	userinfo='' S_USER='' S_PASS=
	if [[ $rest == *@* ]]; then
		userinfo=${rest%@*}
		rest=${rest##*@}
		S_USER=$(urldecode "${userinfo%%:*}")
		[[ $userinfo != *:* ]] || S_PASS=$(urldecode "${userinfo#*:}")
	fi
	if [[ $rest == \[*\]* ]]; then # [IPv6]:port
		S_HOST=${rest#\[}
		S_HOST=${S_HOST%%\]*}
		rest=${rest#*\]}
		S_PORT=${rest#:}
		S_ADDR="[$S_HOST]:"
	else
		S_HOST=${rest%%:*}
		S_PORT=
		[[ $rest != *:* ]] || S_PORT=${rest##*:}
		S_ADDR="$S_HOST:"
	fi
	S_PORT=${S_PORT:-${DEFAULT_PORT[$svc]}}
	S_ADDR+=$S_PORT
	[[ -n $S_HOST && $S_PORT =~ ^[0-9]+$ ]] ||
		die "\$$S_VAR=$(redact "$S_URL"): cannot find host and port in it"
	S_LOCAL=0 S_MANAGED=0
	case $S_HOST in
	127.0.0.1 | localhost)
		S_LOCAL=1
		[[ $S_PORT != "${DEFAULT_PORT[$svc]}" ]] || S_MANAGED=1
		;;
	::1 | 127.*) S_LOCAL=1 ;;
	esac
}

# where: "ADDR (VAR=URL)" for messages.
where() {
	if [[ -n ${!S_VAR:-} ]]; then
		printf '%s (%s=%s)' "$S_ADDR" "$S_VAR" "$(redact "$S_URL")"
	else
		printf '%s (default; set %s to use another server)' "$S_ADDR" "$S_VAR"
	fi
}

# pg_version: the newest PostgreSQL version with a "main" cluster, if any.
pg_version() {
	local d
	for d in /etc/postgresql/*/main/; do
		if [[ -d $d ]]; then
			d=${d%/main/}
			printf '%s\n' "${d##*/}"
		fi
	done | sort -V | tail -n 1
}

start_command() { # SERVICE: the command that starts it on this machine
	case $1 in
	postgres)
		local ver
		ver=$(pg_version)
		# shellcheck disable=SC2016 # shown literally when no cluster exists yet
		[[ -n $ver ]] || ver='$(ls /etc/postgresql)'
		printf 'pg_ctlcluster --skip-systemctl-redirect %s main start' "$ver"
		;;
	rabbitmq) printf 'rabbitmq-server -detached' ;;
	nats) printf '%s' "${NATS_START[*]}" ;;
	mosquitto) printf '%s' "${MOSQUITTO_START[*]}" ;;
	esac
}

installed() {
	case $1 in
	postgres) have pg_ctlcluster && have psql && [[ -n $(pg_version) ]] ;;
	rabbitmq) have rabbitmq-server && have rabbitmqctl ;;
	nats) [[ -x /usr/sbin/nats-server ]] && have start-stop-daemon ;;
	mosquitto) have mosquitto ;;
	esac
}

# ---------------------------------------------------------------- locks

# outage_lock SERVICE: waits (bounded) until no internal/testenv outage of the
# server is in progress, then holds a shared lock on it until this script
# exits. Best effort: without flock or the lock file it just returns.
outage_lock() {
	local svc=$1 fd=${LOCK_FD[$1]} f
	[[ -z ${LOCKED[$svc]:-} ]] || return 0
	LOCKED[$svc]=1
	have flock || return 0
	f=$LOCK_DIR/switchboard-test-${LOCK_NAME[$svc]}.lock
	# Test processes open it read-write: create it world-writable like they do.
	[[ -e $f ]] || (umask 0 && : >>"$f") 2>/dev/null || return 0
	{ eval "exec $fd<\"\$f\""; } 2>/dev/null || return 0
	flock -s -n "$fd" && return 0
	say "$svc: a test is running an outage (it holds $f); waiting up to ${LOCK_WAIT}s for it to end"
	flock -s -w "$LOCK_WAIT" "$fd" || say "$svc: still locked after ${LOCK_WAIT}s; going on"
}

# start_lock: one "start" at a time per user (installing, starting).
start_lock() {
	have flock || return 0
	local f=$LOCK_DIR/switchboard-services-start.$EUID.lock
	{ exec 6>>"$f"; } 2>/dev/null || return 0
	flock -n 6 && return 0
	say "another $SELF start is running; waiting for it"
	flock -w 900 6 || die "gave up waiting for $f"
}

# ---------------------------------------------------------------- reachability

# is_up SERVICE (after load): reachable, waiting for an outage to end first.
is_up() {
	reachable "$S_HOST" "$S_PORT" && return 0
	outage_lock "$1"
	reachable "$S_HOST" "$S_PORT"
}

# report_down SERVICE (after load): the FAIL lines for an unreachable server.
report_down() {
	local svc=$1
	fail "$svc" "nothing accepts connections at $(where)"
	if [[ $S_MANAGED == 1 ]]; then
		more "start it with: $SELF start $svc" \
			"  which runs:  $(start_command "$svc")" \
			"or, with Docker: docker compose up -d $svc"
	elif [[ $S_LOCAL == 1 ]]; then
		more "$SELF only starts $svc at its default address ${DEFAULT_URL[$svc]}:" \
			"start a server at $S_ADDR yourself$([[ $svc != nats ]] || printf ' (nats-server -a %s -p %s -js)' "$S_HOST" "$S_PORT")," \
			"or unset $S_VAR and run: $SELF start $svc"
	else
		more "$S_HOST is another host, which $SELF does not manage: start $svc there," \
			"or unset $S_VAR and run: $SELF start $svc"
	fi
}

cmd_check() {
	local svc rc=0
	for svc in "$@"; do
		load "$svc"
		if is_up "$svc"; then
			ok "$svc" "$S_ADDR"
		else
			report_down "$svc"
			rc=1
		fi
	done
	return "$rc"
}

# ---------------------------------------------------------------- installing

install_packages() { # PACKAGE...
	if ((EUID != 0)) || [[ ! -r /etc/debian_version ]] || ! have apt-get; then
		say "not installed: $* (run as root on Debian to install automatically)"
		return 1
	fi
	# Output goes to a file, not to our stdout: see detach.
	local log=$LOCK_DIR/switchboard-services-apt.log
	: >"$log"
	if [[ -z $APT_UPDATED ]]; then
		say "apt-get update (log: $log)"
		if ! apt-get update -q </dev/null >>"$log" 2>&1 5<&- 6<&- 7<&- 8<&- 9<&-; then
			tail -n 20 "$log" >&2
			return 1
		fi
		APT_UPDATED=1
	fi
	say "apt-get install -y $* (log: $log)"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null >>"$log" 2>&1 5<&- 6<&- 7<&- 8<&- 9<&-; then
		tail -n 30 "$log" >&2
		return 1
	fi
}

# ---------------------------------------------------------------- starting

start_postgres() {
	local ver
	ver=$(pg_version)
	if [[ -z $ver ]]; then
		fail postgres "no PostgreSQL cluster 'main' in /etc/postgresql (pg_createcluster <version> main)"
		return 1
	fi
	if pg_ctlcluster "$ver" main status >/dev/null 2>&1; then
		say "postgres: cluster $ver/main is running but not accepting connections yet; waiting"
	else
		say "postgres: pg_ctlcluster --skip-systemctl-redirect $ver main start"
		if ! detach pg_ctlcluster --skip-systemctl-redirect "$ver" main start; then
			fail postgres "pg_ctlcluster could not start cluster $ver/main (see /var/log/postgresql/postgresql-$ver-main.log)"
			return 1
		fi
	fi
	if ! wait_until "$WAIT" pg_ready; then
		fail postgres "not accepting connections at $S_ADDR ${WAIT}s after starting it"
		more "see /var/log/postgresql/postgresql-$ver-main.log; pg_lsclusters shows the port it uses"
		return 1
	fi
}

pg_ready() {
	if have pg_isready; then
		pg_isready -q -h "$S_HOST" -p "$S_PORT" -t 2
	else
		reachable "$S_HOST" "$S_PORT"
	fi
}

# rabbit_await SECONDS: until the broker application has booted.
rabbit_await() {
	local deadline=$((SECONDS + $1)) left
	while left=$((deadline - SECONDS)) && ((left > 0)); do
		timeout $((left + 5)) rabbitmqctl -q await_startup --timeout "$left" >/dev/null 2>&1 && return 0
		sleep 1 # the node may not be registered yet
	done
	return 1
}

start_rabbitmq() {
	if timeout 20 rabbitmqctl -q ping >/dev/null 2>&1; then
		# The node runs but AMQP is closed: booting, or its application was
		# stopped (rabbitmqctl stop_app) and never started again.
		say "rabbitmq: the node is up but AMQP is closed; waiting for it to boot"
		if ! rabbit_await 15; then
			say "rabbitmq: rabbitmqctl start_app"
			detach timeout 120 rabbitmqctl -q start_app || true
		fi
	else
		say "rabbitmq: rabbitmq-server -detached"
		if ! detach rabbitmq-server -detached; then
			fail rabbitmq "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
			return 1
		fi
	fi
	if ! rabbit_await "$WAIT" || ! wait_until 10 reachable "$S_HOST" "$S_PORT"; then
		fail rabbitmq "not accepting AMQP connections at $S_ADDR ${WAIT}s after starting it"
		more "see /var/log/rabbitmq/ and: rabbitmqctl status"
		return 1
	fi
}

start_nats() {
	mkdir -p /var/lib/nats-server
	say "nats: ${NATS_START[*]}"
	if ! detach "${NATS_START[@]}"; then
		fail nats "start-stop-daemon could not start nats-server (see /var/log/nats-server.log)"
		return 1
	fi
	if ! wait_until "$WAIT" reachable "$S_HOST" "$S_PORT"; then
		fail nats "not accepting connections at $S_ADDR ${WAIT}s after starting it"
		more "see /var/log/nats-server.log"
		return 1
	fi
}

start_mosquitto() {
	# Debian's file writes its pid to /run/mosquitto, which a fresh /run lacks.
	mkdir -p /run/mosquitto /var/lib/mosquitto
	chown mosquitto: /run/mosquitto /var/lib/mosquitto 2>/dev/null || true
	say "mosquitto: ${MOSQUITTO_START[*]}"
	if ! detach "${MOSQUITTO_START[@]}"; then
		fail mosquitto "mosquitto could not start (see /var/log/mosquitto/mosquitto.log)"
		return 1
	fi
	if ! wait_until "$WAIT" reachable "$S_HOST" "$S_PORT"; then
		fail mosquitto "not accepting connections at $S_ADDR ${WAIT}s after starting it"
		more "see /var/log/mosquitto/mosquitto.log"
		return 1
	fi
}

# ---------------------------------------------------------------- verifying

psql_q() { # SQL: runs it in the maintenance database "postgres"
	local -a vars=(PGCONNECT_TIMEOUT=5)
	[[ -z $S_PASS ]] || vars+=("PGPASSWORD=$S_PASS")
	env "${vars[@]}" psql -X -w -q -h "$S_HOST" -p "$S_PORT" -U "$S_USER" -d postgres -tAc "$1"
}

# pg_trust: lets S_USER connect over TCP from this host without a password.
# Only called for a cluster this script installed in this run: Debian's
# default pg_hba.conf asks for a password (scram-sha-256) on 127.0.0.1/::1,
# while the tests connect as postgres without one. The lines go first because
# the first matching pg_hba.conf line wins.
pg_trust() {
	local ver hba
	ver=$(pg_version)
	hba=/etc/postgresql/$ver/main/pg_hba.conf
	[[ -w $hba ]] || return 1
	say "postgres: $hba: trusting TCP connections of $S_USER from 127.0.0.1 and ::1"
	{
		printf '# Added by %s after installing PostgreSQL: the tests connect\n' "$SELF"
		printf '# as %s without a password.\n' "$S_USER"
		printf 'host all %s 127.0.0.1/32 trust\n' "$S_USER"
		printf 'host all %s ::1/128 trust\n\n' "$S_USER"
		cat "$hba"
	} >"$hba.new"
	cat "$hba.new" >"$hba" # keeps the file's owner and mode
	rm -f "$hba.new"
	detach pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
}

verify_postgres() {
	local db out
	db=$(urldecode "${S_PATH#/}")
	db=${db:-switchboard_test}
	S_USER=${S_USER:-postgres}
	if ! have psql; then
		ok postgres "$S_ADDR (psql is not installed: did not check that database $db exists)"
		return 0
	fi
	if ! out=$(psql_q 'SELECT 1' 2>&1); then
		if [[ -n ${INSTALLED[postgres]:-} ]] && pg_trust && out=$(psql_q 'SELECT 1' 2>&1); then
			:
		else
			fail postgres "cannot connect to $(where) as $S_USER: ${out//$'\n'/ }"
			[[ $out != *password* && $out != *pg_hba* ]] ||
				more "the tests connect without a password: put 'host all $S_USER 127.0.0.1/32 trust'" \
					"first in pg_hba.conf, then: pg_ctlcluster --skip-systemctl-redirect $(pg_version) main reload"
			return 1
		fi
	fi
	if [[ $(psql_q "SELECT 1 FROM pg_database WHERE datname='${db//\'/\'\'}'") == 1 ]]; then
		ok postgres "$S_ADDR (database $db exists)"
		return 0
	fi
	if ! out=$(env ${S_PASS:+"PGPASSWORD=$S_PASS"} createdb -w -h "$S_HOST" -p "$S_PORT" -U "$S_USER" "$db" 2>&1) &&
		[[ $(psql_q "SELECT 1 FROM pg_database WHERE datname='${db//\'/\'\'}'") != 1 ]]; then
		fail postgres "createdb $db failed: ${out//$'\n'/ }"
		return 1
	fi
	ok postgres "$S_ADDR (created database $db)"
}

# amqp_login HOST PORT USER PASS VHOST: a real AMQP 0-9-1 handshake -
# Start/StartOk (PLAIN), Tune/TuneOk, Open/OpenOk, Close/CloseOk - in bash.
# Prints why it failed. Run it under timeout (see verify_rabbitmq).
amqp_login() {
	local host=$1 port=$2 user=$3 pass=$4 vhost=$5 method resp
	local -a hdr body
	hex_u8() { printf '%02x' "$1"; }
	hex_u16() { printf '%04x' "$1"; }
	hex_u32() { printf '%08x' "$1"; }
	hex_bytes() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'; }
	hex_shortstr() {
		hex_u8 "${#1}"
		hex_bytes "$1"
	}
	send_method() { # PAYLOAD-AS-HEX, on channel 0
		local frame
		frame="010000$(hex_u32 $((${#1} / 2)))${1}ce"
		# shellcheck disable=SC2059,SC2001 # the format only holds \xHH escapes
		printf "$(sed 's/../\\x&/g' <<<"$frame")" >&3
	}
	read_method() { # sets method=CLASS:METHOD and body=(payload bytes)
		local size
		read -r -a hdr < <(dd bs=7 count=1 iflag=fullblock <&3 2>/dev/null | od -An -tu1 -v)
		if [[ ${#hdr[@]} -ne 7 || ${hdr[0]} -ne 1 ]]; then
			method="connection closed"
			return 0
		fi
		size=$((hdr[3] << 24 | hdr[4] << 16 | hdr[5] << 8 | hdr[6]))
		read -r -d '' -a body < <(dd bs=$((size + 1)) count=1 iflag=fullblock <&3 2>/dev/null | od -An -tu1 -v) || true
		method=$((body[0] << 8 | body[1])):$((body[2] << 8 | body[3]))
	}
	exec 3<>"/dev/tcp/$host/$port"
	printf 'AMQP\x00\x00\x09\x01' >&3
	read_method
	[[ $method == 10:10 ]] || {
		echo "no AMQP 0-9-1 greeting ($method)"
		return 1
	}
	resp="00$(hex_bytes "$user")00$(hex_bytes "$pass")"
	send_method "000a000b$(hex_u32 0)$(hex_shortstr PLAIN)$(hex_u32 $((${#resp} / 2)))${resp}$(hex_shortstr en_US)"
	read_method
	[[ $method == 10:30 ]] || {
		echo "login as '$user' refused (wrong password, unknown user, or guest connecting from another host)"
		return 1
	}
	# TuneOk: the server's channel-max and frame-max, no heartbeats.
	send_method "000a001f$(hex_u16 $((body[4] << 8 | body[5])))$(hex_u32 $((body[6] << 24 | body[7] << 16 | body[8] << 8 | body[9])))0000"
	send_method "000a0028$(hex_shortstr "$vhost")0000"
	read_method
	[[ $method == 10:41 ]] || {
		echo "'$user' may not open vhost '$vhost' (missing vhost or permissions)"
		return 1
	}
	send_method "000a003200c8$(hex_shortstr "")00000000"
	read_method
	exec 3<&-
}

rabbit_guest() { # recreates guest/guest with full rights on "/"
	say "rabbitmq: giving user guest (password guest) full rights on vhost /"
	rabbitmqctl -q add_user guest guest >/dev/null 2>&1 || rabbitmqctl -q change_password guest guest >&2
	rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' >&2
}

verify_rabbitmq() {
	local vhost out
	if [[ $S_SCHEME != amqp ]]; then
		ok rabbitmq "$S_ADDR (did not try to log in over $S_SCHEME)"
		return 0
	fi
	vhost=$(urldecode "${S_PATH#/}")
	vhost=${vhost:-/} # amqp://host/ means vhost "/", as in amqp091-go
	S_USER=${S_USER:-guest} S_PASS=${S_PASS:-guest}
	login() {
		timeout 15 bash -c "$(declare -f amqp_login); amqp_login \"\$@\"" _ \
			"$S_HOST" "$S_PORT" "$S_USER" "$S_PASS" "$vhost" 2>&1
	}
	if out=$(login); then
		ok rabbitmq "$S_ADDR ($S_USER can log in, vhost $vhost)"
		return 0
	fi
	if [[ -n ${INSTALLED[rabbitmq]:-} && $S_USER/$S_PASS/$vhost == guest/guest// ]] &&
		rabbit_guest && out=$(login); then
		ok rabbitmq "$S_ADDR ($S_USER can log in, vhost $vhost)"
		return 0
	fi
	fail rabbitmq "at $(where): ${out:-timed out}"
	[[ $S_LOCAL != 1 ]] || more "check with: rabbitmqctl list_users; rabbitmqctl list_permissions -p $vhost"
	return 1
}

verify_nats() {
	local info
	# shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
	info=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n 1 <&3' "$S_HOST" "$S_PORT" 2>/dev/null) || true
	if [[ $info == INFO* && $info != *'"jetstream":true'* ]]; then
		fail nats "$(where) runs without JetStream; restart it with -js"
		[[ $S_MANAGED != 1 ]] || more "(as: $(start_command nats))"
		return 1
	fi
	if [[ $info == INFO* ]]; then
		ok nats "$S_ADDR (JetStream enabled)"
	else
		ok nats "$S_ADDR (reachable; no NATS INFO greeting, JetStream not checked)"
	fi
}

verify_mosquitto() {
	local out
	if ! have mosquitto_pub; then
		ok mosquitto "$S_ADDR (reachable; mosquitto_pub is not installed: MQTT v5 login not checked)"
		return 0
	fi
	# A QoS 1 publish to a topic nobody reads: an MQTT v5 CONNECT, a PUBLISH
	# and its PUBACK, as the bridge's health check does.
	if out=$(timeout 10 mosquitto_pub -V mqttv5 -h "$S_HOST" -p "$S_PORT" ${S_USER:+-u "$S_USER"} ${S_PASS:+-P "$S_PASS"} \
		-q 1 -t _sb/health -n 2>&1); then
		ok mosquitto "$S_ADDR (MQTT v5 publish acknowledged)"
		return 0
	fi
	fail mosquitto "at $(where): ${out:-timed out}"
	[[ $S_LOCAL != 1 ]] || more "the tests connect anonymously: allow_anonymous true for the listener in $MOSQUITTO_CONF"
	return 1
}

cmd_start() {
	local svc rc=0
	local -a todo=() missing=() pkgs=()
	for svc in "$@"; do
		load "$svc"
		if [[ $S_MANAGED == 1 ]] && ! reachable "$S_HOST" "$S_PORT"; then
			todo+=("$svc")
		fi
	done
	if ((${#todo[@]})); then
		start_lock
		for svc in "${todo[@]}"; do
			load "$svc"
			if ! is_up "$svc" && ! installed "$svc"; then
				missing+=("$svc")
				pkgs+=("${PACKAGE[$svc]}")
			fi
		done
		if ((${#pkgs[@]})) && install_packages "${pkgs[@]}"; then
			for svc in "${missing[@]}"; do INSTALLED[$svc]=1; done
		fi
		for svc in "${todo[@]}"; do
			load "$svc"
			reachable "$S_HOST" "$S_PORT" && continue # came up meanwhile
			if ! installed "$svc"; then
				fail "$svc" "not installed: apt-get install -y ${PACKAGE[$svc]} (or: docker compose up -d $svc)"
				rc=1
			elif ! "start_$svc"; then
				rc=1
			fi
		done
	fi
	for svc in "$@"; do
		load "$svc"
		if ! is_up "$svc"; then
			# A server that could not be started was reported above.
			[[ " ${todo[*]} " == *" $svc "* ]] || report_down "$svc"
			rc=1
		elif [[ $S_LOCAL != 1 ]]; then
			ok "$svc" "$S_ADDR (on another host: only checked that it is reachable)"
		else
			"verify_$svc" || rc=1
		fi
	done
	return "$rc"
}

# ---------------------------------------------------------------- main

main() {
	local cmd=${1:-} arg
	local -a svcs=()
	shift || true
	case $cmd in
	start | check) ;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
	for arg in "${@:-all}"; do
		case $arg in
		all) svcs+=("${ALL_SERVICES[@]}") ;;
		postgres | postgresql | pg) svcs+=(postgres) ;;
		rabbitmq | amqp) svcs+=(rabbitmq) ;;
		nats) svcs+=(nats) ;;
		mosquitto | mqtt) svcs+=(mosquitto) ;;
		*) die "unknown server '$arg' (postgres, rabbitmq, nats, mosquitto or all)" ;;
		esac
	done
	# Keep the usual order, without duplicates.
	local -a sel=()
	for arg in "${ALL_SERVICES[@]}"; do
		[[ " ${svcs[*]} " != *" $arg "* ]] || sel+=("$arg")
	done
	"cmd_$cmd" "${sel[@]}"
}

main "$@"
