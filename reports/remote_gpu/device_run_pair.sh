#!/bin/bash
# Two prepared runs (.gpu/A, .gpu/B) of the 135M student side by side on one GPU (at this size a step is Python
# overhead, so two runs cost the wall time of one). Second sitting: sr + si (rationales, ICL+SFT), se + sc (one
# domain).   bash device_run_pair.sh A B   (after one `cat .gpu/w1 >> /tmp/w/smollm2.gguf` call)
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pk/kdbundle
for d in engine store assets; do ln -sfn "$PWD/$d" /tmp/pk/kdbundle/$d; done
export PYTHONPATH=/tmp/site:/tmp/pk
G=/tmp/w/smollm2.gguf
cat .gpu/w2 >> $G
echo "$(cat .gpu/gguf.sha256)  $G" | sha256sum -c - || exit 3
for P in "$1" "$2"; do
  rm -rf /tmp/$P && cp -r .gpu/$P /tmp/$P
  python3 - <<PY
import json; p="/tmp/$P/config.json"; c=json.load(open(p)); c["student"]="$G"; json.dump(c, open(p,"w"), indent=2)
PY
  ( start=$(date +%s); KDBUNDLE_CACHE=/tmp/kdcache-$P sh /tmp/$P/launch.sh > $OUT/train-$P.log 2>&1; echo "$P: rc=$? wall $(( $(date +%s) - start )) s" ) &
done
wait
for P in "$1" "$2"; do
  tr '\r' '\n' < $OUT/train-$P.log | grep -v "it/s\]" | tail -3
  python3 - <<PY
import sqlite3
c = sqlite3.connect("/tmp/$P/remote.db"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print("$P", c.execute("SELECT id, status, steps, final_loss, seconds FROM train_runs").fetchall())
rows = c.execute("SELECT step, loss, grad_norm FROM train_metrics ORDER BY step").fetchall()
print(len(rows), "rows; every 60th:", [(s, round(l, 3), round(g or 0, 2)) for s, l, g in rows[::60]])
PY
  if [ -d /tmp/$P/runs/remote/run-1/adapter ]; then
    (cd /tmp/$P/runs/remote/run-1 && tar -cf /tmp/adapter-$P.tar adapter && split -b 15M /tmp/adapter-$P.tar $OUT/adapter-$P.tar.part-)
    cp /tmp/$P/remote.db $OUT/remote-$P.db
  fi
done
ls -la $OUT
