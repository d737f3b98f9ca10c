# Shared by the scripts that count instructions under callgrind (bench-*-instructions.sh).

# The binary to measure: $1, or a release build of this checkout.
conclave_binary() {
  if [ -n "${1:-}" ]; then
    echo "$1"
  else
    cargo build --release --locked -q
    echo ./target/release/conclave
  fi
}

# Starts `conclave dev` on $PORT under callgrind, counting into $1 and logging to $2, with
# no message limits; sets SERVER_PID and SERVER_DATA, and returns once it answers.
start_dev_under_callgrind() {
  SERVER_DATA=$(mktemp -d)
  rm -f "$1"*
  valgrind --tool=callgrind --callgrind-out-file="$1" \
    "$B" dev --port "$PORT" --data-dir "$SERVER_DATA" \
    --messages-per-second 1000000 --message-burst 1000000 >"$2" 2>&1 &
  SERVER_PID=$!
  until curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz"; do sleep 0.3; done
  sleep 1
}

# Stops the server start_dev_under_callgrind started and removes its data.
stop_dev() {
  kill -INT "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$SERVER_DATA"
}

# The instructions counted in callgrind dump $1.
counted_instructions() {
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
