#!/usr/bin/env bash
# progress.sh LABEL COMMAND...: run COMMAND, printing a line every 30s so a
# long cached build (Vault, kube-apiserver) never looks hung. The command's
# output goes to a log that is printed only if it fails.
set -uo pipefail
label=$1; shift
log=$(mktemp)
start=$(date +%s)
echo ">> ${label}"
"$@" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' INT TERM
while kill -0 "$pid" 2>/dev/null; do
	for _ in $(seq 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 1
	done
	kill -0 "$pid" 2>/dev/null && echo "   ... still ${label} ($(( $(date +%s) - start ))s)"
done
wait "$pid"; rc=$?
if [ $rc -ne 0 ]; then
	echo "!! ${label} failed (exit $rc):"; tail -50 "$log"
else
	echo "   done in $(( $(date +%s) - start ))s"
fi
rm -f "$log"
exit $rc
