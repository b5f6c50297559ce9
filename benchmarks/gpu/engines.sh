#!/bin/bash
# Runs ON the GPU machine, from the repo root: several vLLM engines on one GPU, started with `qwen-fast engines`.
# Servers are started with setsid and outlive each call while the machine stays warm, so every phase measures the
# same server session.
#   bash benchmarks/gpu/engines.sh serve     # unpack the server site, start set A (4 engines, the launcher's
#                                            # default flags, ports 8000-8003) and set B (3 engines, --no-default-flags,
#                                            # ports 8004-8006), wait for both
#   bash benchmarks/gpu/engines.sh table     # engines per GPU: 1-4 engines of set A at 32 and 128 tokens + ChatOpenAI
#   bash benchmarks/gpu/engines.sh extra     # server flags (A vs B), failover, prefix affinity (set B), open loop
#   bash benchmarks/gpu/engines.sh serve_a   # set A alone (ENGINES_A engines, default 3), for the `order` phase
#   bash benchmarks/gpu/engines.sh order     # .batch against .abatch with the row order alternating, N 3000 and 12000
# Carried folders (benchmarks/gpu/README.md): .gpu1 (server tarballs), .gpu-kit (model/), then .gpu1b (client site)
# and .gpu3 (this project's wheel) for the client phases.
RUNNER=engines DEFAULT_BUDGET=570 MARGIN=30
source "$(dirname "$0")/_preamble.sh"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 \
  > "$OUTD/gpu_util_$PHASE.csv" 2>/dev/null &
SMI=$!
A="http://127.0.0.1:8000/v1 http://127.0.0.1:8001/v1 http://127.0.0.1:8002/v1 http://127.0.0.1:8003/v1"
B="http://127.0.0.1:8004/v1 http://127.0.0.1:8005/v1 http://127.0.0.1:8006/v1"
urls() { local out=""; for u in $1; do out="$out --base-url $u"; done; echo "$out"; }

serve() {
  # The launcher needs only the standard library: run it from a copy of the package without its __init__
  # (which imports langchain), with `vllm` a two-line wrapper around the unpacked server site.
  rm -rf /tmp/qf && mkdir -p /tmp/qf && cp -r langchain_qwen_fast /tmp/qf/
  printf '#!/bin/bash\nexport PYTHONPATH=/tmp/site\nexec python3 -m vllm.entrypoints.cli.main "$@"\n' > /tmp/vllm
  chmod +x /tmp/vllm
  BOOT="import sys, types; p = types.ModuleType('langchain_qwen_fast'); p.__path__ = ['/tmp/qf/langchain_qwen_fast']; \
sys.modules['langchain_qwen_fast'] = p; from langchain_qwen_fast.cli.engines import main; sys.exit(main(sys.argv[1:]))"
  SERVE="--load-format dummy --served-model-name Qwen/Qwen3-0.6B --chat-template /tmp/model/chat_template.jinja"
  rm -f /tmp/ready_a.json /tmp/ready_b.json
  if [ -n "${ONLY_B:-}" ]; then echo '[]' > /tmp/ready_a.json; else
  # --no-mps: these sets are the H200 run of docs/benchmarks.md section 1, without MPS (ceiling.sh measures MPS)
  setsid python3 -c "$BOOT" --engines ${ENGINES_A:-4} --model /tmp/model --port 8000 --vllm /tmp/vllm --keep-going --no-mps \
    --ready-file /tmp/ready_a.json --log-dir /tmp/logs_a -- $SERVE > /tmp/launch_a.log 2>&1 < /dev/null &
  fi
  if [ -n "${ONLY_A:-}" ]; then echo '[]' > /tmp/ready_b.json; : > /tmp/launch_b.log; else
  setsid python3 -c "$BOOT" --engines 3 --model /tmp/model --port 8004 --vllm /tmp/vllm --keep-going --no-mps \
    --no-default-flags --ready-file /tmp/ready_b.json --log-dir /tmp/logs_b -- $SERVE > /tmp/launch_b.log 2>&1 < /dev/null &
  fi
  for i in $(seq 1 1000); do
    [ -f /tmp/ready_a.json ] && [ -f /tmp/ready_b.json ] && break
    [ $(date +%s) -gt $DEADLINE ] && { echo "not ready by the deadline"; break; }
    sleep 1
  done
  echo "READY_S $(( $(date +%s) - T0 ))"; cat /tmp/launch_a.log /tmp/launch_b.log | head -30
  nvidia-smi --query-gpu=memory.used --format=csv,noheader
  # idle CPU of the engine processes over 5 s (do idle engines spin a core?)
  python3 - <<'PY'
import os, time
def ticks():
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                cmd = open(f"/proc/{pid}/cmdline").read()
            except OSError:
                continue
            if "vllm" in cmd:
                out[pid] = int(st[11]) + int(st[12])
    return out
a = ticks(); time.sleep(5); b = ticks()
busy = sum(b[p] - a.get(p, 0) for p in b) / os.sysconf("SC_CLK_TCK") / 5
print(f"IDLE_ENGINE_CPU {busy:.2f} cores over {len(b)} vllm processes")
PY
  for p in 8000 $([ -z "${ONLY_A:-}" ] && echo 8004); do
    python3 -c "import urllib.request; t = urllib.request.urlopen('http://127.0.0.1:$p/metrics', timeout=5).read().decode(); print('METRICS $p', sum(1 for l in t.splitlines() if l.startswith('vllm:')), 'vllm: lines;', [l for l in t.splitlines() if l.startswith('vllm:prefix_cache_queries')][:1])"
  done
  cp /tmp/launch_a.log /tmp/launch_b.log "$OUTD/" 2>/dev/null
}

