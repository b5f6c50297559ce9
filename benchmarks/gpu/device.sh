#!/bin/bash
# Runs ON the GPU machine, from the repo root. One vLLM server session serves every phase while the
# machine stays warm: the server is started with setsid and outlives the call that started it.
#   bash benchmarks/gpu/device.sh serve      # unpack the server site, start the server
#   bash benchmarks/gpu/device.sh bench128   # unpack the client site, versions, 128-token plan + open loop
#   bash benchmarks/gpu/device.sh bench32    # same server: 32-token plan + open loop
#   bash benchmarks/gpu/device.sh focus      # same server: the target rows only, 4 rounds at 32, 3 at 128
#                                            # (FOCUS32=N / FOCUS128=N set the rounds; 0 skips that length)
#   bash benchmarks/gpu/device.sh profile    # same server: py-spy of client and server, .batch/.abatch vs raw lists
#   bash benchmarks/gpu/device.sh offline    # stop the server, then the offline engine limit
# Carried folders (see benchmarks/gpu/README.md): .gpu1 (server site tarballs from ../shared/gpu-blobs),
# .gpu1b (the client site tarball), .gpu-kit (the kit: model/ and offline_bench.py), .gpu3 (this
# project's wheel and py-spy's). The two site folders together are over one call's carry limit.
RUNNER=device DEFAULT_BUDGET=575 MARGIN=25
source "$(dirname "$0")/_preamble.sh"
NEED="/tmp/site/vllm/__init__.py /tmp/site/xgrammar/__init__.py"
[ "$PHASE" = serve ] || NEED="$NEED /tmp/csite/langchain_openai/__init__.py"
for m in $NEED; do
  [ -f $m ] || { echo "COLD: $m missing; carry .gpu1 (server) or .gpu1b (client) again"; exit 3; }
done
PYSPY=/tmp/csite/bin/py-spy
# GPU utilisation, sampled twice a second while this phase runs (the engine, not the GPU, is the limit)
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 > "$OUTD/gpu_util_$PHASE.csv" 2>/dev/null &
SMI=$!
health() { python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" 2>/dev/null; }

start_server() {
  health && { echo "server already up (pid $(cat /tmp/vllm.pid 2>/dev/null))"; return 0; }
  echo "== server start $(date -u)"
  S0=$(date +%s)
  PYTHONPATH=/tmp/site setsid python3 -m vllm.entrypoints.cli.main serve /tmp/model --load-format dummy \
    --served-model-name Qwen/Qwen3-0.6B --host 127.0.0.1 --port 8000 --chat-template /tmp/model/chat_template.jinja \
    > /tmp/vllm.log 2>&1 &
  echo $! > /tmp/vllm.pid
  for i in $(seq 1 500); do
    health && break
    kill -0 "$(cat /tmp/vllm.pid)" 2>/dev/null || { echo "server died"; tail -40 /tmp/vllm.log; return 1; }
    sleep 0.5
  done
  echo "SERVER_STARTUP_S $(( $(date +%s) - S0 ))"
}
stop_server() {
  [ -f /tmp/vllm.pid ] || return 0
  P=$(cat /tmp/vllm.pid); kill -TERM -- -"$P" 2>/dev/null; sleep 4; kill -KILL -- -"$P" 2>/dev/null; rm -f /tmp/vllm.pid
}
versions() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $CPY -c "import sys, vllm" 2>/dev/null
  PYTHONPATH=/tmp/site python3 -c "import vllm, torch, sys; print('vllm', vllm.__version__, 'torch', torch.__version__, 'python', sys.version.split()[0])"
  $CPY -c "import langchain_core, langchain_openai, openai, aiohttp, httpx, langchain_qwen_fast as q; print('langchain-core', langchain_core.__version__, 'openai', openai.__version__, 'aiohttp', aiohttp.__version__, 'httpx', httpx.__version__, 'langchain-qwen-fast', q.__version__)"
}
# Results accumulate in /tmp (kept while the machine is warm) and are copied to $OUT after each phase,
# so the open-loop phase can read the best raw rate that the closed-loop phase measured.
run_plan() {  # max_tokens n rounds extra-args...
  MT=$1; N=$2; R=$3; shift 3
  F="/tmp/${PLAN:-gpu}_m$MT.jsonl"
  $CPY -m langchain_qwen_fast.bench.run --base-url http://127.0.0.1:8000/v1 --plan "${PLAN:-gpu}" --max-tokens "$MT" \
     --n "$N" --rounds "$R" --deadline "$DEADLINE" --out "$F" --tag "$PHASE" "$@" | cut -c1-260
  cp "$F" "$OUTD/" 2>/dev/null
}

