#!/bin/bash
# Sourced by engines.sh and device.sh (RUNNER names the log, DEFAULT_BUDGET and MARGIN set the deadline):
# the phase, its log under $OUT, the environment, the deadline, the server and client sites unpacked from the
# carried tarballs (each once per machine), the model copied from the kit, this project's wheel installed, and CPY
# (python3 with the client site on its path).
set -u
PHASE=${1:?phase}
T0=$(date +%s)
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
exec > >(tee -a "$OUTD/${RUNNER}_$PHASE.log") 2>&1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 \
       PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
BUDGET=${BUDGET:-$DEFAULT_BUDGET}
DEADLINE=$(( T0 + BUDGET - MARGIN ))
echo "== $PHASE start $(date -u) cores $(nproc)"
unpack() {  # tarball dest marker
  [ -e "$3" ] && return 0
  [ -f "$1" ] || return 0
  python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$1" "$2" || { echo "unpack $1 failed"; exit 4; }
  echo "unpacked $1 at $(( $(date +%s) - T0 )) s"
}
mkdir -p /tmp/site /tmp/csite
for d in .gpu1 .gpu1b; do
  unpack $d/vllm_strip.tar.xz /tmp/site /tmp/site/vllm/__init__.py
  unpack $d/ssite.tar.xz /tmp/site /tmp/site/fastapi/__init__.py
  unpack $d/extra.tar.xz /tmp/site /tmp/site/xgrammar/__init__.py
  unpack $d/csite.tar.xz /tmp/csite /tmp/csite/langchain_openai/__init__.py
done
if [ ! -f /tmp/model/tokenizer.json ] && [ -d .gpu-kit/model ]; then
  rm -rf /tmp/model; cp -r .gpu-kit/model /tmp/model
  python3 -c "import lzma; open('/tmp/model/tokenizer.json','wb').write(lzma.open('/tmp/model/tokenizer.json.xz').read())"
  rm -f /tmp/model/tokenizer.json.xz
fi
[ -d .gpu3 ] && python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/csite .gpu3/*.whl
CPY="env PYTHONPATH=/tmp/csite python3"