case "$PHASE" in
  serve) serve ;;
  serve_b)  # set B alone (3 engines, --no-default-flags: /metrics kept) for a later prefix-affinity phase
    ONLY_B=1 serve ;;
  serve_a)  # set A alone, ENGINES_A engines (default 3 here), launcher defaults
    ONLY_A=1 ENGINES_A=${ENGINES_A:-3} serve ;;
  order)  # is .batch's gap to .abatch the row order or a fixed cost? alternate the order, and a 4x longer run
    A3="http://127.0.0.1:8000/v1 http://127.0.0.1:8001/v1 http://127.0.0.1:8002/v1"
    $CPY -m langchain_qwen_fast.bench.replicas $(urls "$A3") --servers 3,2 --variants 0 --rounds 4 \
      --n 3000 --max-tokens 32 --deadline $(( T0 + 200 )) --out "$OUTD"
    $CPY -m langchain_qwen_fast.bench.replicas $(urls "$A3") --servers 3 --variants 0 --rounds 4 \
      --n 12000 --max-tokens 32 --deadline $DEADLINE --out "$OUTD" ;;
  affinity_many)
    $CPY benchmarks/gpu/gpu_extra.py --a "$A" --b "$B" --out "$OUTD" --deadline $DEADLINE --only affinity_many ;;
  table)
    $CPY -c "import langchain_core, langchain_openai, openai, aiohttp, langchain_qwen_fast as q; print('langchain-core', langchain_core.__version__, 'openai', openai.__version__, 'aiohttp', aiohttp.__version__, 'qwen-fast', q.__version__)"
    PYTHONPATH=/tmp/site python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    MID=$(( T0 + (BUDGET - 30) * 45 / 100 ))
    $CPY -m langchain_qwen_fast.bench.replicas $(urls "$A") --servers 1,3,2,4 --variants 3 --openai --rounds 3 \
      --n 3000 --max-tokens 32 --deadline $MID --out "$OUTD"
    $CPY -m langchain_qwen_fast.bench.replicas $(urls "$A") --servers 1,3,2,4 --variants 3 --openai --rounds 3 \
      --n 1500 --max-tokens 128 --deadline $DEADLINE --out "$OUTD" ;;
  extra)
    $CPY benchmarks/gpu/gpu_extra.py --a "$A" --b "$B" --out "$OUTD" --deadline $DEADLINE ;;
  stop)
    pkill -TERM -f "langchain_qwen_fast.cli.engines" ;;
  *) echo "unknown phase $PHASE"; exit 2 ;;
esac
kill $SMI 2>/dev/null
echo "== $PHASE done in $(( $(date +%s) - T0 )) s"
