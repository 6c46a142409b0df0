#!/usr/bin/env bash
# Train one LLaVA-1.5 LoRA task adapter (the MM-MergeBench recipe: rank 16, one epoch).
#
#   scripts/v1_5/finetune_task_lora.sh [--model-base DIR] [--data-path FILE] [--image-folder DIR]
#       [--output-dir DIR] [--vision-tower DIR|NAME] [--dry-run] [-- extra llava.train.train flags]
#
# Every path and size comes from a flag or the environment; an env file named by ENV_FILE is
# sourced first (template with every variable: scripts/v1_5/env.example).
#   MODEL_BASE     base LLaVA-1.5 folder (required)
#   DATA_PATH      LLaVA-format training JSON (required)
#   IMAGE_FOLDER   folder the samples' image paths are relative to (default $DATA_ROOT/datasets)
#   OUTPUT_DIR     task folder to write (required); running again resumes from its checkpoints
#   VISION_TOWER   CLIP tower folder or name (default: the base model's mm_vision_tower)
#   LORA_R 16  LORA_ALPHA 32  LORA_DROPOUT 0.05  LR 2e-4  PROJECTOR_LR 2e-5  EPOCHS 1
#   BATCH_SIZE 16  GRAD_ACCUM 1  MAX_LENGTH (base's tokenizer_model_max_length)  WARMUP_RATIO 0.03  WEIGHT_DECAY 0  SEED 42
#   BAD_SAMPLE fail  REPORT_TO none  NUM_WORKERS 4  SAVE_STEPS 50000  SAVE_TOTAL_LIMIT 1
#   GRADIENT_CHECKPOINTING True  LOGGING_STEPS 1
#   PRECISION      bf16 | fp32 (default: bf16 on GPUs, fp32 on CPU)
#   NUM_GPUS       GPUs to use (default: all visible; 0 = one CPU process)
#   DEEPSPEED_CONFIG  default scripts/zero3.json when NUM_GPUS > 0; "none" = no deepspeed
#   LAUNCHER       deepspeed | torchrun | python (default: deepspeed when installed, else torchrun;
#                  python for one GPU without deepspeed)
#   MASTER_PORT    rendezvous port (default 29500)
#   DRY_RUN=1      print the command instead of running it
set -euo pipefail

if [[ -n "${ENV_FILE:-}" ]]; then
  set -a  # export what the file sets, for the commands started below
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  set +a
fi
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model-base) MODEL_BASE=$2; shift 2 ;;
    --data-path) DATA_PATH=$2; shift 2 ;;
    --image-folder) IMAGE_FOLDER=$2; shift 2 ;;
    --output-dir) OUTPUT_DIR=$2; shift 2 ;;
    --vision-tower) VISION_TOWER=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "finetune_task_lora.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

MODEL_BASE=${MODEL_BASE:-}
DATA_PATH=${DATA_PATH:-}
OUTPUT_DIR=${OUTPUT_DIR:-}
IMAGE_FOLDER=${IMAGE_FOLDER:-${DATA_ROOT:+$DATA_ROOT/datasets}}
for var in MODEL_BASE DATA_PATH OUTPUT_DIR; do
  if [[ -z "${!var}" ]]; then
    echo "finetune_task_lora.sh: set $var (flag, environment or ENV_FILE; see scripts/v1_5/env.example)" >&2
    exit 2
  fi
done

if [[ -z "${NUM_GPUS:-}" ]]; then
  NUM_GPUS=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
fi
if [[ "$NUM_GPUS" -gt 0 ]]; then
  PRECISION=${PRECISION:-bf16}
  DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-$REPO_ROOT/scripts/zero3.json}
else
  PRECISION=${PRECISION:-fp32}
  DEEPSPEED_CONFIG=none
fi

ARGS=(
  --lora_enable True --lora_r "${LORA_R:-16}" --lora_alpha "${LORA_ALPHA:-32}"
  --lora_dropout "${LORA_DROPOUT:-0.05}" --mm_projector_lr "${PROJECTOR_LR:-2e-5}"
  --model_name_or_path "$MODEL_BASE" --version v1
  --data_path "$DATA_PATH"
  --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2
  --mm_use_im_start_end False --mm_use_im_patch_token False
  --image_aspect_ratio pad --group_by_modality_length True
  --output_dir "$OUTPUT_DIR"
  --num_train_epochs "${EPOCHS:-1}" --per_device_train_batch_size "${BATCH_SIZE:-16}"
  --gradient_accumulation_steps "${GRAD_ACCUM:-1}"
  --save_strategy steps --save_steps "${SAVE_STEPS:-50000}" --save_total_limit "${SAVE_TOTAL_LIMIT:-1}"
  --learning_rate "${LR:-2e-4}" --weight_decay "${WEIGHT_DECAY:-0.}" --warmup_ratio "${WARMUP_RATIO:-0.03}"
  --lr_scheduler_type cosine --logging_steps "${LOGGING_STEPS:-1}"
  --gradient_checkpointing "${GRADIENT_CHECKPOINTING:-True}"
  --dataloader_num_workers "${NUM_WORKERS:-4}" --lazy_preprocess True
  --report_to "${REPORT_TO:-none}" --seed "${SEED:-42}" --bad_sample "${BAD_SAMPLE:-fail}"
)
if [[ -n "$IMAGE_FOLDER" ]]; then ARGS+=(--image_folder "$IMAGE_FOLDER"); fi
if [[ -n "${VISION_TOWER:-}" ]]; then ARGS+=(--vision_tower "$VISION_TOWER"); fi
if [[ -n "${MAX_LENGTH:-}" ]]; then ARGS+=(--model_max_length "$MAX_LENGTH"); fi
case "$PRECISION" in
  bf16) ARGS+=(--bf16 True) ;;
  fp32) ;;
  *) echo "finetune_task_lora.sh: PRECISION must be bf16 or fp32, not $PRECISION" >&2; exit 2 ;;
esac
if [[ "$NUM_GPUS" -gt 0 ]]; then
  ARGS+=(--tf32 True)
else
  ARGS+=(--use_cpu True --dataloader_pin_memory False)
fi
if [[ "$DEEPSPEED_CONFIG" != none ]]; then ARGS+=(--deepspeed "$DEEPSPEED_CONFIG"); fi

if [[ "$NUM_GPUS" -eq 0 ]]; then
  LAUNCHER=python
elif [[ -z "${LAUNCHER:-}" ]]; then
  if [[ "$DEEPSPEED_CONFIG" == none && "$NUM_GPUS" -eq 1 ]]; then LAUNCHER=python
  elif command -v deepspeed >/dev/null 2>&1; then LAUNCHER=deepspeed
  else LAUNCHER=torchrun; fi
fi
PORT=${MASTER_PORT:-29500}
case "$LAUNCHER" in
  python) CMD=(python -m llava.train.train) ;;
  deepspeed) CMD=(deepspeed --num_gpus "$NUM_GPUS" --master_port "$PORT" "$REPO_ROOT/llava/train/train_mem.py") ;;
  torchrun) CMD=(torchrun --nproc_per_node "$NUM_GPUS" --master_port "$PORT" -m llava.train.train_mem) ;;
  *) echo "finetune_task_lora.sh: LAUNCHER must be deepspeed, torchrun or python, not $LAUNCHER" >&2; exit 2 ;;
esac
CMD+=("${ARGS[@]}" "${EXTRA[@]}")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "${CMD[@]}"
