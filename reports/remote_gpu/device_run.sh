#!/bin/bash
# Device check (reports/remote_gpu/README.md): train the run prepared by `kdbundle train --prepare .gpu/prep`
# on a GPU machine with its launch.sh, and bring back what `kdbundle train-import` needs (remote.db and the
# adapter folder, split into 15 MB parts because that machine returns files of at most 16 MiB).
#   bash device_run.sh PREP GGUF_NAME LAST_PART SHA256_FILE
# PREP is the prepared folder; the student's GGUF travels in parts of < 64 MiB (what one call carries), each
# earlier call appending its part to /tmp/w/GGUF_NAME (`cat PART >> /tmp/w/GGUF_NAME`), this one the last part;
# SHA256_FILE holds the whole file's sha256. .whl holds wheels of what the GPU image lacks (sqlite-utils,
# sqlite-fts4, click-default-group, platformdirs, gguf); kdbundle runs from the repository through a package shim.
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pk/kdbundle
for d in engine store assets; do ln -sfn "$PWD/$d" /tmp/pk/kdbundle/$d; done
export PYTHONPATH=/tmp/site:/tmp/pk KDBUNDLE_CACHE=/tmp/kdcache
PREP=$1 G=/tmp/w/$2
cat "$3" >> "$G"
echo "$(cat "$4")  $G" | sha256sum -c -
rm -rf /tmp/prep && cp -r "$PREP" /tmp/prep
python3 - <<PY
import json; p="/tmp/prep/config.json"; c=json.load(open(p)); c["student"]="$G"; json.dump(c, open(p,"w"), indent=2)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
start=$(date +%s)
sh /tmp/prep/launch.sh 2>&1 | tee $OUT/train.log | grep -v "it/s\]" | tail -40
echo "launch.sh wall: $(( $(date +%s) - start )) s"
python3 - <<'PY'
import sqlite3
c = sqlite3.connect("/tmp/prep/remote.db")
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(c.execute("SELECT id, status, steps, final_loss, seconds FROM train_runs").fetchall())
rows = c.execute("SELECT step, loss, tokens, elapsed FROM train_metrics ORDER BY step").fetchall()
print(len(rows), "metric rows; first", rows[:2], "last", rows[-2:])
PY
cd /tmp/prep/runs/remote/run-1 && ls -la adapter && tar -cf /tmp/adapter.tar adapter && split -b 15M /tmp/adapter.tar $OUT/adapter.tar.part-
cp /tmp/prep/remote.db $OUT/
ls -la $OUT
