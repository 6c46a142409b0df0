#!/usr/bin/env bash
# Shared by scripts/eval_merge/*.sh and scripts/v1_5/eval/*.sh: read settings, run the pipeline.
#
# Every setting comes from a flag or from the environment; an env file (see env.example),
# named by --env-file FILE or $ENV_FILE, is sourced first, and flags win over it:
#   MODEL_BASE      base model folder (e.g. checkpoints/llava-v1.5-7b)              --model-base
#   MODEL_PATH      model to evaluate: a merged/task adapter folder on MODEL_BASE or  --model-path
#                   a full model; empty = MODEL_BASE itself (zero-shot)
#   ADAPTERS_DIR    Eval_direct.sh only: one adapter sub-folder per task              --adapters-dir
#   DATA_ROOT       benchmark data (instructions/, datasets/, eval/)                  --data-root
#   RESULTS         results folder (default: results); output goes to                 --results
#                   $RESULTS/$RUN_NAME/<task>/{answers.jsonl,result.json,...}
#   RUN_NAME        default: the name of MODEL_PATH's folder, or zero-shot            --run-name
#   GPUS            GPU ids to fan chunks out over (default: $CUDA_VISIBLE_DEVICES)  --gpus
#   CHUNKS_PER_GPU  chunks per GPU (default 1; one chunk in all = one process)        --chunks-per-gpu
#   BATCH_SIZE      questions per generate call (default 1, the paper's setting)      --batch-size
#   PROTOCOL        official (paper tables, default) or strict                        --protocol
# Anything after "--" goes to `python -m llava.eval.pipeline` as is (e.g. -- --limit 10).
set -euo pipefail

eval_main() {
  local tasks=$1 script=$2
  shift 2
  local args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do            # the env file first, so flags win
    if [[ "${args[$i]}" == "--env-file" ]]; then ENV_FILE=${args[$((i + 1))]:-}; fi
  done
  if [[ -n "${ENV_FILE:-}" ]]; then
    if [[ ! -f "$ENV_FILE" ]]; then echo "$script: env file $ENV_FILE not found" >&2; exit 2; fi
    # shellcheck disable=SC1090
    source "$ENV_FILE"
  fi
  MODEL_BASE=${MODEL_BASE:-}; MODEL_PATH=${MODEL_PATH:-}; ADAPTERS_DIR=${ADAPTERS_DIR:-}
  DATA_ROOT=${DATA_ROOT:-}; RESULTS=${RESULTS:-results}; RUN_NAME=${RUN_NAME:-}
  GPUS=${GPUS:-${CUDA_VISIBLE_DEVICES:-}}; CHUNKS_PER_GPU=${CHUNKS_PER_GPU:-1}
  BATCH_SIZE=${BATCH_SIZE:-1}; PROTOCOL=${PROTOCOL:-official}
  local extra=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --env-file) shift 2 ;;
      --model-base) MODEL_BASE=$2; shift 2 ;;
      --model-path) MODEL_PATH=$2; shift 2 ;;
      --adapters-dir) ADAPTERS_DIR=$2; shift 2 ;;
      --data-root) DATA_ROOT=$2; shift 2 ;;
      --results) RESULTS=$2; shift 2 ;;
      --run-name) RUN_NAME=$2; shift 2 ;;
      --gpus) GPUS=$2; shift 2 ;;
      --chunks-per-gpu) CHUNKS_PER_GPU=$2; shift 2 ;;
      --batch-size) BATCH_SIZE=$2; shift 2 ;;
      --protocol) PROTOCOL=$2; shift 2 ;;
      --tasks) tasks=$2; shift 2 ;;
      --) shift; extra=("$@"); break ;;
      -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
      *) echo "$script: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
  done
  if [[ -z "$DATA_ROOT" ]]; then echo "$script: set DATA_ROOT or pass --data-root" >&2; exit 2; fi
  local model=()
  if [[ -n "$ADAPTERS_DIR" ]]; then
    [[ -n "$MODEL_BASE" ]] || { echo "$script: --adapters-dir needs MODEL_BASE / --model-base" >&2; exit 2; }
    model=(--adapters-dir "$ADAPTERS_DIR" --model-base "$MODEL_BASE")
    RUN_NAME=${RUN_NAME:-individual}
  elif [[ -n "$MODEL_PATH" ]]; then
    model=(--model-path "$MODEL_PATH")
    if [[ -n "$MODEL_BASE" ]]; then model+=(--model-base "$MODEL_BASE"); fi
    RUN_NAME=${RUN_NAME:-$(basename "$MODEL_PATH")}
  elif [[ -n "$MODEL_BASE" ]]; then
    model=(--model-path "$MODEL_BASE")
    RUN_NAME=${RUN_NAME:-zero-shot}
  else
    echo "$script: set MODEL_PATH and/or MODEL_BASE (or pass --model-path / --model-base)" >&2; exit 2
  fi
  local cmd=(python -m llava.eval.pipeline "${model[@]}" --data-root "$DATA_ROOT" --results "$RESULTS"
             --run-name "$RUN_NAME" --tasks "$tasks" --chunks-per-gpu "$CHUNKS_PER_GPU"
             --batch-size "$BATCH_SIZE" --protocol "$PROTOCOL")
  if [[ -n "$GPUS" ]]; then cmd+=(--gpus "$GPUS"); fi
  exec "${cmd[@]}" "${extra[@]}"
}
