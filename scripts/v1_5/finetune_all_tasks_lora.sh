#!/usr/bin/env bash
# Train the eight MM-MergeBench task adapters one after another (finetune_task_lora.sh each).
#
#   scripts/v1_5/finetune_all_tasks_lora.sh [--tasks "ScienceQA ImageNet ..."] [--dry-run]
#       [-- extra llava.train.train flags, given to every task]
#
# Reads everything finetune_task_lora.sh reads (ENV_FILE, MODEL_BASE, VISION_TOWER, LORA_R, ...),
# plus:
#   DATA_ROOT     MM-MergeBench root holding instructions/ and datasets/ (default playground/data)
#   OUTPUT_ROOT   adapters are written to $OUTPUT_ROOT/<Task> (default playground/checkpoints/tasks)
#   TASKS         space-separated task names (default: the seen tasks, python -m llava.eval.tasks list --group seen)
#   TRAIN_FILE    training file inside each task's instructions folder (default train.json)
# Training data of task T: $DATA_ROOT/instructions/<folder of T>/$TRAIN_FILE, images under
# $IMAGE_FOLDER (default $DATA_ROOT/datasets). A task whose folder already holds a finished
# adapter (adapter_config.json) is skipped; an interrupted one resumes from its checkpoints.
set -euo pipefail

if [[ -n "${ENV_FILE:-}" ]]; then
  set -a  # export what the file sets, for the commands started below
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  set +a
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tasks) TASKS=$2; shift 2 ;;
    --dry-run) export DRY_RUN=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "finetune_all_tasks_lora.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Task names and their folders under instructions/ come from the task specs
# (llava/eval/tasks/<folder>/task.toml, plus plug-ins on $LLAVA_TASKS_PATH).
PYTHON=${PYTHON:-python}
DATA_ROOT=${DATA_ROOT:-playground/data}
OUTPUT_ROOT=${OUTPUT_ROOT:-playground/checkpoints/tasks}
TASKS=${TASKS:-$("$PYTHON" -m llava.eval.tasks list --group seen | tr '\n' ' ')}
TRAIN_FILE=${TRAIN_FILE:-train.json}
export DATA_ROOT
export IMAGE_FOLDER=${IMAGE_FOLDER:-$DATA_ROOT/datasets}

for task in $TASKS; do
  folder=$("$PYTHON" -m llava.eval.tasks folder "$task")
  out="$OUTPUT_ROOT/$task"
  if [[ -f "$out/adapter_config.json" ]]; then
    echo "== $task: $out already holds a finished adapter; skipping"
    continue
  fi
  echo "== $task -> $out"
  ENV_FILE="" DATA_PATH="$DATA_ROOT/instructions/$folder/$TRAIN_FILE" OUTPUT_DIR="$out" \
    bash "$HERE/finetune_task_lora.sh" -- "${EXTRA[@]}"
done
