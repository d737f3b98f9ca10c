# Sourced by the benchmark scripts: a throwaway PostgreSQL server, for clusters whose nodes
# must share one store. `start_postgres DIR PORT` starts it in DIR (as the postgres user
# when run as root: initdb and postgres refuse root) and sets PG (its URL) and PG_PID.
# PG_EXTRA adds server settings (e.g. PG_EXTRA="-c synchronous_commit=off").
start_postgres() {
  local dir=$1 port=$2 bin
  local as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chmod o+x "$(dirname "$dir")"
    chown postgres: "$dir"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
  "${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" ${PG_EXTRA:-} -k "$dir" -c listen_addresses=127.0.0.1 \
    >/dev/null 2>&1 &
  PG_PID=$!
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; do sleep 0.1; done
  PG=postgres://postgres@127.0.0.1:$port/postgres
}
