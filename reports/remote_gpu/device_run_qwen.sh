#!/bin/bash
# Second sitting: qwen2.5-coder-0.5b LoRA r16, issue 12's recipe, fp32 (TF32 matmuls) at lr 1e-4 (.gpu/qa);
# only if that run fails (diverges), the fallback fixed beforehand: lr 5e-5 (.gpu/qb). Brings back what train-import needs.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pk/kdbundle
for d in engine store assets; do ln -sfn "$PWD/$d" /tmp/pk/kdbundle/$d; done
export PYTHONPATH=/tmp/site:/tmp/pk KDBUNDLE_CACHE=/tmp/kdcache
G=/tmp/w/qwen.gguf
cat .gpu/q/c08 >> $G
echo "$(cat .gpu/q.sha256)  $G" | sha256sum -c - || exit 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
for P in qa qb; do
  rm -rf /tmp/$P && cp -r .gpu/$P /tmp/$P
  python3 - <<PY
import json; p="/tmp/$P/config.json"; c=json.load(open(p)); c["student"]="$G"; json.dump(c, open(p,"w"), indent=2)
PY
  start=$(date +%s)
  sh /tmp/$P/launch.sh > $OUT/train-$P.log 2>&1; rc=$?
  echo "$P: launch.sh rc=$rc wall $(( $(date +%s) - start )) s"
  tr '\r' '\n' < $OUT/train-$P.log | grep -v "it/s\]" | tail -6
  python3 - <<PY
import sqlite3
c = sqlite3.connect("/tmp/$P/remote.db"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(c.execute("SELECT id, status, steps, final_loss, seconds FROM train_runs").fetchall())
rows = c.execute("SELECT step, loss, grad_norm FROM train_metrics ORDER BY step").fetchall() if any(r[1]=="grad_norm" for r in c.execute("PRAGMA table_info(train_metrics)")) else c.execute("SELECT step, loss FROM train_metrics ORDER BY step").fetchall()
print(len(rows), "metric rows; every 40th:", rows[::40], "last", rows[-2:])
PY
  if [ $rc -eq 0 ]; then
    cd /tmp/$P/runs/remote/run-1 && tar -cf /tmp/adapter.tar adapter && split -b 15M /tmp/adapter.tar $OUT/adapter-$P.tar.part- && cd - >/dev/null
    cp /tmp/$P/remote.db $OUT/remote-$P.db
    break
  fi
done
ls -la $OUT
