#!/usr/bin/env bash
# Merge a folder of LLaVA LoRA task adapters into one adapter.
#
#   scripts/merge/merge_lora.sh --tasks-dir DIR --out DIR [--method NAME] [--preset NAME] [-- extra robustmerge flags]
#
# Every path comes from a flag or the environment (an optional env file named by ENV_FILE
# is sourced first):
#   TASKS_DIR   folder whose sub-folders are task adapters (each with adapter_config.json)
#   TASKS       optional space-separated sub-folder names, in merge order (default: all, sorted)
#   MERGE_OUT   output folder
#   METHOD      merge rule (default robustmerge); PRESET (default official for robustmerge)
#   DEVICE      cpu | cuda | auto (default auto)
set -euo pipefail

if [[ -n "${ENV_FILE:-}" ]]; then
  # shellcheck disable=SC1090
  source "$ENV_FILE"
fi
TASKS_DIR=${TASKS_DIR:-}
MERGE_OUT=${MERGE_OUT:-}
METHOD=${METHOD:-robustmerge}
PRESET=${PRESET:-}
DEVICE=${DEVICE:-auto}
TASKS=${TASKS:-}
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tasks-dir) TASKS_DIR=$2; shift 2 ;;
    --tasks) TASKS=$2; shift 2 ;;
    --out) MERGE_OUT=$2; shift 2 ;;
    --method) METHOD=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "merge_lora.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z "$TASKS_DIR" || -z "$MERGE_OUT" ]]; then
  echo "merge_lora.sh: give --tasks-dir DIR and --out DIR (or TASKS_DIR / MERGE_OUT)" >&2
  exit 2
fi
if [[ ! -d "$TASKS_DIR" ]]; then
  echo "merge_lora.sh: $TASKS_DIR: no such folder" >&2
  exit 2
fi

ADAPTERS=()
if [[ -n "$TASKS" ]]; then
  for t in $TASKS; do ADAPTERS+=("$TASKS_DIR/$t"); done
else
  while IFS= read -r cfg; do ADAPTERS+=("$(dirname "$cfg")"); done \
    < <(find "$TASKS_DIR" -mindepth 2 -maxdepth 2 -name adapter_config.json | LC_ALL=C sort)
fi
if [[ ${#ADAPTERS[@]} -lt 2 ]]; then
  echo "merge_lora.sh: found ${#ADAPTERS[@]} adapter folder(s) under $TASKS_DIR; need at least two" >&2
  exit 2
fi

ARGS=(merge --method "$METHOD" --adapters "${ADAPTERS[@]}" --out "$MERGE_OUT" --device "$DEVICE")
if [[ -n "$PRESET" ]]; then ARGS+=(--preset "$PRESET"); fi
exec python -m robustmerge "${ARGS[@]}" "${EXTRA[@]}"
