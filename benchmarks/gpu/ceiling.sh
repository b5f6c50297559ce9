#!/bin/bash
# Runs ON the GPU machine, from the repo root: the one-GPU ceiling with CUDA MPS. Two sets of three vLLM servers
# on one GPU, side by side, each started by `qwen-fast engines` with setsid (they outlive each call while the
# machine stays warm, so every phase measures the same server session; the launchers' PIDs are in
# /tmp/ceiling_*.pid):
#   old: 3 servers, --no-mps, the old default flags (--disable-uvicorn-access-log only), ports 8000-8002
#   new: 3 servers under the launcher's MPS daemon, with NEW_FLAGS (default --performance-mode throughput),
#        ports 8004-8006
# Each server gets 8 GiB of KV cache and --gpu-memory-utilization 0.15 (six share the card: 6 x 12.2 GiB fit
# 80 GB, and the last start-up check, 0.15 x total free, still passes with five running).
#   bash benchmarks/gpu/ceiling.sh serve     # start both sets; fails loudly if they cannot run side by side
#                                            # (then ONLY=old or ONLY=new serves one set per session)
#   bash benchmarks/gpu/ceiling.sh flags32   # raw lists at 16/32/64 lists in flight per server over each set,
#   bash benchmarks/gpu/ceiling.sh flags128  #   and .batch at 512 (default), 1024 and 2048 sequences per server
#   bash benchmarks/gpu/ceiling.sh proof     # raw lists, .batch/.abatch over each set, ChatOpenAI .batch on one
#                                            # engine: 32 tokens N 3000, 128 tokens N 1500, 3 interleaved rounds
#   bash benchmarks/gpu/ceiling.sh faults    # a new-set server SIGKILLed at 30% of a 5,000-item .batch and
#                                            # restarted under the same MPS daemon; then the daemon SIGKILLed
#   bash benchmarks/gpu/ceiling.sh locust    # Locust, 100 users calling invoke, 32 tokens: BatchedChatQwen over
#                                            # the new set, ChatOpenAI on one old engine, then the same offered
#                                            # load open-loop without Locust
#   bash benchmarks/gpu/ceiling.sh stop      # SIGTERM to each launcher by PID (servers, then the MPS daemon)
# Carried folders (benchmarks/gpu/README.md): .gpu1 (server tarballs) and .gpu-kit for serve; .gpu1b (client
# site), .gpu-kit and .gpu3 (this project's wheel) for the others, and .gpu4 (Locust's wheels) for locust.
# CEILING_SIM=1 runs every phase with the project's simulator standing in for vLLM (no GPU, no tarballs): the
# check of this script on a CPU machine; QF_SCALE=0.05 shrinks the request counts there, and DEPTHS (lists in
# flight per server, raw rows), LIMITS (flags: admission limits per server) and OLD_DEPTH (proof: the client's old
# default, 512) can be set smaller to match (each row sends at least three times what it keeps in flight).
RUNNER=ceiling DEFAULT_BUDGET=570 MARGIN=30
source "$(dirname "$0")/_preamble.sh"
NEW_FLAGS=${NEW_FLAGS:---performance-mode throughput}
OLD="http://127.0.0.1:8000/v1 http://127.0.0.1:8001/v1 http://127.0.0.1:8002/v1"
NEW="http://127.0.0.1:8004/v1 http://127.0.0.1:8005/v1 http://127.0.0.1:8006/v1"
SCALE=${QF_SCALE:-1}
scaled() { python3 -c "import sys; print(max(64, int($1 * float(sys.argv[1]))))" "$SCALE"; }
commas() { echo "$1" | tr ' ' ','; }
if [ -n "${CEILING_SIM:-}" ]; then
  CPY="env PYTHONPATH=$PWD ${SIM_PY:-$PWD/.venv/bin/python}"
  SMI_OK=0
else
  SMI_OK=1
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 \
    > "$OUTD/gpu_util_$PHASE.csv" 2>/dev/null &
  SMI=$!
fi

launch() {  # name port extra-launcher-args -- serve args
  local name=$1 port=$2; shift 2
  setsid python3 -c "$BOOT" --engines 3 --model "$MODEL" --port "$port" --vllm /tmp/vllm --keep-going \
    --ready-file "/tmp/ready_$name.json" --log-dir "/tmp/logs_$name" --stop-timeout 30 "$@" \
    > "/tmp/launch_$name.log" 2>&1 < /dev/null &
  echo $! > "/tmp/ceiling_$name.pid"
}

