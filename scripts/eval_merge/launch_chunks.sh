#!/usr/bin/env bash
# Fan a runner's chunks out over the GPUs in $CUDA_VISIBLE_DEVICES (or --gpus), several per GPU
# allowed, and merge the chunk answer files in order (see llava/eval/launch.py):
#   scripts/eval_merge/launch_chunks.sh [--gpus 0,1] [--chunks-per-gpu 2] --answers-file OUT.jsonl \
#       -- --model-path M --question-file Q --image-folder I --task ScienceQA --temperature 0
set -euo pipefail
exec python -m llava.eval.launch "$@"