profile_one() {  # scenario: py-spy on this client (all threads) and on the server (front-end + engine core)
  SC=$1
  $PYSPY record --pid "$(cat /tmp/vllm.pid)" --subprocesses --rate 100 --duration 7 --format raw --nonblocking \
     -o "/tmp/prof/server_$SC.txt" > "/tmp/prof/server_$SC.log" 2>&1 &
  SPID=$!
  PYTHONPATH=/tmp/csite $PYSPY record --threads --rate 250 --format raw -o "/tmp/prof/client_$SC.txt" -- \
     python3 -m langchain_qwen_fast.bench.run --base-url http://127.0.0.1:8000/v1 --only "$SC" --max-tokens 32 \
     --n 3000 --rounds 1 --no-warmup --out /tmp/prof/runs.jsonl --tag profile 2>&1 | tail -2 | cut -c1-260
  wait $SPID; tail -2 "/tmp/prof/server_$SC.log"
}

case "$PHASE" in
  serve)
    start_server || exit 5 ;;
  bench128)
    versions | tee /tmp/versions.txt; start_server || exit 5
    run_plan 128 1500 2 --poisson 0.5,0.9 --poisson-seconds 15
    cp /tmp/versions.txt "$OUTD/" 2>/dev/null ;;
  bench32)
    start_server || exit 5
    run_plan 32 3000 2 --poisson 0.5,0.9 --poisson-seconds 10 ;;
  focus)  # the target rows only, more rounds: raw, .batch/.abatch, ChatOpenAI default .batch
    versions | tee "$OUTD/versions.txt"; start_server || exit 5
    [ "${FOCUS32:-4}" -gt 0 ] && PLAN=focus run_plan 32 3000 "${FOCUS32:-4}"
    [ "${FOCUS128:-3}" -gt 0 ] && PLAN=focus run_plan 128 1500 "${FOCUS128:-3}" ;;
  profile)
    start_server || exit 5
    mkdir -p /tmp/prof
    $CPY -m langchain_qwen_fast.bench.run --base-url http://127.0.0.1:8000/v1 --only none --max-tokens 32 --n 64 \
       --rounds 0 --out /tmp/prof/warm.jsonl > /dev/null 2>&1
    for sc in qwen_batch_completions raw_aiohttp_list32_x16 qwen_abatch_completions; do profile_one $sc; done
    tar -C /tmp/prof -czf "$OUTD/profiles.tgz" . ;;
  offline)
    stop_server
    timeout $(( DEADLINE - $(date +%s) )) env PYTHONPATH=/tmp/site python3 .gpu-kit/offline_bench.py /tmp/model \
      "$OUTD/offline.json" --max-tokens 128,32 > "$OUTD/offline.log" 2>&1; echo "offline rc=$?"; tail -3 "$OUTD/offline.log" ;;
  stop) stop_server ;;
  *) echo "unknown phase $PHASE"; exit 2 ;;
esac
grep -E "Maximum concurrency|KV cache|max_num_seqs|Default sampling" /tmp/vllm.log 2>/dev/null | cut -c1-200 | tail -5
cp /tmp/vllm.log "$OUTD/vllm_$PHASE.log" 2>/dev/null
kill $SMI 2>/dev/null
echo "== $PHASE done in $(( $(date +%s) - T0 )) s"