serve() {
  # The launcher needs only the standard library: run it from a copy of the package without its __init__
  # (which imports langchain), with `vllm` a wrapper around the unpacked server site (or the simulator).
  rm -rf /tmp/qf /tmp/ready_old.json /tmp/ready_new.json /tmp/ceiling_restarted.pids
  mkdir -p /tmp/qf && cp -r langchain_qwen_fast /tmp/qf/
  if [ -n "${CEILING_SIM:-}" ]; then
    # `vllm serve MODEL --host H --port P ...` -> the simulator on that port (vLLM's other flags are dropped)
    cat > /tmp/vllm <<EOF
#!/bin/bash
while [ \$# -gt 0 ]; do case "\$1" in --host) H=\$2; shift;; --port) P=\$2; shift;; esac; shift; done
export PYTHONPATH=$PWD
exec ${SIM_PY:-$PWD/.venv/bin/python} -m langchain_qwen_fast.testing.server --host \$H --port \$P --latency h100
EOF
    MODEL=Qwen/Qwen3-0.6B; COMMON=""
  else
    printf '#!/bin/bash\nexport PYTHONPATH=/tmp/site\nexec python3 -m vllm.entrypoints.cli.main "$@"\n' > /tmp/vllm
    MODEL=/tmp/model
    COMMON="--load-format dummy --served-model-name Qwen/Qwen3-0.6B --chat-template /tmp/model/chat_template.jinja"
    COMMON="$COMMON --kv-cache-memory-bytes 8589934592 --gpu-memory-utilization 0.15"
  fi
  chmod +x /tmp/vllm
  BOOT="import sys, types; p = types.ModuleType('langchain_qwen_fast'); p.__path__ = ['/tmp/qf/langchain_qwen_fast']; \
sys.modules['langchain_qwen_fast'] = p; from langchain_qwen_fast.cli.engines import main; sys.exit(main(sys.argv[1:]))"
  [ "${ONLY:-new}" = new ] || { echo '[]' > /tmp/ready_new.json; : > /tmp/launch_new.log; }
  [ "${ONLY:-old}" = old ] || { echo '[]' > /tmp/ready_old.json; : > /tmp/launch_old.log; }
  # the old defaults: no MPS, the flags before the throughput mode joined them
  [ "${ONLY:-old}" = old ] && launch old 8000 --no-mps --no-default-flags -- $COMMON --disable-uvicorn-access-log
  # shellcheck disable=SC2086
  [ "${ONLY:-new}" = new ] && launch new 8004 -- $COMMON $NEW_FLAGS
  local failed=""
  while :; do
    [ -f /tmp/ready_old.json ] && [ -f /tmp/ready_new.json ] && break
    for name in old new; do
      if [ ! -f "/tmp/ready_$name.json" ] && ! kill -0 "$(cat /tmp/ceiling_$name.pid 2>/dev/null)" 2>/dev/null; then
        failed="$failed $name"
      fi
    done
    [ -n "$failed" ] && break
    [ "$(date +%s)" -gt "$DEADLINE" ] && { failed=" (not ready by the deadline)"; break; }
    sleep 1
  done
  echo "READY_S $(( $(date +%s) - T0 ))"
  for name in old new; do echo "== launcher $name"; tail -n 40 "/tmp/launch_$name.log"; done
  if [ -n "$failed" ]; then
    # NVIDIA's MPS guide: in the Default compute mode, processes without MPS share the GPU with the MPS server
    # by time slicing; if this fails here, serve the sets in turn (ONLY=old, then stop and ONLY=new).
    echo "SIDE_BY_SIDE_FAILED:$failed; the launcher logs above say why"
  fi
  grep -q "MPS: control daemon pid" /tmp/launch_new.log && echo "MPS_NEW ok" || echo "MPS_NEW not running"
  if [ "$SMI_OK" = 1 ]; then
    PIPE=$(grep -o "CUDA_MPS_PIPE_DIRECTORY=[^ ]*" /tmp/launch_new.log | head -1 | cut -d= -f2)
    [ -n "$PIPE" ] && { echo "== MPS servers and clients ($PIPE)"; S=$(echo get_server_list | CUDA_MPS_PIPE_DIRECTORY=$PIPE nvidia-cuda-mps-control);
      echo "servers: $S"; for s in $S; do echo "get_client_list $s" | CUDA_MPS_PIPE_DIRECTORY=$PIPE nvidia-cuda-mps-control; done; }
    nvidia-smi > "$OUTD/nvidia_smi_serve.txt" 2>&1
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
  fi
  cp /tmp/launch_old.log /tmp/launch_new.log "$OUTD/" 2>/dev/null
  [ -z "$failed" ]
}

stop() {
  for name in old new; do
    pid=$(cat "/tmp/ceiling_$name.pid" 2>/dev/null) || continue
    kill -TERM "$pid" 2>/dev/null && echo "SIGTERM to launcher $name ($pid)"
  done
  for pid in $(cat /tmp/ceiling_restarted.pids 2>/dev/null); do kill -TERM -- "-$pid" 2>/dev/null; done
  for _ in $(seq 1 60); do
    alive=""
    for name in old new; do kill -0 "$(cat /tmp/ceiling_$name.pid 2>/dev/null)" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 1
  done
  for name in old new; do
    pid=$(cat "/tmp/ceiling_$name.pid" 2>/dev/null) || continue
    kill -0 "$pid" 2>/dev/null && { echo "launcher $name still up: SIGKILL to its group"; kill -KILL -- "-$pid"; }
    tail -n 5 "/tmp/launch_$name.log"
  done
  for pid in $(cat /tmp/ceiling_restarted.pids 2>/dev/null); do kill -KILL -- "-$pid" 2>/dev/null; done
  rm -f /tmp/ceiling_old.pid /tmp/ceiling_new.pid /tmp/ceiling_restarted.pids
  if [ "$SMI_OK" = 1 ]; then nvidia-smi --query-gpu=memory.used --format=csv,noheader; fi
}

sets() { echo "--set old=$(commas "$OLD") --set new=$(commas "$NEW")"; }

case "$PHASE" in
  serve) serve ;;
  flags32|flags128)  # what the defaults should be: the server flags (old vs new) and the client's depth
    MT=${PHASE#flags}; N=$([ "$MT" = 32 ] && scaled 3000 || scaled 1500)
    # shellcheck disable=SC2046
    $CPY -m langchain_qwen_fast.bench.replicas $(sets) --depths "${DEPTHS:-16,32,64}" --rows raw,batch \
      --max-concurrency "${LIMITS:-1024,2048}" --rounds 3 --n "$N" --max-tokens "$MT" --deadline "$DEADLINE" --out "$OUTD" ;;
  proof)
    $CPY -c "import langchain_core, langchain_openai, aiohttp, langchain_qwen_fast as q; print('langchain-core', langchain_core.__version__, 'aiohttp', aiohttp.__version__, 'qwen-fast', q.__version__)"
    MID=$(( T0 + (BUDGET - 30) * 40 / 100 ))
    # shellcheck disable=SC2046
    $CPY -m langchain_qwen_fast.bench.replicas $(sets) --depths "${DEPTHS:-16,64}" --rows raw,batch,abatch \
      --max-concurrency "${OLD_DEPTH:-512}" --openai --rounds 3 --n "$(scaled 3000)" --max-tokens 32 \
      --deadline "$MID" --out "$OUTD"
    # shellcheck disable=SC2046
    $CPY -m langchain_qwen_fast.bench.replicas $(sets) --depths "${DEPTHS:-16,64}" --rows raw,batch,abatch \
      --max-concurrency "${OLD_DEPTH:-512}" --openai --rounds 3 --n "$(scaled 1500)" --max-tokens 128 \
      --deadline "$DEADLINE" --out "$OUTD" ;;
  faults)
    $CPY benchmarks/gpu/gpu_extra.py --a "$NEW" --out "$OUTD" --deadline "$DEADLINE" --only failover_restart
    $CPY benchmarks/gpu/gpu_extra.py --a "$NEW" --out "$OUTD" --only mps_death
    tail -n 8 /tmp/launch_new.log ;;
  locust)
    SECS=${LOCUST_SECONDS:-60}
    LPY=$CPY
    if [ -d .gpu4 ]; then  # Locust and its dependencies, in a site of their own beside the client site
      [ -f /tmp/lsite/locust/__init__.py ] || python3 -m pip install -q --no-index --no-deps --target /tmp/lsite .gpu4/*.whl
      LPY="env PYTHONPATH=/tmp/lsite:/tmp/csite python3"
    fi
    for who in QwenUser OpenAIUser; do
      host=$([ "$who" = QwenUser ] && commas "$NEW" || echo "${OLD%% *}")
      $LPY -m locust -f benchmarks/locustfile.py --headless -u 100 -r 100 -t "${SECS}s" --host "$host" -L WARNING \
        --json-file "$OUTD/locust_$who" --stop-timeout 10 "$who"
    done
    # Locust's numbers (rate, failures, percentiles from its response-time histogram), then the same offered load
    # open loop without Locust: the package's own Poisson benchmark over the new set
    $CPY - "$OUTD" "$(commas "$NEW")" "$SECS" <<'PY'
import json, sys
from langchain_qwen_fast.bench import scenarios as S
out, urls, secs = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
def summary(who):
    s = json.load(open(f"{out}/locust_{who}.json"))[0]
    hist = sorted((int(float(k)), v) for k, v in s["response_times"].items())
    def pct(p):
        seen = 0
        for ms, count in hist:
            seen += count
            if seen >= p * s["num_requests"]:
                return ms
    return {"phase": "locust", "client": s["name"], "users": 100, "requests": s["num_requests"],
            "failures": s["num_failures"], "error_rate": round(s["num_failures"] / max(1, s["num_requests"]), 4),
            "req_s": round(s["num_requests"] / secs, 1), "p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}
rows = [summary("QwenUser"), summary("OpenAIUser")]
row = S.poisson_scenario(S.Workload(base_url=urls, max_tokens=32), "qwen", rows[0]["req_s"], min(secs, 30.0))
rows.append({**row, "phase": "locust_openloop"})
with open(f"{out}/locust.jsonl", "a") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
        print(json.dumps({k: r.get(k) for k in ("phase", "client", "scenario", "offered_rps", "req_s", "error_rate",
                                                   "errors", "p50_ms", "p95_ms", "p50_s", "p95_s")}))
PY
    ;;
  stop) stop ;;
  *) echo "unknown phase $PHASE"; exit 2 ;;
esac
RC=$?
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
echo "== $PHASE done in $(( $(date +%s) - T0 )) s (exit $RC)"
exit $RC
