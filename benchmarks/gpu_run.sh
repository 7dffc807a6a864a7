#!/usr/bin/env bash
# Every GPU benchmark in one run, for a lent NVIDIA machine with no registry access (see BENCHMARKS.md):
# carried .gl/*.deb (Vulkan loader + glvnd) and .whl/*.whl (wgpu, cffi, gguf, moshi, ...), then
#   doctor; a full synthetic checkpoint -> q4 package; kyutai-stt bench at position 0 and 750 (full KV ring), and
#   at 750 without the int8 path (--kernels no-int8: what devices without dot4I8Packed run, the f16 path where
#   they have shader-f16), without either (no-int8,no-f16: the portable kernels), without f16 KV rings
#   (no-f16-kv) and without the attention writing attn_out's rounded input (no-merge-rounding), the whole frame
#   (LM + Mimi), the Mimi encoder alone; the same LM step and whole frame in the browser host (runtime.js in Node
#   on Dawn: benchmarks/browser_host.py), its f16 and int8 paths' tokens against the native host's, the whole
#   frame kernel by kernel in both hosts (--profile); the native host's CPU time per dispatch (host_overhead.py);
#   `kyutai-stt transcribe` of a 10-minute file (RTF); the per-kernel matvec benchmark; the official
#   implementation (moshi, bf16, CUDA graphs) on the same GPU.
#   With BENCHES=streams: the stream tests on the GPU (the opt-in ones too), the LM step (with and without the
#   int8 path) and the whole frame for S = 1, 8, 16, 64, 256 streams, Mimi alone at 64 and 256 streams with both
#   of its GPU work splits, and the official LM step at batch 1, 64 and 256; BENCHES=huge: the tests marked huge (the full 2.6B vs the
#   official implementation, the 2.6B checkpoint written and loaded, the real Mimi past its context; ~16 GB of
#   memory, 4 min on 16 cores).
#   With BENCHES=files: the tests of Mimi several frames a submission and of the batch transcriber (the opt-in ones
#   too), Mimi at 40 streams 1, 4, 8 and 16 frames a submission, and a 10-minute file through --parallel-segments
#   with each (--mimi-frames).
# BENCHES selects (default: all but streams, files and huge): lm frame browser host mimi transcribe official streams
#   files huge.
# The browser host needs Node.js: node on PATH, or a carried .node/node.xz (an xz of a self-contained node binary,
# e.g. NodeSource's /usr/bin/node); and node_modules/webgpu (`npm ci`), or a carried .node/webgpu.tar.xz of its
# index.js, package.json and dist/linux-x64/ (paths from the repository root).
# KERNELS=1 adds the per-kernel lines. Tests need pytest, pluggy, iniconfig, moshi and einops among the wheels.
# Output: one JSON line per benchmark, also in $OUT/bench.log when OUT is set.
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 WGPU_BACKEND_TYPE=Vulkan XDG_RUNTIME_DIR="$(mktemp -d)"
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
log="${OUT:-/tmp}/bench.log"
run() { echo "+ $*" >&2; "$@" 2>&1 | tee -a "$log"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
run python3 -m kyutai_stt.cli doctor
run python3 -m kyutai_stt.cli synth --size full /tmp/ckpt >/dev/null
run python3 -m kyutai_stt.cli convert /tmp/ckpt /tmp/pkg-q4 --quant q4 >/dev/null
want() { [[ " ${BENCHES:-lm frame browser host mimi transcribe official} " == *" $1 "* ]]; }
if want streams; then
    run python3 -m pytest -q -p no:cacheprovider -m "huge or not huge" tests/models/test_streams.py
    for s in 1 8 16 64 256; do
        run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 100 --position 750 --streams "$s"
        run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 100 --position 750 --streams "$s" \
            --kernels no-int8
        run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 60 --position 750 --whole-frame --streams "$s"
    done
    for s in 64 256; do
        for t in gpu gpu-many; do run python3 benchmarks/mimi.py --streams "$s" --frames 20 --tuning "$t"; done
    done
    for b in 1 64 256; do run python3 tools/bench_official.py --steps 100 --batch "$b"; done
fi
if want files; then     # files in two passes: Mimi several frames a submission (docs/transcribe.md "Two passes")
    run python3 -m pytest -q -p no:cacheprovider -m "huge or not huge" tests/models/test_mimi_frames.py \
        tests/test_batch.py
    for f in 1 4 8 16; do
        run python3 benchmarks/mimi.py --package /tmp/pkg-q4 --streams 40 --mimi-frames "$f" --frames 20
    done
    run python3 benchmarks/mimi.py --package /tmp/pkg-q4 --streams 40 --mimi-frames 8 --frames 10 --profile
    for f in 1 8 16 4; do
        run python3 benchmarks/transcribe.py --package /tmp/pkg-q4 --seconds 600 -- --parallel-segments \
            --mimi-frames "$f"
    done
fi
want huge && run python3 -m pytest -q -p no:cacheprovider -m huge tests/models/test_family_parity.py \
    tests/test_model_family.py tests/models/test_mimi.py
if want lm; then
    for position in 0 750; do
        run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 400 --position "$position"
    done
    run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 400 --position 750 --kernels no-int8
    run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 400 --position 750 --kernels no-int8,no-f16
    run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 400 --position 750 --kernels no-f16-kv
    run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 400 --position 750 --kernels no-merge-rounding
fi
if want frame; then
    run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 400 --position 750 --whole-frame
    run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 400 --position 750 --whole-frame \
        --readback-depth 16 --batch-readback
fi
if want browser; then
    node="$(command -v node || true)"
    if [ -f .node/node.xz ]; then
        python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
            .node/node.xz /tmp/node && chmod +x /tmp/node && node=/tmp/node
    fi
    [ -f .node/webgpu.tar.xz ] && python3 -m tarfile -e .node/webgpu.tar.xz .
    run python3 benchmarks/browser_host.py --package /tmp/pkg-q4 --steps 400 --position 750 --node "$node"
    run python3 benchmarks/browser_host.py --package /tmp/pkg-q4 --steps 400 --position 750 --node "$node" \
        --kernels no-int8
    run python3 benchmarks/browser_host.py --package /tmp/pkg-q4 --steps 400 --position 750 --node "$node" \
        --kernels no-int8,no-f16
    # The f16 path: Dawn withholds shader-f16 on NVIDIA's Vulkan driver unless given this toggle (a test rig's).
    run python3 benchmarks/browser_host.py --package /tmp/pkg-q4 --steps 100 --position 750 --node "$node" \
        --kernels no-int8 --dawn-toggle enable-dawn-features=vulkan_enable_f16_on_nvidia --compare-native
    run python3 benchmarks/browser_host.py --package /tmp/pkg-q4 --steps 100 --position 750 --node "$node" \
        --compare-native
    # Kernel by kernel, Tint against Naga: each dispatch in a pass of its own in both hosts.
    run python3 benchmarks/browser_host.py --package /tmp/pkg-q4 --steps 100 --position 750 --node "$node" \
        --whole-frame --profile
    run python3 -m kyutai_stt.cli bench --package /tmp/pkg-q4 --steps 100 --position 750 --whole-frame --profile
    run python3 benchmarks/browser_host.py --package /tmp/pkg-q4 --steps 400 --position 750 --node "$node" \
        --whole-frame
fi
want host && run python3 benchmarks/host_overhead.py --package /tmp/pkg-q4 --whole-frame
want mimi && run python3 benchmarks/mimi.py
want transcribe && run python3 benchmarks/transcribe.py --package /tmp/pkg-q4 --seconds 600
[ -n "${KERNELS:-}" ] && run python3 benchmarks/kernels.py
want official && run python3 tools/bench_official.py --steps 300
