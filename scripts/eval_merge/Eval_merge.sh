#!/usr/bin/env bash
# One model (a merged adapter on MODEL_BASE, a full model, or MODEL_BASE alone = zero-shot) on
# all twelve MM-MergeBench tasks, loaded once; results in $RESULTS/$RUN_NAME/<task>/.
#   scripts/eval_merge/Eval_merge.sh --model-path MERGED --model-base BASE --data-root DATA [--run-name NAME]
# Add POPE / MME / MMBench with --tasks all. Settings: flags or the env file (common.sh, env.example).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main mergebench "$(basename "$0")" "$@"
